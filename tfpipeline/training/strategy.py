"""Pick a ``tf.distribute`` strategy by name (default, mirrored, multiworker, tpu, auto); size TF's thread pools."""
from __future__ import annotations

from typing import Optional, Tuple

import tensorflow as tf

from tfpipeline.errors import ConfigError

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


def set_tf_threads(intra_op: Optional[int] = None, inter_op: Optional[int] = None) -> Tuple[int, int]:
    """Size TF's thread pools, as TF Serving's --tensorflow_{intra,inter}_op_parallelism do; 0/None = TF default.

    Must run before TensorFlow executes its first op (``ConfigError`` otherwise, and for negative values).
    Returns the values in force (0 = TF's default, all cores).
    """
    for value, name in ((intra_op, "--intra-op-threads"), (inter_op, "--inter-op-threads")):
        if value is not None and value < 0:
            raise ConfigError(f"{name} must be >= 0 (0 = TensorFlow's default), got {value}")
    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as e:  # TF already ran an op in this process
        raise ConfigError(f"cannot set TensorFlow threads now: {e}") from None
    return (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())
