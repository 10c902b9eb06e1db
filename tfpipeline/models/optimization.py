"""AdamW with linear warmup + linear decay and global-norm clipping (the BERT fine-tuning recipe)."""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from tfpipeline.errors import ConfigError

# Normalisation scales/offsets and biases are not decayed: BERT's LayerNorm, ViT's layernorm_* and
# MobileNetV2's BatchNorm all name theirs gamma/beta.
NO_DECAY = ["LayerNorm", "layer_norm", "gamma", "beta", "bias"]


@tf_keras.utils.register_keras_serializable(package="tfpipeline")
class WarmupLinearDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """0 -> ``peak`` over ``warmup_steps``, then linearly down to ``end`` at ``total_steps``."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, end: float = 0.0):
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.end = float(end)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        warmup_lr = self.peak * tf.minimum(step + 1.0, warm) / warm
        decay_steps = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        decay_lr = self.peak + (self.end - self.peak) * progress
        if self.warmup_steps == 0:
            return decay_lr
        return tf.where(step < self.warmup_steps, warmup_lr, decay_lr)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "end": self.end}


@tf_keras.utils.register_keras_serializable(package="tfpipeline")
class AnnealableWarmupLinearDecay(WarmupLinearDecay):
    """``WarmupLinearDecay`` that can be cut short: after ``start_anneal(step)`` the planned rate is multiplied
    by a factor falling linearly from 1 to 0 over ``anneal_steps``.

    For runs whose length is decided while they train (``epochs: auto``): the
    decay is planned over the epoch cap, so a run that early stopping ends
    before the cap would otherwise stop at a still-high rate, never annealed.
    ``training.callbacks.AnnealOnPlateau`` calls ``start_anneal`` for one last
    epoch instead. The start step lives in a variable that the compiled train
    step reads, so starting the anneal needs no retrace.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, end: float = 0.0,
                 anneal_steps: int = 1):
        super().__init__(peak, total_steps, warmup_steps, end)
        self.anneal_steps = max(int(anneal_steps), 1)
        self.anneal_start = tf.Variable(-1.0, trainable=False, dtype=tf.float32, name="anneal_start")

    def start_anneal(self, step: int) -> None:
        """From optimizer step ``step`` (the next one taken), fall to 0 over ``anneal_steps`` steps."""
        self.anneal_start.assign(float(step))

    @property
    def annealing(self) -> bool:
        return bool(self.anneal_start.numpy() >= 0)

    def __call__(self, step):
        planned = super().__call__(step)
        start = tf.convert_to_tensor(self.anneal_start)
        left = tf.clip_by_value(1.0 - (tf.cast(step, tf.float32) - start) / float(self.anneal_steps), 0.0, 1.0)
        return tf.where(start >= 0.0, planned * left, planned)

    def get_config(self):
        return {**super().get_config(), "anneal_steps": self.anneal_steps}


def create_optimizer(learning_rate: float, total_steps: int, *, warmup_ratio: float = 0.1,
                     weight_decay: float = 0.01, clip_norm: float | None = 1.0,
                     anneal_steps: int | None = None) -> tf_keras.optimizers.Optimizer:
    """AdamW (tf_keras) on a warmup/decay schedule; LayerNorm and bias weights are not decayed.

    The warmup is ``warmup_ratio`` of ``total_steps``; the rate then decays
    linearly to 0 at ``total_steps`` (``WarmupLinearDecay``). With
    ``anneal_steps`` (``epochs: auto``) the schedule can also be cut short:
    ``schedule_of(optimizer).start_anneal`` (``AnnealableWarmupLinearDecay``).
    """
    if learning_rate <= 0:
        raise ConfigError(f"learning_rate must be > 0, got {learning_rate}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    warmup_steps = int(round(total_steps * warmup_ratio))
    schedule = (WarmupLinearDecay(learning_rate, total_steps, warmup_steps) if anneal_steps is None
                else AnnealableWarmupLinearDecay(learning_rate, total_steps, warmup_steps, anneal_steps=anneal_steps))
    optimizer = tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6,
                                          global_clipnorm=clip_norm or None)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def schedule_of(optimizer: tf_keras.optimizers.Optimizer):
    """The schedule object an optimizer was built with (tf_keras's ``learning_rate`` property returns the
    current rate instead, and there is no public accessor), or None for a constant rate."""
    schedule = getattr(optimizer, "_learning_rate", None)
    return schedule if isinstance(schedule, tf_keras.optimizers.schedules.LearningRateSchedule) else None
