"""tf.data input pipeline for the ``embedding`` task: (query, positive[, negative]) pairs, tokenized in the graph.

Elements are ``({"query": features, "positive": features[, "negative": features],
"group_id": [B] int64}, labels)`` where each ``features`` is the usual
``input_ids`` / ``attention_mask`` / ``token_type_ids`` padded to the batch's
longest text, and ``labels`` is ``range(batch)``: query ``i``'s positive is
candidate ``i`` among the batch's positives (then its hard negatives), the
in-batch-negatives setup of ``models.embedding_model``. ``group_id`` (a
checksum of the pair's group, else of its positive text) lets the model
ignore another pair's copy of the same answer: it is not a negative. Shuffling changes which pairs meet in a batch
every epoch; ``static_shapes`` pads to ``max_length`` and drops the last
partial batch (TPU/XLA).
"""
from __future__ import annotations

import math
import zlib
from typing import List, Sequence

import tensorflow as tf

from tfpipeline.data.pipeline import ENCODE_CHUNK, PREFETCH_BATCHES, without_autotune
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import DataError

FIELDS = ("query", "positive", "negative")
GROUP_ID = "group_id"


def pair_fields(examples: Sequence) -> List[str]:
    """The texts every example has: query and positive, plus negative when all examples carry one."""
    negatives = [ex.negative is not None for ex in examples]
    if any(negatives) and not all(negatives):
        bad = examples[negatives.index(False)]
        raise DataError(f"{bad.origin or 'pair'}: some pairs have a hard negative and this one does not")
    return list(FIELDS if all(negatives) else FIELDS[:2])


def pair_texts(examples: Sequence) -> List[str]:
    """Every text of the pairs (queries, positives, negatives): what max length and steps are measured on."""
    fields = pair_fields(examples)
    return [getattr(ex, field) for field in fields for ex in examples]


def pair_batches_per_epoch(n: int, batch_size: int, *, static_shapes: bool = False) -> int:
    return n // batch_size if static_shapes else math.ceil(n / batch_size)


def make_pair_dataset(examples: Sequence, encoder: TextEncoder, *, batch_size: int = 32, training: bool = False,
                      static_shapes: bool = False, seed: int = 13, shuffle_buffer: int = 10_000) -> tf.data.Dataset:
    """The batched pairs dataset (see the module docstring)."""
    if not examples:
        raise DataError("no pairs to build a dataset from")
    if batch_size < 2 and training:
        raise DataError("in-batch negatives need a batch size of at least 2")
    fields = pair_fields(examples)
    columns = {field: tf.constant([getattr(ex, field) for ex in examples]) for field in fields}
    columns[GROUP_ID] = tf.constant([group_id(ex) for ex in examples], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(columns).batch(ENCODE_CHUNK)
    ds = ds.map(lambda batch: {**{field: encoder.encode(batch[field]) for field in fields},
                               GROUP_ID: batch[GROUP_ID]},
                num_parallel_calls=tf.data.AUTOTUNE).unbatch().map(_dense)
    ds = ds.cache()
    if training:
        ds = ds.shuffle(min(shuffle_buffer, len(examples)), seed=seed, reshuffle_each_iteration=True)
    feature_pad = {"input_ids": encoder.pad_id, "attention_mask": 0, "token_type_ids": 0}
    shape = [encoder.max_length] if static_shapes else [None]
    shapes = {**{f: {k: shape for k in feature_pad} for f in fields}, GROUP_ID: []}
    pads = {**{f: dict(feature_pad) for f in fields}, GROUP_ID: tf.constant(0, tf.int64)}
    ds = ds.padded_batch(batch_size, padded_shapes=shapes, padding_values=pads, drop_remainder=static_shapes)
    ds = ds.map(lambda pairs: (pairs, tf.range(tf.shape(pairs["query"]["input_ids"])[0], dtype=tf.int32)))
    batches = pair_batches_per_epoch(len(examples), batch_size, static_shapes=static_shapes)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return without_autotune(ds.prefetch(PREFETCH_BATCHES))


def group_id(example) -> int:
    """A stable number for what the pair's positive is (its group, else its text)."""
    key = example.group if example.group is not None else example.positive
    return zlib.crc32(key.encode("utf-8"))


def _dense(element):
    """Unbatched ragged rows arrive as ragged specs; padded_batch needs plain tensors."""
    return {field: value if field == GROUP_ID else
            {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v for k, v in value.items()}
            for field, value in element.items()}
