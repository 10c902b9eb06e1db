"""Keras task models (sequence classification, token classification) on HF TF BERT backbones.

``TaskModel`` wraps a transformers TF model so that Keras sees a plain
``features -> float32 logits`` model: standard losses, metrics, callbacks,
``fit`` and distribution strategies work unchanged.

Which transformers class serves which task is a registry (``TASK_HEADS``):
adding a task type that a transformers ``TFAutoModelFor*`` class covers is one
``register_task_head`` call.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import tensorflow as tf
import tf_keras
from transformers import (AutoConfig, BertConfig, TFAutoModelForSequenceClassification,
                          TFAutoModelForTokenClassification, TFBertModel)

from tfpipeline.data.examples import CLASSIFICATION, NER, REGRESSION
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import FEATURES, TextEncoder, read_vocab
from tfpipeline.errors import ConfigError
from tfpipeline.models.checkpoint import load_hf_model, minilm_path, resolve_checkpoint

TASK_HEADS: Dict[str, type] = {}


def register_task_head(task: str, auto_class: type) -> None:
    """Declare the transformers ``TFAutoModelFor*`` class that implements ``task``."""
    TASK_HEADS[task] = auto_class


register_task_head(CLASSIFICATION, TFAutoModelForSequenceClassification)
register_task_head(NER, TFAutoModelForTokenClassification)
register_task_head(REGRESSION, TFAutoModelForSequenceClassification)   # one output per target, no softmax


def task_head(task: str) -> type:
    if task not in TASK_HEADS:
        raise ConfigError(f"unknown task {task!r} (known: {', '.join(sorted(TASK_HEADS))})")
    return TASK_HEADS[task]


class TaskModel(tf_keras.Model):
    """``{input_ids, attention_mask, token_type_ids} -> logits`` around a transformers TF model.

    Extra keys in the input dict are ignored, so datasets may carry bookkeeping features.
    """

    def __init__(self, backbone, task: str, **kwargs):
        super().__init__(**kwargs)
        task_head(task)
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


def build_task_model(checkpoint: Optional[str], task: str, labels: LabelMap, *,
                     dropout: Optional[float] = None, pretrained: bool = True) -> TaskModel:
    """Task model from a local checkpoint (alias ``minilm`` = the packaged default).

    ``pretrained=False`` keeps the checkpoint's architecture but random weights.
    A head of a different size than ``labels`` (e.g. a model fine-tuned on
    another task) is re-initialised; the backbone is always loaded.
    """
    path = resolve_checkpoint(checkpoint)
    overrides = {"num_labels": len(labels), "id2label": dict(enumerate(labels.names)),
                 "label2id": {n: i for i, n in enumerate(labels.names)}}
    if dropout is not None:
        overrides["hidden_dropout_prob"] = float(dropout)
    config = AutoConfig.from_pretrained(path, **overrides)
    backbone, _ = load_hf_model(task_head(task), path, config=config, pretrained=pretrained)
    return TaskModel(backbone, task).build_with_dummy()


def save_random_checkpoint(directory: str, *, vocab_file: Optional[str] = None, hidden_size: int = 32,
                           num_layers: int = 2, num_heads: int = 2, intermediate_size: int = 64,
                           max_position: int = 512, seed: int = 0) -> str:
    """A tiny randomly initialised BERT checkpoint folder (for tests, demos and smoke runs).

    Uses the default checkpoint's vocabulary unless ``vocab_file`` is given.
    """
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
