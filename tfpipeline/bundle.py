"""``ModelBundle``: a trained model and everything needed to use it, as one object.

KerasHub's idea of a task (backbone + preprocessor + head) applied to this
project: the Keras model (backbone + head), the encoder (``TextEncoder``:
the tokenizer; ``ImageEncoder``: decode + resize + normalise; either is
traced into exports), the ``LabelMap`` and the folder metadata travel
together. Every producer (``train``, ``distill``, ``continual``, zero/few-shot,
cloze, ``compress``) returns one; every consumer (evaluation, prediction,
export, serving, benchmarks, examples) takes one.

A bundle on disk is a *model folder*: a regular Hugging Face checkpoint
(``config.json``, ``tf_model.h5``) plus ``vocab.txt``/``tokenizer_config.json``
(images: ``preprocessor_config.json``), ``labels.json`` and ``tfpipeline.json``;
kinds other than plain task models add their own files (see
``tfpipeline.models.kinds``; a MobileNetV2 folder holds ``image_model.json`` +
``tf_model.h5`` instead of an HF checkpoint). Folders written by
earlier versions load unchanged.

Layering: the bundle sits above ``inference`` and ``export`` (its
``predictor()`` and ``export()`` build on them) and below evaluation and
training, which take and return bundles.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Union

import tf_keras

from tfpipeline.config import EMBEDDING, IMAGE_CLASSIFICATION, PeftOptions
from tfpipeline.config.commands import OPTIMIZE_AUTO
from tfpipeline.data.images import ImageEncoder
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import TargetScaling
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import CheckpointError
from tfpipeline.export.saved_model import export_model
from tfpipeline.export.signatures import DocumentIndex
from tfpipeline.inference import EmbeddingPredictor, ImagePredictor, Predictor
from tfpipeline.models import kinds
from tfpipeline.models.losses import loss_and_metrics
from tfpipeline.models.optimization import create_optimizer
from tfpipeline.models.peft import options_from_metadata
from tfpipeline.models.task_model import count_params
from tfpipeline.staging import staged_output

META_FILE = "tfpipeline.json"
Encoder = Union[TextEncoder, ImageEncoder]


def read_metadata(directory: str) -> Dict[str, Any]:
    """A model folder's ``tfpipeline.json`` (without loading the model)."""
    path = os.path.join(directory, META_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{directory}: not a tfpipeline model folder (no {META_FILE})")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{path}: unreadable metadata ({e})") from None
    if "task" not in meta:
        raise CheckpointError(f"{path}: metadata lacks the task")
    return meta


