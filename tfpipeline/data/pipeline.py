"""tf.data input pipelines: tokenize in-graph, cache, shuffle, bucket by length, prefetch.

Two batching modes:

* dynamic (default): examples are grouped into length buckets and padded to
  the longest example of their batch; on short texts this does several times
  less work than padding everything to ``max_length``.
* static (``static_shapes=True``): every batch is ``[batch_size, max_length]``
  with ``drop_remainder=True``, as TPUs and XLA need.

Elements are ``(features, labels)`` with int32 ``input_ids``,
``attention_mask`` and ``token_type_ids``; classification labels are class
ids, NER labels are per-position tag ids with ``IGNORE_INDEX`` (-100) on
continuation pieces, special tokens and padding.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfpipeline.data.examples import CLASSIFICATION, NER, REGRESSION, ScoreExample, TextExample, TokenExample
from tfpipeline.errors import DataError
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import IGNORE_INDEX, TextEncoder
from tfpipeline.data.text_augmentation import (DEFAULT_RATE, NONE, cutoff_features, eda_element, uses_cutoff,
                                                uses_eda, with_seeds)

ENCODE_CHUNK = 256  # examples tokenized per vectorized call
BUCKET_LENGTH = "bucket_length"   # carried through bucketing when augmentation changes the encoded length
PREFETCH_BATCHES = 2  # batches prepared ahead of the model step


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Turn tf.data's autotuner off for ``ds``.

    With it on, deleting a used-up iterator waits for the autotuner's background thread: on TF 2.21 many
    Keras ``fit`` calls ended with 3-5 s of idle CPU (bench/input_pipeline.py, "fit epoch overhead").
    Without it the pipeline is still over 1,000x faster than a MiniLM training step (same benchmark),
    and the tokenized data is cached after the first epoch.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def bucket_boundaries(max_length: int) -> List[int]:
    """Length bucket edges up to ``max_length`` (finer for short lengths, where most texts are)."""
    edges, edge = [], 16
    while edge < max_length:
        edges.append(edge)
        edge = edge + 8 if edge < 32 else edge + 16 if edge < 64 else edge + 32 if edge < 256 else edge + 64
    return edges


def classification_label_ids(examples: Sequence[TextExample], labels: LabelMap) -> List[int]:
    """Class ids for ``examples``; an unknown label names the example's file and line."""
    ids = []
    for ex in examples:
        if ex.label is None:
            raise DataError(f"{ex.origin or 'example'}: example has no label")
        ids.append(labels.id(ex.label, ex.origin))
    return ids


def tag_ids(examples: Sequence[TokenExample], labels: LabelMap) -> List[List[int]]:
    out = []
    for ex in examples:
        if ex.tags is None:
            raise DataError(f"{ex.origin or 'example'}: sentence has no tags")
        if len(ex.tags) != len(ex.tokens):
            raise DataError(f"{ex.origin}: {len(ex.tokens)} tokens but {len(ex.tags)} tags")
        out.append([labels.id(t, ex.origin) for t in ex.tags])
    return out


