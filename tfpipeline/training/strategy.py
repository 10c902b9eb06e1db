"""Pick a ``tf.distribute`` strategy by name (default, mirrored, multiworker, tpu, auto)."""
from __future__ import annotations

from typing import Optional

from tfpipeline import _env  # noqa: F401

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")


def get_strategy(name: str = "default", tpu: Optional[str] = None) -> tf.distribute.Strategy:
    """Create the strategy; ``auto`` = TPU if one is reachable, else all GPUs, else the default."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (use {', '.join(STRATEGIES)})")
    if name == "auto":
        try:
            return _tpu_strategy(tpu)
        except (ValueError, RuntimeError, tf.errors.OpError):
            gpus = tf.config.list_logical_devices("GPU")
            return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
    return _tpu_strategy(tpu)


def _tpu_strategy(tpu: Optional[str]) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))
