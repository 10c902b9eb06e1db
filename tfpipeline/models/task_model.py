"""Keras task models (sequence classification, token classification) on HF TF BERT backbones.

``TaskModel`` wraps a transformers TF model so that Keras sees a plain
``features -> float32 logits`` model: standard losses, metrics, callbacks,
``fit`` and distribution strategies work unchanged.

A trained model folder is itself a valid HF checkpoint (config.json,
tf_model.h5, vocab.txt) plus ``labels.json`` and ``tfpipeline.json``, so it
can be reloaded, evaluated, exported or used as the start of further training.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional, Tuple

from tfpipeline import _env  # noqa: F401

import tensorflow as tf
import tf_keras

from tfpipeline.data.examples import CLASSIFICATION, NER
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import FEATURES, TextEncoder, read_vocab
from tfpipeline.models.checkpoint import (CheckpointError, load_safetensors_into, resolve_checkpoint,
                                          weights_file)

META_FILE = "tfpipeline.json"
log = logging.getLogger(__name__)


class TaskModel(tf_keras.Model):
    """``{input_ids, attention_mask, token_type_ids} -> logits`` around a transformers TF model.

    Extra keys in the input dict are ignored, so datasets may carry bookkeeping features.
    """

    def __init__(self, backbone, task: str, **kwargs):
        super().__init__(**kwargs)
        if task not in (CLASSIFICATION, NER):
            raise ValueError(f"unknown task {task!r}")
        self.backbone = backbone
        self.task = task

    def call(self, inputs, training=False):
        features = {k: inputs[k] for k in FEATURES if k in inputs}
        logits = self.backbone(features, training=training).logits
        return tf.cast(logits, tf.float32)  # keep loss/softmax in float32 under mixed precision

    def build_with_dummy(self, length: int = 8):
        dummy = {k: tf.ones([1, length], tf.int32) for k in FEATURES}
        self(dummy, training=False)
        return self


def _model_class(task: str):
    from transformers import TFAutoModelForSequenceClassification, TFAutoModelForTokenClassification

    return TFAutoModelForSequenceClassification if task == CLASSIFICATION else TFAutoModelForTokenClassification


def build_task_model(checkpoint: Optional[str], task: str, labels: LabelMap, *,
                     dropout: Optional[float] = None, pretrained: bool = True) -> TaskModel:
    """Task model from a local checkpoint (alias ``minilm`` = the packaged default).

    ``pretrained=False`` keeps the checkpoint's architecture but random weights.
    A head of a different size than ``labels`` (e.g. a model fine-tuned on
    another task) is re-initialised; the backbone is always loaded.
    """
    from transformers import AutoConfig

    path = resolve_checkpoint(checkpoint)
    overrides = {"num_labels": len(labels), "id2label": dict(enumerate(labels.names)),
                 "label2id": {n: i for i, n in enumerate(labels.names)}}
    if dropout is not None:
        overrides["hidden_dropout_prob"] = float(dropout)
    config = AutoConfig.from_pretrained(path, **overrides)
    cls = _model_class(task)
    kind, wfile = weights_file(path) if pretrained else ("none", "")
    if kind == "tf":
        backbone = cls.from_pretrained(path, config=config, ignore_mismatched_sizes=True)
    else:
        backbone = cls.from_config(config)
        backbone(backbone.dummy_inputs, training=False)
        if kind == "safetensors":
            load_safetensors_into(backbone, wfile)
    return TaskModel(backbone, task).build_with_dummy()


def save_task_model(model: TaskModel, encoder: TextEncoder, labels: LabelMap, directory: str,
                    **meta) -> str:
    """Write a reloadable model folder: HF checkpoint + tokenizer + label map + metadata."""
    from tfpipeline.models.peft import detached

    os.makedirs(directory, exist_ok=True)
    with detached(model):  # adapters are saved separately (peft_weights.npz)
        model.backbone.save_pretrained(directory)
    encoder.save(directory)
    labels.save(directory)
    info = {"task": model.task, "max_length": encoder.max_length, **meta}
    with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)
    return directory


def load_task_model(directory: str, *, max_length: Optional[int] = None) -> Tuple[TaskModel, TextEncoder,
                                                                                   LabelMap, dict]:
    """Load what ``save_task_model`` wrote: (model, encoder, labels, metadata)."""
    meta_path = os.path.join(directory, META_FILE)
    if not os.path.isfile(meta_path):
        raise CheckpointError(f"{directory}: not a tfpipeline model folder (no {META_FILE})")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    labels = LabelMap.load(directory)
    encoder = TextEncoder.from_directory(directory, max_length=max_length or meta.get("max_length"))
    if meta.get("head") == "label_vectors":   # a saved zero/few-shot classifier (tfpipeline.models.zeroshot)
        from tfpipeline.models.zeroshot import load_label_vector_classifier

        return load_label_vector_classifier(directory, meta), encoder, labels, meta
    if meta.get("head") == "cloze":   # a saved masked-LM prompt classifier (tfpipeline.models.cloze)
        from tfpipeline.models.cloze import load_cloze_classifier

        return load_cloze_classifier(directory, meta), encoder, labels, meta
    model = build_task_model(directory, meta["task"], labels)
    peft = meta.get("peft")
    if peft and not peft.get("merged"):
        # Adapters cannot be folded into the dense weights: re-insert them and load their weights.
        from tfpipeline.models.peft import PeftConfig, apply_peft, load_peft_weights

        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in peft.items() if k != "merged"}
        apply_peft(model, PeftConfig(**fields))
        load_peft_weights(model, directory)
        model.backbone.trainable = True
    return model, encoder, labels, meta


def save_random_checkpoint(directory: str, *, vocab_file: Optional[str] = None, hidden_size: int = 32,
                           num_layers: int = 2, num_heads: int = 2, intermediate_size: int = 64,
                           max_position: int = 512, seed: int = 0) -> str:
    """A tiny randomly initialised BERT checkpoint folder (for tests, demos and smoke runs).

    Uses the default checkpoint's vocabulary unless ``vocab_file`` is given.
    """
    from transformers import BertConfig, TFBertModel

    from tfpipeline.models.checkpoint import minilm_path

    vocab = read_vocab(vocab_file or os.path.join(minilm_path(), "vocab.txt"))
    tf_keras.utils.set_random_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_position)
    model = TFBertModel(config)
    model(model.dummy_inputs, training=False)
    model.save_pretrained(directory)
    TextEncoder(vocab).save(directory)
    return directory


def count_params(model: tf_keras.Model) -> dict:
    """Trainable / total parameter counts (reported by training and PEFT)."""
    trainable = int(sum(int(tf.size(w)) for w in model.trainable_weights))
    total = trainable + int(sum(int(tf.size(w)) for w in model.non_trainable_weights))
    return {"trainable": trainable, "total": total}

