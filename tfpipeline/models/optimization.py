"""AdamW with linear warmup + linear decay and global-norm clipping (the BERT fine-tuning recipe)."""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from tfpipeline.errors import ConfigError

NO_DECAY = ["LayerNorm", "layer_norm", "bias"]


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


def create_optimizer(learning_rate: float, total_steps: int, *, warmup_ratio: float = 0.1,
                     weight_decay: float = 0.01, clip_norm: float | None = 1.0) -> tf_keras.optimizers.Optimizer:
    """AdamW (tf_keras) on a warmup/decay schedule; LayerNorm and bias weights are not decayed."""
    if learning_rate <= 0:
        raise ConfigError(f"learning_rate must be > 0, got {learning_rate}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(round(total_steps * warmup_ratio)))
    optimizer = tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6,
                                          global_clipnorm=clip_norm or None)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
