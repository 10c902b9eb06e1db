"""TF-op versions of the Python span helpers in ``tfpipeline.inference``.

A SavedModel answers with tensors only, so the two post-processing steps
that ``Predictor.extract`` does in Python are re-done here with plain TF ops
(no tensorflow-text, so they run on any TF Serving build):

* ``char_offsets``: UTF-8 byte offsets (what TF string ops give) -> character
  offsets, the same numbers as ``inference.byte_to_char_offsets``;
* ``merge_bio``: BIO word tags -> entity spans, the same rules as
  ``inference.merge_entities`` (a stray ``I-`` starts a new entity).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from tfpipeline import _env  # noqa: F401

import tensorflow as tf

OUTSIDE, BEGIN, INSIDE = 0, 1, 2


def char_offsets(texts: tf.Tensor, row_ids: tf.Tensor, byte_offsets: tf.Tensor) -> tf.Tensor:
    """Byte offsets into ``texts[row_ids]`` -> int32 character offsets (flat tensors)."""
    row_text = tf.gather(texts, row_ids)
    prefix = tf.strings.substr(row_text, tf.zeros_like(byte_offsets), byte_offsets)
    return tf.strings.length(prefix, unit="UTF8_CHAR")


def bio_tables(label_names: Sequence[str]) -> Tuple[List[int], List[int], List[str]]:
    """Per label id: BIO prefix code and entity-type id; plus the entity-type names.

    Parsing mirrors ``merge_entities``: ``label.partition("-")``; only ``B`` and
    ``I`` prefixes are entity tags, every other label (``O``, ``PER``) is outside.
    """
    prefixes, kinds, type_names = [], [], []
    for name in label_names:
        prefix, _, kind = name.partition("-")
        code = BEGIN if prefix == "B" else INSIDE if prefix == "I" else OUTSIDE
        if code != OUTSIDE and kind not in type_names:
            type_names.append(kind)
        prefixes.append(code)
        kinds.append(type_names.index(kind) if code != OUTSIDE else -1)
    return prefixes, kinds, type_names or [""]


def merge_bio(label_ids: tf.RaggedTensor, starts: tf.RaggedTensor, ends: tf.RaggedTensor,
              prefix_table: tf.Tensor, kind_table: tf.Tensor) -> Dict[str, tf.RaggedTensor]:
    """Ragged [B, (words)] tag ids + word offsets -> ragged [B, (entities)] type ids and offsets.

    A word begins an entity when it is ``B-x``, or ``I-x`` not directly after a
    word of the same entity type; ``I-x`` after ``B-x``/``I-x`` extends it.
    """
    ids = label_ids.flat_values
    prefix = tf.gather(prefix_table, ids)
    kind = tf.gather(kind_table, ids)
    tagged = prefix != OUTSIDE
    first_in_row = tf.ragged.range(label_ids.row_lengths()).flat_values == 0
    prev_tagged = tf.logical_and(tf.concat([[False], tagged[:-1]], 0), tf.logical_not(first_in_row))
    prev_kind = tf.concat([[-1], kind[:-1]], 0)
    continues = (prefix == INSIDE) & prev_tagged & tf.equal(prev_kind, kind)
    begins = tagged & tf.logical_not(continues)
    members = tf.reshape(tf.where(begins | continues), [-1])
    entity_of_word = tf.cumsum(tf.cast(begins, tf.int32)) - 1
    segments = tf.gather(entity_of_word, members)
    count = tf.reduce_sum(tf.cast(begins, tf.int32))
    first_words = tf.reshape(tf.where(begins), [-1])
    rows = tf.gather(label_ids.value_rowids(), first_words)
    end = tf.math.unsorted_segment_max(tf.gather(ends.flat_values, members), segments, count)

    def by_row(values):
        return tf.RaggedTensor.from_value_rowids(values, rows, nrows=label_ids.nrows())

    return {"kind": by_row(tf.gather(kind, first_words)),
            "start": by_row(tf.gather(starts.flat_values, first_words)),
            "end": by_row(end)}
