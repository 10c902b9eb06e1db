"""Label-preserving text augmentation for training batches, as plain TF ops inside the tf.data pipeline.

Two families, chosen with ``augmentation`` (``eda``, ``cutoff`` or ``eda+cutoff``):

* ``eda`` -- Easy Data Augmentation (Wei & Zou, 2019) without synonyms: on the
  raw text, one of random *swap* (two words change places), random *deletion*
  (each word dropped with probability ``rate``) or random *insertion* (a copy
  of one of the sentence's own words at a random place; EDA inserts synonyms,
  and no offline synonym source ships in a package here). The text is then
  tokenized again, so this runs before the encoder.
* ``cutoff`` -- span cutoff (Shen et al., 2020): a random contiguous span of
  ``rate`` of the word pieces is hidden from attention (``attention_mask`` 0),
  so the model cannot lean on any single phrase. It runs on encoded features,
  after the cache.

Each training example is augmented with probability ``AUGMENT_PROBABILITY``,
afresh every epoch; the rest pass unchanged, so the model still sees the real
distribution. Randomness is stateless and seeded per element from
``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``: a run is
reproducible for its seed, and every epoch draws new augmentations.
Validation, test and serving never augment.
"""
from __future__ import annotations

from typing import Dict, Tuple

import tensorflow as tf

from tfpipeline.config.train import TEXT_AUGMENTATIONS

NONE, EDA, CUTOFF, BOTH = TEXT_AUGMENTATIONS
AUGMENT_PROBABILITY = 0.5
DEFAULT_RATE = 0.1   # EDA's recommended alpha, and the cutoff paper's span ratio

_KEEP, _SWAP, _DELETE, _INSERT = 0, 1, 2, 3


def uses_eda(augmentation: str) -> bool:
    return augmentation in (EDA, BOTH)


def uses_cutoff(augmentation: str) -> bool:
    return augmentation in (CUTOFF, BOTH)


def with_seeds(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """``(element...)`` -> ``(element..., seed)``: one int64 per element, new values every epoch."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip((ds, seeds)).map(lambda element, s: (*element, s))


def _seed(element_seed: tf.Tensor, salt: int) -> tf.Tensor:
    """A stateless-op seed (shape [2]) for one random draw of one element."""
    return tf.stack([tf.cast(element_seed, tf.int64), tf.constant(salt, tf.int64)])


def _changes(n: tf.Tensor, rate: float) -> tf.Tensor:
    """How many words/pieces an operation touches: ``rate`` of ``n``, at least 1."""
    return tf.maximum(1, tf.cast(tf.round(rate * tf.cast(n, tf.float32)), tf.int32))


def _swap(words: tf.Tensor, n: tf.Tensor, k: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    pairs = tf.random.stateless_uniform([k, 2], _seed(seed, 11), minval=0, maxval=n, dtype=tf.int32)

    def body(i, order):
        a, b = pairs[i, 0], pairs[i, 1]
        return i + 1, tf.tensor_scatter_nd_update(order, [[a], [b]], tf.stack([order[b], order[a]]))

    _, order = tf.while_loop(lambda i, _: i < k, body, (tf.constant(0), tf.range(n)))
    return tf.gather(words, order)


def _delete(words: tf.Tensor, n: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    keep = tf.random.stateless_uniform([n], _seed(seed, 12)) >= rate
    survivor = tf.random.stateless_uniform([], _seed(seed, 13), minval=0, maxval=n, dtype=tf.int32)
    keep = tf.cond(tf.reduce_any(keep), lambda: keep, lambda: tf.equal(tf.range(n), survivor))
    return tf.boolean_mask(words, keep)


def _insert(words: tf.Tensor, n: tf.Tensor, k: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Copies of ``k`` random words, each placed before a random position (or at the end)."""
    sources = tf.random.stateless_uniform([k], _seed(seed, 14), minval=0, maxval=n, dtype=tf.int32)
    places = tf.random.stateless_uniform([k], _seed(seed, 15), minval=0, maxval=n + 1, dtype=tf.int32)
    keys = tf.concat([2 * tf.range(n) + 1, 2 * places], axis=0)   # an insert at p sorts just before word p
    merged = tf.concat([words, tf.gather(words, sources)], axis=0)
    return tf.gather(merged, tf.argsort(keys, stable=True))


def eda_text(text: tf.Tensor, seed: tf.Tensor, rate: float = DEFAULT_RATE) -> tf.Tensor:
    """One scalar string -> the same text, or (with ``AUGMENT_PROBABILITY``) one random EDA operation on it.

    Words are whitespace-separated; the result joins them with single spaces
    (which the WordPiece tokenizer treats like any whitespace).
    """
    words = tf.strings.split(text)
    n = tf.size(words)
    k = _changes(n, rate)
    apply = tf.random.stateless_uniform([], _seed(seed, 1)) < AUGMENT_PROBABILITY
    operation = tf.random.stateless_uniform([], _seed(seed, 2), minval=_SWAP, maxval=_INSERT + 1, dtype=tf.int32)
    operation = tf.where(apply & (n >= 2), operation, _KEEP)   # one word: nothing label-preserving to do
    changed = tf.switch_case(operation, [
        lambda: words,
        lambda: _swap(words, n, k, seed),
        lambda: _delete(words, n, rate, seed),
        lambda: _insert(words, n, k, seed),
    ])
    return tf.cond(tf.equal(operation, _KEEP), lambda: text,
                   lambda: tf.strings.reduce_join(changed, separator=" "))


def cutoff_features(features: Dict[str, tf.Tensor], seed: tf.Tensor,
                    rate: float = DEFAULT_RATE) -> Dict[str, tf.Tensor]:
    """One encoded example -> the same, or (with ``AUGMENT_PROBABILITY``) with a random span of its word pieces
    masked out of attention. [CLS] and the final [SEP] are never cut, so the pooled output stays defined."""
    mask = features["attention_mask"]
    inner = tf.shape(mask)[0] - 2
    span = _changes(inner, rate)
    start = 1 + tf.random.stateless_uniform([], _seed(seed, 21), minval=0,
                                            maxval=tf.maximum(inner - span + 1, 1), dtype=tf.int32)
    positions = tf.range(tf.shape(mask)[0])
    hidden = (positions >= start) & (positions < start + span)
    apply = (tf.random.stateless_uniform([], _seed(seed, 22)) < AUGMENT_PROBABILITY) & (inner >= 2)
    out = dict(features)
    out["attention_mask"] = tf.where(apply & hidden, tf.zeros_like(mask), mask)
    return out


def eda_element(texts: Tuple[tf.Tensor, ...], seed: tf.Tensor, rate: float) -> Tuple[tf.Tensor, ...]:
    """EDA on each text of an element (a sentence, or both sentences of a pair, drawn independently)."""
    return tuple(eda_text(text, seed + 7919 * i, rate) for i, text in enumerate(texts))
