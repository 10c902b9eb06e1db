"""Sentence-embedding models behind zero-/few-shot classification by prompt similarity.

all-MiniLM-L6-v2 ships no masked-LM head, so cloze-style prompting ("it was
[MASK]", ``tfpipeline.models.cloze`` for checkpoints that have one) is not
available for it. It *is* trained so that mean-pooled, L2-normalised token
states of related sentences are close (cosine), so a text is classified by its
similarity to prompt-templated label descriptions:

    label vector  = normalise(mean over verbalizer words w of embed(template.format(w)))
    p(label|text) = softmax(cos(embed(text), label vector) / temperature)

This module holds the models only; the classifier workflow (prompts,
prototypes, prompt fine-tuning, saving) is ``tfpipeline.training.prompting``.

* ``SentenceEncoder``: texts -> unit vectors (the checkpoint's encoder, mean-pooled).
* ``LabelVectorClassifier``: encoder + fixed label vectors -> logits, with the
  ``TaskModel`` interface (``backbone``, ``task``), so the classifier
  evaluates, predicts, exports (same SavedModel signatures) and serves like a
  fine-tuned model. Its model folder kind is ``label_vectors``: the encoder as
  an HF checkpoint plus ``label_vectors.npy`` (registered below).
* ``PromptSimilarityModel``: the training-time model of prompt fine-tuning
  (prompts re-embedded by the trained encoder at every step).
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from transformers import TFAutoModel

from tfpipeline.config import DEFAULT_CHECKPOINT
from tfpipeline.data.examples import CLASSIFICATION
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import FEATURES, TextEncoder
from tfpipeline.errors import CheckpointError
from tfpipeline.models.checkpoint import load_hf_model, resolve_checkpoint
from tfpipeline.models.kinds import ModelKind, register_model_kind

LABEL_VECTOR_HEAD = "label_vectors"      # tfpipeline.json "head" of a saved zero/few-shot classifier
LABEL_VECTORS_FILE = "label_vectors.npy"
DEFAULT_TEMPERATURE = 0.05


def mean_pool(hidden: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Masked mean over positions, L2-normalised (the sentence-transformers recipe)."""
    mask = tf.cast(mask, hidden.dtype)[..., None]
    pooled = tf.reduce_sum(hidden * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
    return tf.math.l2_normalize(pooled, axis=-1)


class SentenceEncoder:
    """Sentence embeddings from a BERT checkpoint's encoder (``minilm``, any checkpoint or model folder)."""

    def __init__(self, checkpoint: Optional[str] = DEFAULT_CHECKPOINT, *, max_length: int = 128, batch_size: int = 64):
        path = resolve_checkpoint(checkpoint)
        self.backbone, _ = load_hf_model(TFAutoModel, path)      # a transformers TF*Model (no task head)
        self.main = getattr(self.backbone, self.backbone.base_model_prefix)
        self.encoder = TextEncoder.from_directory(path, max_length=max_length)
        self.batch_size = batch_size
        spec = {k: tf.TensorSpec([None, None], tf.int32) for k in FEATURES}
        self._embed = tf.function(lambda f: self.embed_features(f), input_signature=[spec])

    def embed_features(self, features, training: bool = False) -> tf.Tensor:
        hidden = self.main(features, training=training).last_hidden_state
        return mean_pool(hidden, features["attention_mask"])

    def features(self, texts: Sequence[str]) -> Dict[str, tf.Tensor]:
        return self.encoder.pad(self.encoder.encode(tf.constant(list(texts))))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[N, hidden] unit vectors, in input order (batches grouped by length)."""
        out = np.zeros((len(texts), self.main.config.hidden_size), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._embed(self.features([texts[i] for i in idx])).numpy()
        return out


class LabelVectorClassifier(tf_keras.Model):
    """``features -> cos(mean-pooled text embedding, label vector) / temperature`` logits.

    The zero/few-shot classifier as a plain Keras model with the
    ``TaskModel`` interface (``backbone``, ``task``), so ``Predictor``,
    evaluation, export and the model server use it unchanged.
    """

    def __init__(self, backbone, label_vectors: np.ndarray, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.task = CLASSIFICATION
        self.temperature = float(temperature)
        vectors = np.asarray(label_vectors, np.float32)
        self.label_vectors = self.add_weight(name="label_vectors", shape=vectors.shape, trainable=False,
                                             initializer=tf_keras.initializers.Constant(vectors))

    def call(self, inputs, training=False):
        features = {k: inputs[k] for k in FEATURES if k in inputs}
        main = getattr(self.backbone, self.backbone.base_model_prefix)
        texts = mean_pool(main(features, training=training).last_hidden_state, features["attention_mask"])
        return tf.matmul(texts, tf.cast(self.label_vectors, texts.dtype), transpose_b=True) / self.temperature


def _load_label_vector_classifier(directory: str, meta: Mapping, labels: LabelMap) -> LabelVectorClassifier:
    path = os.path.join(directory, LABEL_VECTORS_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{directory}: zero-shot model folder lacks {LABEL_VECTORS_FILE}")
    vectors = np.load(path)
    if vectors.shape[0] != len(labels):
        raise CheckpointError(f"{path}: {vectors.shape[0]} label vectors for {len(labels)} labels")
    backbone, _ = load_hf_model(TFAutoModel, directory)
    model = LabelVectorClassifier(backbone, vectors, meta.get("temperature", DEFAULT_TEMPERATURE))
    model({k: tf.ones([1, 4], tf.int32) for k in FEATURES}, training=False)
    return model


def _write_label_vectors(model: LabelVectorClassifier, directory: str) -> None:
    np.save(os.path.join(directory, LABEL_VECTORS_FILE), model.label_vectors.numpy().astype(np.float32))


register_model_kind(ModelKind(LABEL_VECTOR_HEAD, _load_label_vector_classifier, _write_label_vectors))


class PromptSimilarityModel(tf_keras.Model):
    """``features -> cos(text, label prompt) / temperature`` logits; trains the encoder end to end."""

    def __init__(self, sentence_encoder: SentenceEncoder, prompt_features: Dict[str, tf.Tensor],
                 prompt_labels: Sequence[int], num_labels: int, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.sentence_encoder = sentence_encoder
        self.main = sentence_encoder.main  # tracked here, so its weights train
        self.prompt_features = {k: tf.constant(v) for k, v in prompt_features.items()}
        self.prompt_labels = tf.constant(list(prompt_labels), tf.int32)
        self.num_labels, self.temperature = int(num_labels), float(temperature)

    def call(self, inputs, training=False):
        features = {k: inputs[k] for k in FEATURES}
        texts = self.sentence_encoder.embed_features(features, training=training)
        prompts = self.sentence_encoder.embed_features(self.prompt_features, training=training)
        labels = tf.math.l2_normalize(
            tf.math.unsorted_segment_mean(prompts, self.prompt_labels, self.num_labels), axis=-1)
        return tf.matmul(texts, labels, transpose_b=True) / self.temperature
