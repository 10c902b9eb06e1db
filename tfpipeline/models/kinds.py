"""Model kinds: how each kind of model folder is written and read back (a registry).

A model folder is an HF checkpoint (``config.json`` + ``tf_model.h5``) plus
``vocab.txt``, ``labels.json`` and ``tfpipeline.json``. Its ``"head"`` entry
names the kind; folders without one are fine-tuned task models (``task``).
Each kind registers a loader (and, if it keeps more than the checkpoint, a
writer for its extra files), so ``ModelBundle.load`` has no if-chain and a new
kind is one ``register_model_kind`` call in its own module:

* ``task``          -- ``TaskModel`` (transformers task head), optionally with
                       unmerged PEFT adapters (``peft_weights.npz``);
* ``label_vectors`` -- zero/few-shot similarity classifier (``models.zeroshot``);
* ``cloze``         -- masked-LM prompt classifier (``models.cloze``);
* ``image``         -- image classifier (``models.image_model``), the kind of
                       every ``image_classification`` folder;
* ``embedding``     -- bi-encoder (``models.embedding_model``), every ``embedding`` folder.

Each kind also writes its own checkpoint (``write_checkpoint``): an HF
``save_pretrained`` for the BERT kinds, the image classifier's own format for
images. PEFT wrappers are taken out first (``detached``), so the checkpoint is
always the plain architecture.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Tuple


from tfpipeline.data.labels import LabelMap
from tfpipeline.errors import CheckpointError
from tfpipeline.models.peft import (apply_peft, applied_method, detached, load_peft_weights,
                                   options_from_metadata, save_peft_weights)
from tfpipeline.models.task_model import build_task_model

TASK_KIND = "task"


def _no_extra_files(model, directory: str) -> None:
    """Kinds whose whole state is the HF checkpoint write nothing more."""


def save_hf_checkpoint(model, directory: str) -> None:
    """The transformers model inside, as a plain HF checkpoint (``config.json`` + ``tf_model.h5``)."""
    with detached(model):
        model.backbone.save_pretrained(directory)


@dataclass(frozen=True)
class ModelKind:
    """``load(folder, metadata, labels) -> Keras model``; ``write_checkpoint`` / ``write_extra(model, folder)``
    write the weights and the kind's other files."""

    name: str
    load: Callable[[str, Mapping[str, Any], LabelMap], Any]
    write_extra: Callable[[Any, str], None] = _no_extra_files
    write_checkpoint: Callable[[Any, str], None] = save_hf_checkpoint


MODEL_KINDS: Dict[str, ModelKind] = {}
KIND_OF_TASK: Dict[str, str] = {}   # the kind a folder of this task is when its metadata names none


def register_model_kind(kind: ModelKind, *, default_for: Tuple[str, ...] = ()) -> ModelKind:
    """Declare a kind; ``default_for``: the tasks whose folders are this kind unless they name another."""
    MODEL_KINDS[kind.name] = kind
    for task in default_for:
        KIND_OF_TASK[task] = kind.name
    return kind


def model_kind(name: str) -> ModelKind:
    if name not in MODEL_KINDS:
        known = ", ".join(sorted(MODEL_KINDS))
        raise CheckpointError(f"unknown model kind {name!r} in tfpipeline.json (known: {known}); was the folder "
                              "written by a newer tfpipeline?")
    return MODEL_KINDS[name]


def kind_of(meta: Mapping[str, Any]) -> str:
    """The kind a folder's metadata names (``head``), else the one its task implies."""
    return meta.get("head") or KIND_OF_TASK.get(meta.get("task"), TASK_KIND)


def _load_task_model(directory: str, meta: Mapping[str, Any], labels: LabelMap):
    model = build_task_model(directory, meta["task"], labels)
    peft = meta.get("peft")
    if peft and not peft.get("merged"):
        # Adapters cannot be folded into the dense weights: re-insert them and load their weights.
        apply_peft(model, options_from_metadata(peft))
        load_peft_weights(model, directory)
        model.backbone.trainable = True
    return model


def _write_peft_weights(model, directory: str) -> None:
    if applied_method(model):     # unmerged adapters live beside the plain checkpoint
        save_peft_weights(model, directory)


register_model_kind(ModelKind(TASK_KIND, _load_task_model, _write_peft_weights))
