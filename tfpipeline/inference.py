"""Batch inference on raw text or images with a trained model (used by evaluate, predict and tests).

Texts are sorted by length before batching (and results put back in input
order) so each batch is padded only to its own longest text. Decoding (word
scores, offsets, entity spans) is ``tfpipeline.decoding``, shared with the
export. Images (``ImagePredictor``) go through the same ``ImageEncoder.encode``
as evaluation batches and the serving graph. Get either from a model folder
with ``ModelBundle.load(dir).predictor()``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION
from tfpipeline.data.images import PIXELS, ImageEncoder
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import TargetScaling
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.decoding import byte_to_char_offsets, merge_entities, word_scores
from tfpipeline.errors import DataError, op_error_text


def class_results(probabilities: np.ndarray, labels: LabelMap) -> List[Dict]:
    """Per row of [N, C] probabilities: the top label, its score and every label's score (text and image models)."""
    return [{"label": labels.name(int(p.argmax())), "score": float(p.max()),
             "scores": {n: float(s) for n, s in zip(labels.names, p)}} for p in probabilities]


class Predictor:
    """Wraps (model, encoder, labels) for batched prediction on raw strings or token lists."""

    def __init__(self, model, encoder: TextEncoder, labels: LabelMap, task: str, batch_size: int = 64,
                 target_scaling: Optional[TargetScaling] = None):
        self.model, self.encoder, self.labels, self.task = model, encoder, labels, task
        self.batch_size = batch_size
        self.target_scaling = target_scaling   # regression: model outputs -> target units
        spec = {k: tf.TensorSpec([None, None], tf.int32) for k in ("input_ids", "attention_mask",
                                                                   "token_type_ids")}
        self._logits = tf.function(lambda f: model(f, training=False), input_signature=[spec])

    def _batches(self, n: int, lengths: Sequence[int]):
        order = np.argsort(np.asarray(lengths), kind="stable")
        for start in range(0, n, self.batch_size):
            yield order[start:start + self.batch_size]

    # -------------------------------------------------------- classification
    def class_probabilities(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
        """[N, num_labels] softmax scores, in input order."""
        self._need(CLASSIFICATION)
        return self._per_text(texts, pairs, lambda logits: tf.nn.softmax(logits, axis=-1).numpy())

    def regress(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
        """[N, targets] predictions in the targets' own units (``regression``), in input order."""
        self._need(REGRESSION)
        return self._per_text(texts, pairs, lambda logits: self.target_scaling.restore(logits.numpy()))

    def _per_text(self, texts: Sequence[str], pairs: Optional[Sequence[str]], convert) -> np.ndarray:
        """``convert(logits)`` of every text (and pair), batched by length, in input order."""
        out = np.zeros((len(texts), len(self.labels)), np.float32)
        lengths = [len(t) + (len(pairs[i]) if pairs else 0) for i, t in enumerate(texts)]
        for idx in self._batches(len(texts), lengths):
            batch = tf.constant([texts[i] for i in idx])
            second = tf.constant([pairs[i] for i in idx]) if pairs else None
            features = self.encoder.pad(self.encoder.encode(batch, second))
            out[idx] = convert(self._logits(features))
        return out

    def classify(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> List[Dict]:
        return class_results(self.class_probabilities(texts, pairs), self.labels)

    # ------------------------------------------------------------------- NER
    def tag_ids(self, token_lists: Sequence[Sequence[str]]) -> List[np.ndarray]:
        """Word-level tag ids for pre-split sentences (one id per token), in input order."""
        self._need(NER)
        out: List[Optional[np.ndarray]] = [None] * len(token_lists)
        for idx in self._batches(len(token_lists), [len(t) for t in token_lists]):
            words = tf.ragged.constant([list(token_lists[i]) for i in idx], dtype=tf.string)
            features, word_ids = self.encoder.encode_words(words)
            padded = self.encoder.pad(features)
            word_ids = word_ids.to_tensor(default_value=-1)
            scores = word_scores(self._logits(padded), word_ids, words.row_lengths()).numpy()
            for row, i in enumerate(idx):
                n = len(token_lists[i])
                out[i] = scores[row, :n].argmax(axis=-1) if n else np.zeros(0, np.int64)
        return out

    def tag(self, token_lists: Sequence[Sequence[str]]) -> List[List[str]]:
        return [[self.labels.name(i) for i in ids] for ids in self.tag_ids(token_lists)]

    def extract(self, texts: Sequence[str]) -> List[Dict]:
        """Raw strings -> words with tags and character offsets, plus merged entity spans."""
        self._need(NER)
        words, starts, ends = self.encoder.split_words(tf.constant(list(texts)))
        token_lists = [[w.decode("utf-8") for w in row] for row in words.to_list()]
        tags = self.tag(token_lists)
        results = []
        for text, toks, row_tags, s, e in zip(texts, token_lists, tags, starts.to_list(), ends.to_list()):
            char_s, char_e = byte_to_char_offsets(text, s), byte_to_char_offsets(text, e)
            tokens = [{"text": t, "label": g, "start": a, "end": b}
                      for t, g, a, b in zip(toks, row_tags, char_s, char_e)]
            results.append({"text": text, "tokens": tokens, "entities": merge_entities(text, tokens)})
        return results

    def _need(self, task: str) -> None:
        if self.task != task:
            raise DataError(f"this is a {self.task} model; it cannot do {task}")


class ImagePredictor:
    """Wraps (model, image encoder, labels) for batched prediction on image files or encoded bytes."""

    task = IMAGE_CLASSIFICATION

    def __init__(self, model, encoder: ImageEncoder, labels: LabelMap, batch_size: int = 64):
        self.model, self.encoder, self.labels = model, encoder, labels
        self.batch_size = batch_size
        self._probabilities = tf.function(
            lambda data: tf.nn.softmax(model({PIXELS: encoder.encode_batch(data)}, training=False), axis=-1),
            input_signature=[tf.TensorSpec([None], tf.string)])

    def class_probabilities(self, images: Sequence[Union[str, bytes]]) -> np.ndarray:
        """[N, num_labels] softmax scores for image paths or encoded bytes, in input order."""
        out = np.zeros((len(images), len(self.labels)), np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = [read_image_bytes(image) for image in images[start:start + self.batch_size]]
            try:
                out[start:start + len(batch)] = self._probabilities(tf.constant(batch)).numpy()
            except tf.errors.InvalidArgumentError as e:
                where = [str(image) for image in images[start:start + len(batch)] if isinstance(image, str)]
                raise DataError(f"{', '.join(where[:3]) or f'images {start}..{start + len(batch) - 1}'}"
                                f"{' ...' if len(where) > 3 else ''}: {op_error_text(e.message)}") from None
        return out

    def classify(self, images: Sequence[Union[str, bytes]]) -> List[Dict]:
        return class_results(self.class_probabilities(images), self.labels)


def read_image_bytes(image: Union[str, bytes]) -> bytes:
    """Encoded bytes of an image given as bytes or a file path."""
    if isinstance(image, bytes):
        return image
    try:
        with open(image, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{image}: cannot read image ({e.strerror})") from None


class EmbeddingPredictor:
    """Wraps (embedding model, encoder) for batched text -> unit vector prediction (``embedding`` task)."""

    task = EMBEDDING

    def __init__(self, model, encoder: TextEncoder, labels: LabelMap, batch_size: int = 64):
        self.model, self.encoder, self.labels = model, encoder, labels
        self.batch_size = batch_size
        spec = {k: tf.TensorSpec([None, None], tf.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
        self._embed = tf.function(lambda f: model(f, training=False), input_signature=[spec])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[N, hidden] L2-normalised vectors, in input order (texts batched by length)."""
        out: Optional[np.ndarray] = None
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            vectors = self._embed(self.encoder.pad(self.encoder.encode(tf.constant([texts[i] for i in idx])))).numpy()
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), np.float32)
            out[idx] = vectors
        return out if out is not None else np.zeros((0, 0), np.float32)

    def similarity(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        """[Q, D] cosine similarities."""
        return self.embed(queries) @ self.embed(documents).T
