"""The tf.data side of streaming: rows in windows, each sorted by length and cut into batches.

Why length-sorted windows rather than ``pipeline.py``'s fixed length buckets: rows are cut into windows of
``window_batches x batch_size`` rows, each window is sorted by length and cut into batches, so each batch is
padded only to its own longest row. ``bucket_by_sequence_length`` holds a row until its bucket fills, which for a
rare length can be the end of the file; results could then be written in input order only by buffering
everything behind that row. Here no row comes out more than one window late, so a buffer of one window puts
results back in **input order** with flat memory.
"""
from __future__ import annotations

from typing import Callable, Iterator

import tensorflow as tf

from tfpipeline.batch_predict.rows import Row

ROW_FIELDS = ("seq", "line", "end", "id")   # carried with every row: output order, line, progress, id
WINDOW_BATCHES = 32       # rows sorted together = this x batch size: the most a row can be reordered


def window_dataset(rows: Callable[[], Iterator[Row]], window: int, *, sentences: bool = False) -> tf.data.Dataset:
    """The rows of ``rows()`` (called anew each time the dataset is iterated) in windows of ``window`` rows.

    Each element holds one window's ``seq`` (position among the rows streamed, to put results back in order),
    ``line``, ``end``, ``id``, ``key`` (characters, or words: the in-memory predictors' sort key) and
    ``text``/``pair`` (or ``words``, ragged). The generator hands tf.data a window at a time: one Python call
    per row would cost more than a small model does.
    """
    spec = {name: tf.TensorSpec([None], tf.string if name == "id" else tf.int64) for name in (*ROW_FIELDS, "key")}
    if sentences:
        spec.update(words=tf.TensorSpec([None], tf.string), word_counts=tf.TensorSpec([None], tf.int64))
    else:
        spec.update(text=tf.TensorSpec([None], tf.string), pair=tf.TensorSpec([None], tf.string))

    def generate():
        columns = {name: [] for name in spec}
        for seq, row in enumerate(rows()):
            for name, value in (("seq", seq), ("line", row.line), ("end", row.end), ("id", row.id)):
                columns[name].append(value)
            if sentences:
                columns["key"].append(len(row.words))
                columns["word_counts"].append(len(row.words))
                columns["words"].extend(row.words)
            else:
                columns["key"].append(len(row.text) + len(row.pair))
                columns["text"].append(row.text)
                columns["pair"].append(row.pair)
            if len(columns["seq"]) == window:
                yield columns
                columns = {name: [] for name in spec}
        if columns["seq"]:
            yield columns

    ds = tf.data.Dataset.from_generator(generate, output_signature=spec)
    if sentences:
        ds = ds.map(lambda w: {**{k: v for k, v in w.items() if k not in ("words", "word_counts")},
                               "words": tf.RaggedTensor.from_row_lengths(w["words"], w["word_counts"])})
    return ds


def sorted_row_batches(windows: tf.data.Dataset, *, batch_size: int) -> tf.data.Dataset:
    """Batches of raw rows, each window sorted by ``key`` (rows for the predictors' own methods: NER on text or
    sentences, images)."""
    def sort_window(window):
        order = tf.argsort(window["key"], stable=True)
        return {name: tf.gather(values, order) for name, values in window.items()}

    return windows.map(sort_window).unbatch().ragged_batch(batch_size).prefetch(2)


def encoded_batches(windows: tf.data.Dataset, encoder, *, with_pairs: bool, batch_size: int) -> tf.data.Dataset:
    """(row fields, padded model features) batches: each window is tokenized in one in-graph call (as
    ``data.pipeline`` tokenizes), sorted by token length and cut into batches padded to their longest row.
    Tokenizing here, in tf.data's threads, overlaps it with the model instead of running it eagerly per batch."""
    def encode_window(window):
        features = encoder.encode(window["text"], window["pair"] if with_pairs else None)
        order = tf.argsort(features["input_ids"].row_lengths(), stable=True)
        return ({name: tf.gather(window[name], order) for name in ROW_FIELDS},
                {name: tf.gather(values, order) for name, values in features.items()})

    batches = windows.map(encode_window).unbatch().ragged_batch(batch_size)
    return batches.map(lambda fields, features: (fields, encoder.pad(features))).prefetch(2)
