"""Versioned SavedModel export in the layout TF Serving watches: ``<base>/<name>/<version>/``.

A version is written into a hidden temp folder next to its final place and
renamed when complete, so a model server polling the base folder never sees
a half-written version; an existing version is never overwritten.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Dict, Optional, Sequence, Union

import tensorflow as tf
import tensorflow_text
from tensorflow.core.protobuf import saved_model_pb2

try:  # private API, used only to refresh the fingerprint after editing saved_model.pb
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting
except ImportError:  # pragma: no cover - a stale fingerprint only affects metrics, not loading
    fingerprinting = None

import tfpipeline

from tfpipeline.config.commands import OPTIMIZE_AUTO, OPTIMIZE_COMPACT_TFLITE, OPTIMIZE_COMPACT_XLA, OPTIMIZE_NONE
from tfpipeline.errors import ExportError
from tfpipeline.data.images import ImageEncoder
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import TargetScaling
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.export.compact_encoder import applied_optimization, inference_model
from tfpipeline.export.signatures import DocumentIndex, serving_module
from tfpipeline.export.tflite_text import (TFLITE_SERVING_FLAGS, TFLITE_SIGNATURES, TFLITE_TEXT_FILE,
                                           convert_text_model)
from tfpipeline.export.warmup import DEFAULT_WARMUP_TEXTS, WARMUP_FILE, write_warmup_requests
from tfpipeline.staging import staged_output

ASSETS_EXTRA = "assets.extra"
METADATA_FILE = "tfpipeline.json"
XLA_SERVING_FLAGS = ["--xla_cpu_compilation_enabled"]   # what TF Serving needs to run a compact+xla export
SAVED_MODEL_FILE = "saved_model.pb"


def export_model(model, encoder: Union[TextEncoder, ImageEncoder], labels: LabelMap, task: str, base_dir: str,
                 model_name: str, *, version: Optional[int] = None, warmup_texts: Optional[Sequence[str]] = None,
                 source_dir: str = "", index: Optional[DocumentIndex] = None,
                 target_scaling: Optional[TargetScaling] = None, optimize: str = OPTIMIZE_AUTO) -> str:
    """Export a trained Keras model to ``<base_dir>/<model_name>/<version>/`` and return that path.

    Usually called as ``ModelBundle.export(base_dir, model_name)``. ``version``
    defaults to the highest existing version + 1 (1 for a new model); an
    existing version is never overwritten. ``source_dir`` (the model folder, if
    any) is recorded in the export metadata. ``index``: documents an ``embedding``
    model's ``search`` signature ranks (a new document set = a new version). ``optimize``: the
    serving graph, ``auto`` (compact where the model has one, else none), ``none`` (the Keras model),
    ``compact``, ``compact+xla`` or ``compact+bf16`` (``export.compact_encoder``: same logits -- within
    bfloat16 rounding for ``compact+bf16`` -- fewer ops; ``ExportError``
    before anything is written if the model has no compact graph), or ``compact+tflite`` (``compact`` plus
    ``model.tflite`` in the version folder, ``export.tflite_text``; converted and checked before anything
    is written).
    """
    if not model_name or "/" in model_name or os.sep in model_name or model_name.startswith("."):
        raise ExportError(f"invalid model name {model_name!r} (a folder name, not a path)")
    model_root = os.path.join(base_dir, model_name)
    version = _choose_version(model_root, version)
    serving_model = inference_model(model, task, optimize)     # fails here, before any folder exists
    tflite = (convert_text_model(serving_model, encoder, labels, task, DEFAULT_WARMUP_TEXTS)
              if optimize == OPTIMIZE_COMPACT_TFLITE else None)
    final = os.path.join(model_root, str(version))
    # hidden staging folder: a model server polling model_root never sees a half-written version
    with staged_output(final, hidden=True, error=ExportError) as staging:
        _write_saved_model(staging, serving_model, encoder, labels, task, warmup_texts, model_name, version,
                           source_dir, dict(index=index, target_scaling=target_scaling),
                           applied_optimization(serving_model), tflite)
    return final


def existing_versions(model_root: str) -> list:
    """Integer version folders under ``<base>/<name>`` (what TF Serving would consider)."""
    if not os.path.isdir(model_root):
        return []
    return sorted(int(d) for d in os.listdir(model_root)
                  if d.isdigit() and os.path.isdir(os.path.join(model_root, d)))


def _choose_version(model_root: str, version: Optional[int]) -> int:
    versions = existing_versions(model_root)
    if version is None:
        return (versions[-1] + 1) if versions else 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be a positive integer, got {version!r}")
    if version in versions:
        raise ExportError(f"{os.path.join(model_root, str(version))}: version {version} already exists; "
                          f"versions are never overwritten (existing: {versions})")
    return version


def _write_saved_model(path: str, model, encoder: Union[TextEncoder, ImageEncoder], labels: LabelMap, task: str,
                       warmup_texts, model_name: str, version: int, source_dir: str,
                       options: Dict[str, object], optimize: str = OPTIMIZE_NONE,
                       tflite: Optional[bytes] = None) -> None:
    with tempfile.TemporaryDirectory() as assets:
        encoder.save(assets)
        labels.save(assets)
        module = serving_module(model, encoder, labels, task, asset_dir=assets, **options)
        tf.saved_model.save(module, path, signatures=module.signatures(),
                            options=tf.saved_model.SaveOptions(save_debug_info=False))
    if module.method_names():
        set_method_names(path, module.method_names())
    extra = os.path.join(path, ASSETS_EXTRA)
    os.makedirs(extra, exist_ok=True)
    signatures = module.signatures()
    text_signatures = [name for name in ("serving_default", "search") if name in signatures]
    regress_signatures = [name for name, method in module.method_names().items()
                          if method == tf.saved_model.REGRESS_METHOD_NAME]
    write_warmup_requests(os.path.join(extra, WARMUP_FILE), model_name, task, encoder,
                          list(warmup_texts or DEFAULT_WARMUP_TEXTS), text_signatures=text_signatures,
                          regress_signatures=regress_signatures)
    meta = export_metadata(path, task, labels, encoder, model_name, version, source_dir)
    meta["optimize"] = optimize
    if optimize == OPTIMIZE_COMPACT_XLA:
        meta["tf_serving_flags"] = XLA_SERVING_FLAGS
    if tflite is not None:
        with open(os.path.join(path, TFLITE_TEXT_FILE), "wb") as f:
            f.write(tflite)
        meta["optimize"] = OPTIMIZE_COMPACT_TFLITE
        meta["tflite"] = {"file": TFLITE_TEXT_FILE, "signatures": list(TFLITE_SIGNATURES),
                          "tf_serving_flags": TFLITE_SERVING_FLAGS}
    index = options.get("index")
    if index is not None:
        meta["index"] = {"documents": len(index.ids), "top_k": min(index.top_k, len(index.ids))}
    with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)


def read_saved_model_proto(path: str):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def set_method_names(path: str, methods: Dict[str, str]) -> None:
    """Rewrite signature method names in saved_model.pb (``tf.saved_model.save`` writes predict for all).

    TF Serving routes the Classify API only to signatures whose method name is
    ``tensorflow/serving/classify``. The fingerprint is recomputed afterwards.
    """
    proto = read_saved_model_proto(path)
    for meta_graph in proto.meta_graphs:
        for key, method in methods.items():
            meta_graph.signature_def[key].method_name = method
    with open(os.path.join(path, SAVED_MODEL_FILE), "wb") as f:
        f.write(proto.SerializeToString())
    _refresh_fingerprint(path)


def _refresh_fingerprint(path: str) -> None:
    fingerprint = os.path.join(path, "fingerprint.pb")
    if fingerprinting is None or not os.path.exists(fingerprint):
        return
    try:
        data = fingerprinting.CreateFingerprintDef(path)
    except Exception:   # private API; a stale fingerprint only affects metrics, not loading
        return
    with open(fingerprint, "wb") as f:
        f.write(data)


def signature_table(path: str) -> Dict[str, dict]:
    """{signature: {method, inputs: {name: (dtype, shape)}, outputs: {...}}} read from saved_model.pb."""
    def tensors(mapping):
        return {name: {"dtype": tf.dtypes.as_dtype(info.dtype).name,
                       "shape": [-1 if d.size < 0 else d.size for d in info.tensor_shape.dim]}
                for name, info in sorted(mapping.items())}

    proto = read_saved_model_proto(path)
    return {key: {"method": sig.method_name, "inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)}
            for key, sig in sorted(proto.meta_graphs[0].signature_def.items())
            if not key.startswith("__")}


def export_metadata(path: str, task: str, labels: LabelMap, encoder: Union[TextEncoder, ImageEncoder],
                    model_name: str, version: int, source_dir: str) -> dict:
    preprocessing = dict(encoder.metadata())
    if isinstance(encoder, TextEncoder):
        preprocessing["lower_case"] = encoder.lower_case
    return {"task": task, "labels": labels.names, **preprocessing, "model_name": model_name, "version": version,
            "source_model_dir": os.path.abspath(source_dir) if source_dir else None,
            "signatures": signature_table(path),
            "tfpipeline_version": tfpipeline.__version__, "tensorflow_version": tf.__version__,
            "tensorflow_text_version": tensorflow_text.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def encoder_from_export(path: str) -> TextEncoder:
    """The export's tokenizer as a ``TextEncoder`` (from assets/), e.g. to feed ``predict_ids``."""
    return TextEncoder.from_directory(os.path.join(path, "assets"), max_length=read_export_metadata(path)["max_length"])


def read_export_metadata(path: str) -> dict:
    """The ``assets.extra/tfpipeline.json`` written with an export version."""
    with open(os.path.join(path, ASSETS_EXTRA, METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)
