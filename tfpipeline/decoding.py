"""Turning model outputs into answers: word-level scores, character offsets and entity spans.

Each step exists twice, with the same rules, because it runs in two places:

* in Python, on numpy arrays, for ``Predictor`` (``byte_to_char_offsets``,
  ``merge_entities``);
* as plain TF ops inside the exported SavedModel, which can answer only with
  tensors (``char_offsets``, ``merge_bio``; no tensorflow-text, so they run on
  any TF Serving build).

``word_scores`` is TF ops and is used by both. Tests check the two versions
agree.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

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


def word_scores(logits: tf.Tensor, word_ids: tf.Tensor, num_words: tf.Tensor) -> tf.Tensor:
    """Piece-level logits [B,T,C] -> word-level probabilities [B,W,C] (W = max words in batch).

    Each word takes the prediction of its first piece. Words that got no piece
    (truncated away, or characters the vocabulary drops) keep all-zero scores,
    which decode to label id 0 (``O``).
    """
    probs = tf.nn.softmax(logits, axis=-1)
    positions = tf.where(word_ids >= 0)                     # [N, 2] (row, position)
    words = tf.gather_nd(word_ids, positions)
    target = tf.stack([positions[:, 0], tf.cast(words, tf.int64)], axis=1)
    shape = tf.stack([tf.shape(logits, out_type=tf.int64)[0], tf.cast(tf.reduce_max(num_words), tf.int64),
                      tf.shape(logits, out_type=tf.int64)[2]])
    shape = tf.maximum(shape, [0, 0, 0])
    return tf.scatter_nd(target, tf.gather_nd(probs, positions), shape)


def byte_to_char_offsets(text: str, offsets: Sequence[int]) -> List[int]:
    """UTF-8 byte offsets (what TF string ops return) -> Python character offsets."""
    raw = text.encode("utf-8")
    return [len(raw[:o].decode("utf-8", errors="ignore")) for o in offsets]


def merge_entities(text: str, tokens: Sequence[Dict]) -> List[Dict]:
    """BIO-tagged tokens -> entity spans {type, text, start, end}; a stray I- starts a new entity."""
    entities: List[Dict] = []
    current = None
    for tok in tokens:
        prefix, _, kind = tok["label"].partition("-")
        if prefix == "B" or (prefix == "I" and (current is None or current["type"] != kind)):
            current = {"type": kind, "start": tok["start"], "end": tok["end"]}
            entities.append(current)
        elif prefix == "I":
            current["end"] = tok["end"]
        else:
            current = None
    for ent in entities:
        ent["text"] = text[ent["start"]:ent["end"]]
    return entities
