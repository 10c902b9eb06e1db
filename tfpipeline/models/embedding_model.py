"""Bi-encoder for the ``embedding`` task: texts -> L2-normalised vectors, trained with in-batch negatives.

``EmbeddingModel`` wraps a transformers TF BERT encoder the way
sentence-transformers uses all-MiniLM-L6-v2: mean pooling of the last hidden
states over the attention mask, then L2 normalisation, so the dot product of
two outputs is their cosine similarity. Its ``call`` gives embeddings
(prediction, export); its ``train_step`` / ``test_step`` take batches of
``{"query": features, "positive": features[, "negative": features]}`` and
score every query against every positive (and hard negative) of the batch:
the multiple-negatives ranking loss (Henderson et al. 2017; sentence-transformers'
``MultipleNegativesRankingLoss``) is the compiled cross-entropy over those
scores, with the matching positive as the class (``labels = range(batch)``),
and ``accuracy`` is how often it ranks first in the batch.

A model folder holds the plain encoder as an HF checkpoint (``TFBertModel``),
so it reloads into sentence-transformers too; the ``embedding`` model kind
reads it back.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import tensorflow as tf
import tf_keras
from transformers import AutoConfig, TFAutoModel

from tfpipeline.config import EMBEDDING
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import FEATURES
from tfpipeline.models.checkpoint import load_hf_model, resolve_checkpoint
from tfpipeline.models.kinds import ModelKind, register_model_kind

EMBEDDING_KIND = "embedding"
SIMILARITY_LABELS = ("similarity",)   # labels.json of an embedding model: its one output, the cosine similarity
SCORE_SCALE = 20.0                    # cosine -> logit scale of the ranking loss (sentence-transformers' default)
MASKED = -1e4                         # the logit of a masked candidate (a duplicate of the right answer)


class EmbeddingModel(tf_keras.Model):
    """``{input_ids, attention_mask, token_type_ids} -> [B, hidden]`` unit vectors (mean pooled)."""

    def __init__(self, backbone, scale: float = SCORE_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.scale = float(scale)

    def call(self, inputs, training=False):
        features = {k: inputs[k] for k in FEATURES if k in inputs}
        hidden = self.backbone(features, training=training).last_hidden_state
        mask = tf.cast(features["attention_mask"], hidden.dtype)[:, :, tf.newaxis]
        pooled = tf.reduce_sum(hidden * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
        return tf.math.l2_normalize(tf.cast(pooled, tf.float32), axis=-1)

    def pair_scores(self, pairs, training=False) -> tf.Tensor:
        """Scaled cosine of every query with every positive (then every hard negative) of the batch.

        Another pair's copy of the same answer (same ``group_id``) is not a negative: its score is masked
        out, as sentence-transformers avoids by never batching duplicates.
        """
        queries = self(pairs["query"], training=training)
        positives = self.scale * tf.matmul(queries, self(pairs["positive"], training=training), transpose_b=True)
        if "group_id" in pairs:
            groups = pairs["group_id"]
            same = tf.equal(groups[:, tf.newaxis], groups[tf.newaxis, :])
            other = tf.logical_not(tf.eye(tf.shape(groups)[0], dtype=tf.bool))
            positives = tf.where(tf.logical_and(same, other), tf.constant(MASKED, positives.dtype), positives)
        if "negative" not in pairs:
            return positives
        negatives = self.scale * tf.matmul(queries, self(pairs["negative"], training=training), transpose_b=True)
        return tf.concat([positives, negatives], axis=1)

    def train_step(self, data):
        pairs, labels = data
        with tf.GradientTape() as tape:
            scores = self.pair_scores(pairs, training=True)
            loss = self.compiled_loss(labels, scores, regularization_losses=self.losses)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self._update_metrics(labels, scores)

    def test_step(self, data):
        pairs, labels = data
        scores = self.pair_scores(pairs, training=False)
        self.compiled_loss(labels, scores, regularization_losses=self.losses)
        return self._update_metrics(labels, scores)

    def _update_metrics(self, labels, scores):
        self.compiled_metrics.update_state(labels, scores)
        return {m.name: m.result() for m in self.metrics}

    def build_with_dummy(self, length: int = 8) -> "EmbeddingModel":
        self({k: tf.ones([1, length], tf.int32) for k in FEATURES}, training=False)
        return self


def build_embedding_model(checkpoint: Optional[str], *, dropout: Optional[float] = None,
                          pretrained: bool = True) -> EmbeddingModel:
    """The checkpoint's encoder (no head) as an ``EmbeddingModel``; BERT's pooler is frozen (mean pooling
    does not use it, so it would get no gradient)."""
    path = resolve_checkpoint(checkpoint)
    overrides = {} if dropout is None else {"hidden_dropout_prob": float(dropout)}
    config = AutoConfig.from_pretrained(path, **overrides)
    backbone, _ = load_hf_model(TFAutoModel, path, config=config, pretrained=pretrained)
    pooler = getattr(getattr(backbone, backbone.base_model_prefix, None), "pooler", None)
    if pooler is not None:
        pooler.trainable = False
    return EmbeddingModel(backbone).build_with_dummy()


def similarity_labels() -> LabelMap:
    return LabelMap(list(SIMILARITY_LABELS))


def _load_embedding_kind(directory: str, meta: Mapping[str, Any], labels: LabelMap) -> EmbeddingModel:
    return build_embedding_model(directory)


register_model_kind(ModelKind(EMBEDDING_KIND, _load_embedding_kind), default_for=(EMBEDDING,))