@dataclass(frozen=True)
class TargetScaling:
    """Per-target mean and standard deviation of the training targets (``regression``).

    The model learns standardised targets, so targets of any scale (a -4..4
    rating, a price) train with the same learning rate and loss scale; the
    predictor and the export undo it. Stored in the model folder's metadata.
    """

    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    @classmethod
    def fit(cls, examples: Sequence[ScoreExample]) -> "TargetScaling":
        targets = np.asarray([ex.targets for ex in examples], np.float64)
        std = targets.std(axis=0)
        return cls(tuple(float(m) for m in targets.mean(axis=0)), tuple(float(s) if s > 0 else 1.0 for s in std))

    @classmethod
    def from_dict(cls, value: Dict[str, Sequence[float]]) -> "TargetScaling":
        return cls(tuple(float(m) for m in value["mean"]), tuple(float(s) for s in value["std"]))

    def as_dict(self) -> Dict[str, List[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def standardize(self, targets):
        return (targets - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def restore(self, predictions):
        """Model outputs -> target units (numpy or tensors)."""
        return predictions * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)


def check_targets(examples: Sequence[ScoreExample], labels: LabelMap) -> None:
    """Every example has one value per target; the first that does not names its origin."""
    for ex in examples:
        if ex.targets is None or len(ex.targets) != len(labels):
            raise DataError(f"{ex.origin or 'example'}: needs {len(labels)} target(s) ({', '.join(labels.names)})")


def regression_targets(examples: Sequence[ScoreExample], labels: LabelMap, scaling: TargetScaling) -> np.ndarray:
    """[N, targets] standardised float32 targets (checked with ``check_targets``)."""
    check_targets(examples, labels)
    return scaling.standardize(np.asarray([ex.targets for ex in examples], np.float32)).astype(np.float32)


def has_pairs(examples: Sequence[TextExample]) -> bool:
    """Whether the examples are sentence pairs; a split that mixes both names the first odd one out."""
    if not examples:
        raise DataError("no examples to build a dataset from")
    with_pair = [ex.text_pair is not None for ex in examples]
    if any(with_pair) and not all(with_pair):
        bad = examples[with_pair.index(False)]
        raise DataError(f"{bad.origin}: some examples have a text pair and this one does not")
    return with_pair[0]


def _encoded_classification(examples: Sequence[TextExample], encoder: TextEncoder,
                            labels: LabelMap, targets: Optional[np.ndarray] = None) -> tf.data.Dataset:
    """Class ids as labels, or with ``targets`` ([N, T] floats, regression) those instead."""
    label_ids = (tf.constant(targets) if targets is not None
                 else tf.constant(classification_label_ids(examples, labels), tf.int32))
    texts = tf.constant([ex.text for ex in examples])
    if has_pairs(examples):
        pairs = tf.constant([ex.text_pair for ex in examples])
        ds = tf.data.Dataset.from_tensor_slices(((texts, pairs), label_ids)).batch(ENCODE_CHUNK)
        ds = ds.map(lambda t, y: (encoder.encode(t[0], t[1]), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = tf.data.Dataset.from_tensor_slices((texts, label_ids)).batch(ENCODE_CHUNK)
        ds = ds.map(lambda t, y: (encoder.encode(t), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.unbatch().map(_dense_element)


def _augmented_classification(examples: Sequence[TextExample], encoder: TextEncoder, label_ids: tf.Tensor,
                              lengths: Sequence[int], *, seed: int, rate: float,
                              shuffle_buffer: int) -> tf.data.Dataset:
    """Training elements with EDA applied to the raw text each epoch, then encoded.

    Shuffling happens on the raw texts (nothing encoded is cached: the text
    changes every epoch). Each element carries its *original* token length
    under ``BUCKET_LENGTH``, so length buckets, and hence the number of
    batches the learning-rate schedule was planned for, do not change.
    """
    texts = [tf.constant([ex.text for ex in examples])]
    if has_pairs(examples):
        texts.append(tf.constant([ex.text_pair for ex in examples]))
    ds = tf.data.Dataset.from_tensor_slices((tuple(texts), label_ids, tf.constant(list(lengths), tf.int32)))
    ds = ds.shuffle(min(shuffle_buffer, len(examples)), seed=seed, reshuffle_each_iteration=True)
    ds = with_seeds(ds, seed).map(lambda t, y, n, s: (eda_element(t, s, rate), y, n),
                                  num_parallel_calls=tf.data.AUTOTUNE)

    def encode(t, y, n):
        features = encoder.encode(*t)
        features[BUCKET_LENGTH] = n
        return features, y

    return ds.batch(ENCODE_CHUNK).map(encode, num_parallel_calls=tf.data.AUTOTUNE).unbatch().map(_dense_element)


def _dense_element(features, labels):
    """Unbatched ragged rows arrive as rank-0-ragged specs; padded_batch needs plain tensors."""
    dense = lambda t: t.to_tensor() if isinstance(t, tf.RaggedTensor) else tf.identity(t)  # noqa: E731
    return {k: dense(v) for k, v in features.items()}, dense(labels)


def align_labels(tags: tf.RaggedTensor, word_ids: tf.RaggedTensor) -> tf.RaggedTensor:
    """Word-level tag ids -> piece-level labels: first piece of a word gets its tag, the rest -100."""
    rows = word_ids.value_rowids()
    wid = word_ids.flat_values
    index = tf.gather(tags.row_splits, rows) + tf.cast(tf.maximum(wid, 0), tags.row_splits.dtype)
    values = tf.where(wid >= 0, tf.gather(tags.flat_values, index), IGNORE_INDEX)
    return word_ids.with_flat_values(values)


def _encoded_tokens(examples: Sequence[TokenExample], encoder: TextEncoder, labels: LabelMap) -> tf.data.Dataset:
    if not examples:
        raise DataError("no examples to build a dataset from")
    ids = tag_ids(examples, labels)
    words = tf.ragged.constant([list(ex.tokens) for ex in examples], dtype=tf.string)
    tags = tf.ragged.constant(ids, dtype=tf.int32)

    def encode(w, t):
        features, word_ids = encoder.encode_words(w)
        return features, align_labels(t, word_ids)

    ds = tf.data.Dataset.from_tensor_slices((words, tags)).batch(ENCODE_CHUNK)
    return ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE).unbatch().map(_dense_element)


def make_dataset(examples: Sequence, encoder: TextEncoder, labels: LabelMap, task: str, *,
                 batch_size: int = 32, training: bool = False, static_shapes: bool = False,
                 bucket: bool = True, seed: int = 13, cache: bool = True,
                 shuffle_buffer: int = 10_000, lengths: Optional[Sequence[int]] = None,
                 target_scaling: Optional[TargetScaling] = None, augmentation: str = NONE,
                 augmentation_rate: float = DEFAULT_RATE) -> tf.data.Dataset:
    """Build the batched ``(features, labels)`` dataset for ``task`` from in-memory examples.

    ``training`` shuffles (reshuffled every epoch, seeded). ``static_shapes``
    pads to ``encoder.max_length`` and drops the last partial batch (TPU/XLA).
    ``lengths``: the examples' token lengths if already known (see
    ``batches_per_epoch``), which saves a tokenization pass. ``regression``
    needs ``target_scaling`` (fit on the training split). ``augmentation``
    (``training`` only; classification and regression): see
    ``data.text_augmentation``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    augmentation = augmentation if training else NONE
    if augmentation != NONE and task not in (CLASSIFICATION, REGRESSION):
        raise DataError(f"text augmentation {augmentation!r} is for classification and regression, not {task}")
    eda = uses_eda(augmentation)
    if task in (CLASSIFICATION, REGRESSION):
        if task == REGRESSION and target_scaling is None:
            raise DataError("regression datasets need the training targets' scaling (TargetScaling.fit)")
        targets = regression_targets(examples, labels, target_scaling) if task == REGRESSION else None
        label_pad, label_shape = (0.0, [len(labels)]) if task == REGRESSION else (0, [])
        if eda:
            label_ids = tf.constant(targets) if targets is not None else \
                tf.constant(classification_label_ids(examples, labels), tf.int32)
            if lengths is None:
                lengths = sequence_lengths(examples, encoder, task) if examples else []
            ds = _augmented_classification(examples, encoder, label_ids, lengths, seed=seed,
                                           rate=augmentation_rate, shuffle_buffer=shuffle_buffer)
        else:
            ds = _encoded_classification(examples, encoder, labels, targets)
    elif task == NER:
        ds, label_pad, label_shape = _encoded_tokens(examples, encoder, labels), IGNORE_INDEX, [None]
    else:
        raise DataError(f"unknown task {task!r} (use {CLASSIFICATION}, {REGRESSION} or {NER})")
    if not eda:
        if cache:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(min(shuffle_buffer, len(examples)), seed=seed, reshuffle_each_iteration=True)
    if uses_cutoff(augmentation):
        ds = with_seeds(ds, seed + 1).map(lambda f, y, s: (cutoff_features(f, s, augmentation_rate), y),
                                          num_parallel_calls=tf.data.AUTOTUNE)
    pad_values = ({"input_ids": encoder.pad_id, "attention_mask": 0, "token_type_ids": 0}, label_pad)
    if eda:
        pad_values[0][BUCKET_LENGTH] = 0
    if static_shapes:
        length = encoder.max_length
        shapes = ({k: [] if k == BUCKET_LENGTH else [length] for k in pad_values[0]},
                  [length if d is None else d for d in label_shape])
        ds = ds.padded_batch(batch_size, padded_shapes=shapes, padding_values=pad_values, drop_remainder=True)
    elif bucket:
        edges = bucket_boundaries(encoder.max_length)
        length_of = (lambda f, y: f[BUCKET_LENGTH]) if eda else (lambda f, y: tf.shape(f["input_ids"])[0])
        ds = ds.bucket_by_sequence_length(
            element_length_func=length_of,
            bucket_boundaries=edges, bucket_batch_sizes=[batch_size] * (len(edges) + 1),
            padding_values=pad_values, drop_remainder=False)
    else:
        ds = ds.padded_batch(batch_size, padding_values=pad_values)
    if eda:
        ds = ds.map(lambda f, y: ({k: v for k, v in f.items() if k != BUCKET_LENGTH}, y))
    # A known length: Keras plans (and shows) whole epochs, and its first epoch over a dataset of unknown
    # length ends with one stray optimizer-step count (iterations + 1 with no batch), which would shift
    # the learning-rate schedule by a step.
    batches = batches_per_epoch(examples, encoder, task, batch_size, static_shapes=static_shapes, bucket=bucket,
                                lengths=lengths)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return without_autotune(ds.prefetch(PREFETCH_BATCHES))


def sequence_lengths(examples: Sequence, encoder: TextEncoder, task: str) -> List[int]:
    """Encoded length (with special tokens) of every example, in order (bucketing, padding statistics).

    Runs the same ``TextEncoder`` ops as the pipeline, eagerly in chunks: no
    tf.data graph to build, so counting costs milliseconds on small data.
    """
    lengths: List[int] = []
    for start in range(0, len(examples), ENCODE_CHUNK * 16):
        chunk = examples[start:start + ENCODE_CHUNK * 16]
        if task == NER:
            features, _ = encoder.encode_words(tf.ragged.constant([list(ex.tokens) for ex in chunk], dtype=tf.string))
        else:
            pairs = [ex.text_pair for ex in chunk]
            second = tf.constant(pairs) if all(p is not None for p in pairs) else None
            features = encoder.encode(tf.constant([ex.text for ex in chunk]), second)
        lengths += [int(n) for n in features["input_ids"].row_lengths().numpy()]
    return lengths


def batches_per_epoch(examples: Sequence, encoder: TextEncoder, task: str, batch_size: int, *,
                      static_shapes: bool = False, bucket: bool = True,
                      lengths: Optional[Sequence[int]] = None) -> int:
    """Exactly how many batches one epoch of ``make_dataset`` (same settings) yields.

    The learning-rate schedule is planned over ``epochs x`` this number, so it
    must be exact: with length bucketing every bucket ends on its own partial
    batch, so the count is ``sum(ceil(n_bucket / batch_size))`` over the
    buckets, which needs the examples' token lengths (one tokenization pass).
    Static shapes drop the last partial batch; plain padding keeps it.
    ``lengths`` may come from ``sequence_lengths`` with any encoder of the same
    vocabulary and at least this ``max_length`` (truncation only caps them).
    """
    n = len(examples)
    if static_shapes:
        return n // batch_size
    if not bucket:
        return math.ceil(n / batch_size)
    edges = bucket_boundaries(encoder.max_length)
    sizes = [0] * (len(edges) + 1)
    if lengths is None:
        lengths = sequence_lengths(examples, encoder, task)
    elif len(lengths) != n:
        raise ValueError(f"{len(lengths)} lengths for {n} examples")
    for length in lengths:   # bucket i holds edges[i-1] <= length < edges[i]
        sizes[bisect.bisect_right(edges, min(length, encoder.max_length))] += 1
    return sum(math.ceil(size / batch_size) for size in sizes)


def padding_fraction(dataset: tf.data.Dataset) -> float:
    """Share of positions in ``dataset``'s batches that are padding (work the model wastes)."""
    real = total = 0
    for features, _ in dataset:
        mask = features["attention_mask"]
        real += int(tf.reduce_sum(mask))
        total += int(tf.size(mask))
    return 1.0 - real / max(total, 1)

