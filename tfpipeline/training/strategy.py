"""Pick a ``tf.distribute`` strategy by name (default, mirrored, multiworker, tpu, auto); size TF's thread pools.

Also the few multi-worker rules the trainer follows (TensorFlow's own, from its
multi-worker Keras guide): every worker runs the same program and the same
collective ops; only the chief (``is_chief``) keeps what it writes; datasets are
split between workers by element (``shard_by_element``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import tensorflow as tf

from tfpipeline.errors import ConfigError
from tfpipeline.training.cluster import cluster_from_env

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
        cluster_from_env()   # a clear error for a missing or malformed TF_CONFIG, instead of training alone
        return tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG; must come before any other TF op
    try:
        return _tpu_strategy(tpu)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ConfigError(f"--strategy tpu: no TPU reachable ({type(e).__name__}: {e}). On Colab choose Runtime > "
                          f"Change runtime type > TPU and install TensorFlow's TPU build (docs/tpu.md); elsewhere "
                          f"pass --tpu NAME_OR_ADDRESS") from None


def _tpu_strategy(tpu: Optional[str]) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True when ``strategy`` spans several worker processes (MultiWorkerMirroredStrategy with a cluster)."""
    return bool(strategy.extended._in_multi_worker_mode())


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process keeps what it writes: always outside a cluster; inside one, only the chief
    (worker 0, or the ``chief`` task). Keras's own checkpoint callbacks use the same test."""
    return bool(strategy.extended.should_checkpoint)


def shard_by_element(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Split ``dataset`` between workers by element rather than by file (``AutoShardPolicy.DATA``).

    The pipelines read in-memory examples, not files, so file sharding cannot
    apply (``AUTO`` would fall back to this after a warning). Every worker
    builds the same seeded, shuffled batches; each global batch is split
    between the workers, so every example is seen once per epoch and each step
    averages the same examples a single process with the same global batch
    would (tests/test_distributed.py checks both).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def broadcast_from_chief(strategy: tf.distribute.Strategy, variables: Sequence[tf.Variable]) -> None:
    """Give every worker the chief's values of ``variables`` (a collective: all workers must call it).

    After training only the chief holds the best epoch's weights (its
    checkpoint file; the other workers' copies are temporary, as TensorFlow
    prescribes): one all-reduce of the chief's values and zeros from the others
    makes every worker's model the chief's, with no shared storage needed.
    """
    chief, contributed = is_chief(strategy), []

    def local_values(context: tf.distribute.ValueContext):
        own = chief and not contributed      # one replica of the chief contributes; every other one adds zeros
        contributed.append(True)
        return [tf.convert_to_tensor(v) if own else tf.zeros(v.shape, v.dtype) for v in variables]

    values = strategy.experimental_distribute_values_from_function(local_values)
    summed = strategy.run(_sum_over_replicas, args=(values,))
    for variable, value in zip(variables, summed):
        variable.assign(strategy.experimental_local_results(value)[0])


def sync_workers(strategy: tf.distribute.Strategy) -> None:
    """Return only when every worker has called it (a one-number all-reduce)."""
    strategy.run(_sum_over_replicas, args=(tf.ones([]),))


def _sum_over_replicas(values):
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)


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