@dataclass
class ModelBundle:
    """Model + encoder + labels + task + metadata; see the module docstring.

    ``meta`` is what ``tfpipeline.json`` records besides task and max length:
    the kind (``head``; absent for task models), provenance (``source_checkpoint``,
    ``dataset``, ``config``), PEFT state (``peft``) and kind-specific settings.
    """

    model: tf_keras.Model
    encoder: Encoder          # TextEncoder (text tasks) or ImageEncoder (image_classification)
    labels: LabelMap
    task: str
    meta: Dict[str, Any] = field(default_factory=dict)
    directory: str = ""   # the model folder it was loaded from or last saved to (recorded in exports)

    # ------------------------------------------------------------------ parts
    @property
    def kind(self) -> str:
        """``task`` (a fine-tuned head), ``label_vectors``, ``cloze`` or ``image`` (see ``models.kinds``)."""
        return kinds.kind_of({"task": self.task, **self.meta})

    @property
    def backbone(self):
        """The transformers model inside (encoder + head)."""
        return self.model.backbone

    @property
    def peft(self) -> Optional[PeftOptions]:
        """The PEFT options the model was trained with (None for full fine-tuning)."""
        return options_from_metadata(self.meta["peft"]) if self.meta.get("peft") else None

    def params(self) -> Dict[str, int]:
        return count_params(self.model)

    # ------------------------------------------------------------------ disk
    def save(self, directory: str, *, overwrite: bool = False) -> str:
        """Write the model folder; it appears only when complete (staged, then renamed)."""
        with staged_output(directory, overwrite=overwrite) as staging:
            self.write(staging)
        self.directory = directory
        return directory

    def write(self, directory: str) -> str:
        """Write the model folder's files into ``directory`` (e.g. a producer's staging folder)."""
        os.makedirs(directory, exist_ok=True)
        kind = kinds.model_kind(self.kind)
        kind.write_checkpoint(self.model, directory)
        kind.write_extra(self.model, directory)
        self.encoder.save(directory)
        self.labels.save(directory)
        info = {"task": self.task, **self.encoder.metadata(), **self.meta}
        with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, default=str)
        return directory

    @classmethod
    def load(cls, directory: str, *, max_length: Optional[int] = None) -> "ModelBundle":
        """Read a model folder (any kind, any tfpipeline version) back into a bundle."""
        meta = read_metadata(directory)
        labels = LabelMap.load(directory)
        if meta["task"] == IMAGE_CLASSIFICATION:
            encoder = ImageEncoder.from_directory(directory, image_size=meta.get("image_size"))
        else:
            encoder = TextEncoder.from_directory(directory, max_length=max_length or meta.get("max_length"))
        model = kinds.model_kind(kinds.kind_of(meta)).load(directory, meta, labels)
        extra = {k: v for k, v in meta.items() if k not in ("task", *encoder.metadata())}
        return cls(model, encoder, labels, meta["task"], extra, directory=directory)

    # ------------------------------------------------------------------ training defaults
    def compile(self, *, learning_rate: float, total_steps: int, warmup_ratio: float = 0.1,
                weight_decay: float = 0.01, clip_norm: Optional[float] = 1.0,
                steps_per_execution: int = 1, anneal_steps: Optional[int] = None) -> "ModelBundle":
        """Compile with the task's loss/metric and AdamW on a warmup + linear decay schedule.

        ``total_steps`` must be the number of optimizer steps the run will take
        (``data.pipeline.batches_per_epoch`` x epochs), so the learning rate
        reaches 0 exactly at the end. With ``anneal_steps`` (``epochs: auto``)
        a callback may cut the schedule short, to 0 over that many steps
        (``models.optimization.AnnealableWarmupLinearDecay``). Call inside
        ``strategy.scope()``.
        """
        loss, metrics = loss_and_metrics(self.task)
        optimizer = create_optimizer(learning_rate, total_steps, warmup_ratio=warmup_ratio,
                                     weight_decay=weight_decay, clip_norm=clip_norm, anneal_steps=anneal_steps)
        self.model.compile(optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=steps_per_execution)
        return self

    # ------------------------------------------------------------------ use
    def predictor(self, batch_size: int = 64) -> Union[Predictor, ImagePredictor, EmbeddingPredictor]:
        """Batched prediction on raw text (classification, NER; embedding: vectors) or images (paths, bytes)."""
        if self.task == IMAGE_CLASSIFICATION:
            return ImagePredictor(self.model, self.encoder, self.labels, batch_size)
        if self.task == EMBEDDING:
            return EmbeddingPredictor(self.model, self.encoder, self.labels, batch_size)
        return Predictor(self.model, self.encoder, self.labels, self.task, batch_size, self.target_scaling)

    @property
    def target_scaling(self) -> Optional[TargetScaling]:
        """``regression``: the training targets' mean/std the model's outputs are scaled by (in ``meta``)."""
        scaling = self.meta.get("target_scaling")
        return TargetScaling.from_dict(scaling) if scaling else None

    def export(self, base_dir: str, model_name: str, *, version: Optional[int] = None,
               warmup_texts: Optional[Sequence[str]] = None, index: Optional[DocumentIndex] = None,
               optimize: str = OPTIMIZE_AUTO) -> str:
        """A versioned SavedModel for TF Serving at ``<base_dir>/<model_name>/<version>/``
        (``index``: the documents an embedding model's ``search`` signature ranks; see ``document_index``;
        ``optimize``: ``auto``, ``none``, ``compact``, ``compact+xla`` or ``compact+bf16``, see
        ``export.compact_encoder``, or ``compact+tflite``, see ``export.tflite_text``)."""
        return export_model(self.model, self.encoder, self.labels, self.task, base_dir, model_name,
                            version=version, warmup_texts=warmup_texts, source_dir=self.directory, index=index,
                            target_scaling=self.target_scaling, optimize=optimize)

    def document_index(self, texts: Sequence[str], ids: Optional[Sequence[str]] = None, *,
                       top_k: int = 10) -> DocumentIndex:
        """Embed ``texts`` (an embedding model) into the index an export's ``search`` signature ranks;
        ``ids`` default to the texts' positions."""
        if self.task != EMBEDDING:
            raise CheckpointError(f"{self.directory or 'this model'}: a document index needs an {EMBEDDING} "
                                  f"model, not {self.task}")
        ids = [str(i) for i in (ids if ids is not None else range(len(texts)))]
        return DocumentIndex(ids, list(texts), self.predictor().embed(list(texts)), top_k)
