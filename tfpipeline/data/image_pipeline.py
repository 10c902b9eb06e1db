"""tf.data input pipelines for image classification: read, cache, shuffle, decode + augment, batch, prefetch.

Elements are ``({"pixel_values": [B, S, S, 3] float32}, class_id[B] int32)``.
Files are read in the graph (``tf.io.read_file``), so a photo folder is never
loaded into Python memory; the *encoded* bytes are cached after the first
epoch when they fit in ``CACHE_LIMIT_BYTES`` (decoding them again each epoch
costs far less than a training step), otherwise the OS page cache serves
them. Augmentation runs only with ``training=True``; ``static_shapes`` drops
the last partial batch (TPU/XLA; images are always ``[S, S, 3]``).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import tensorflow as tf

from tfpipeline.data.images import PIXELS, ImageEncoder
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import PREFETCH_BATCHES, classification_label_ids, without_autotune
from tfpipeline.errors import DataError

CACHE_LIMIT_BYTES = 1 << 30   # cache encoded images up to 1 GiB


def encoded_size(examples: Sequence) -> int:
    """Bytes of the encoded images (file sizes for paths)."""
    return sum(len(ex.image) if isinstance(ex.image, bytes) else os.path.getsize(ex.image) for ex in examples)


def image_batches_per_epoch(n: int, batch_size: int, *, static_shapes: bool = False) -> int:
    """Batches one epoch of ``make_image_dataset`` yields (static shapes drop the last partial one)."""
    return n // batch_size if static_shapes else math.ceil(n / batch_size)


def make_image_dataset(examples: Sequence, encoder: ImageEncoder, labels: LabelMap, *, batch_size: int = 32,
                       training: bool = False, static_shapes: bool = False, seed: int = 13,
                       augmentation: str = "crop+flip", shuffle_buffer: int = 10_000) -> tf.data.Dataset:
    """The batched ``(features, labels)`` dataset for ``ImageExample``s (see the module docstring)."""
    if not examples:
        raise DataError("no examples to build a dataset from")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from_files = isinstance(examples[0].image, str)
    if any(isinstance(ex.image, str) != from_files for ex in examples):
        raise DataError("mixed image paths and in-memory images in one split")
    label_ids = tf.constant(classification_label_ids(examples, labels), tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((tf.constant([ex.image for ex in examples]), label_ids))
    if from_files:
        ds = ds.map(lambda path, y: (tf.io.read_file(path), y), num_parallel_calls=tf.data.AUTOTUNE)
    if encoded_size(examples) <= CACHE_LIMIT_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(shuffle_buffer, len(examples)), seed=seed, reshuffle_each_iteration=True)
    if training and augmentation != "none":
        flip = augmentation == "crop+flip"
        pixels = lambda data: encoder.augment(data, flip=flip, seed=seed)   # noqa: E731
    else:
        pixels = encoder.encode
    ds = ds.map(lambda data, y: ({PIXELS: pixels(data)}, y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=static_shapes)
    batches = image_batches_per_epoch(len(examples), batch_size, static_shapes=static_shapes)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return without_autotune(ds.prefetch(PREFETCH_BATCHES))
