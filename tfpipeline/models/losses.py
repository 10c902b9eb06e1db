"""Losses and metrics that understand the ``-100`` ignore label of NER batches."""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import tensorflow as tf
import tf_keras

from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION
from tfpipeline.data.tokenization import IGNORE_INDEX
from tfpipeline.errors import ConfigError


@tf_keras.utils.register_keras_serializable(package="tfpipeline")
class MaskedSparseCategoricalCrossentropy(tf_keras.losses.Loss):
    """Per-example mean cross-entropy over positions whose label is not ``IGNORE_INDEX``."""

    def __init__(self, name: str = "masked_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        mask = tf.cast(tf.not_equal(y_true, IGNORE_INDEX), y_pred.dtype)
        safe = tf.where(y_true == IGNORE_INDEX, 0, y_true)
        per_token = tf_keras.losses.sparse_categorical_crossentropy(safe, y_pred, from_logits=True)
        return tf.reduce_sum(per_token * mask, axis=-1) / tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)


@tf_keras.utils.register_keras_serializable(package="tfpipeline")
class MaskedAccuracy(tf_keras.metrics.Mean):
    """Token accuracy over labelled positions (a training signal; NER is *scored* with seqeval)."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        mask = tf.not_equal(y_true, IGNORE_INDEX)
        hits = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int32), y_true), tf.float32)
        return super().update_state(tf.boolean_mask(hits, mask))


class PearsonCorrelation(tf_keras.metrics.Metric):
    """Pearson correlation of predictions with targets over the whole epoch (mean over targets).

    Streaming sums, so it is exact over all batches, not an average of per-batch correlations;
    the ``regression`` task's validation score (it does not care about the targets' scale).
    """

    def __init__(self, name: str = "pearson", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sums = {key: self.add_weight(name=key, shape=(), initializer="zeros", dtype=tf.float64)
                     for key in ("n", "x", "y", "xx", "yy", "xy")}

    def update_state(self, y_true, y_pred, sample_weight=None):
        y, x = tf.cast(y_true, tf.float64), tf.cast(y_pred, tf.float64)
        n = tf.cast(tf.shape(x)[0], tf.float64)
        for key, value in (("n", n), ("x", x), ("y", y), ("xx", x * x), ("yy", y * y), ("xy", x * y)):
            self.sums[key].assign_add(value if key == "n" else tf.reduce_sum(tf.reduce_mean(value, axis=-1)))

    def result(self):
        s = self.sums
        n = tf.maximum(s["n"], 1.0)
        cov = s["xy"] / n - s["x"] / n * s["y"] / n
        var_x = s["xx"] / n - tf.square(s["x"] / n)
        var_y = s["yy"] / n - tf.square(s["y"] / n)
        return tf.cast(cov / tf.sqrt(tf.maximum(var_x * var_y, 1e-12)), tf.float32)

    def reset_state(self):
        for variable in self.sums.values():
            variable.assign(0.0)


LossFactory = Callable[[], Tuple[tf_keras.losses.Loss, List[tf_keras.metrics.Metric]]]
TASK_LOSSES: Dict[str, LossFactory] = {}


def register_task_loss(task: str, factory: LossFactory) -> None:
    """Declare the (loss, metrics) a task compiles with; its validation score is ``SELECTION_METRIC``'s entry
    (``training.callbacks``)."""
    TASK_LOSSES[task] = factory


def _class_loss():
    return (tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


register_task_loss(CLASSIFICATION, _class_loss)
register_task_loss(IMAGE_CLASSIFICATION, _class_loss)
register_task_loss(EMBEDDING, _class_loss)   # over in-batch candidates: see models.embedding_model
# standardised targets (see data.pipeline.TargetScaling): MSE, and Pearson as the validation score
register_task_loss(REGRESSION, lambda: (tf_keras.losses.MeanSquaredError(), [PearsonCorrelation()]))
register_task_loss(NER, lambda: (MaskedSparseCategoricalCrossentropy(), [MaskedAccuracy()]))


def loss_and_metrics(task: str):
    """(loss, metrics) for ``compile``; the metric is named ``accuracy`` for every classification-like task
    (``pearson`` for regression)."""
    if task not in TASK_LOSSES:
        raise ConfigError(f"no loss registered for task {task!r}")
    return TASK_LOSSES[task]()
