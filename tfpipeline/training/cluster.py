"""``TF_CONFIG`` for a cluster of training workers: what ``MultiWorkerMirroredStrategy`` reads to find its peers.

Every worker of a multi-worker run gets the same ``cluster`` (the ``host:port``
of every worker, in the same order) and its own ``task`` index; worker 0 is the
chief, the one that writes the model folder (a cluster spec with a ``chief``
job, as Vertex AI writes it, makes that task the chief instead). Cluster
managers (Kubernetes operators, Vertex AI custom jobs) set ``TF_CONFIG``
themselves; these helpers are for machines you start by hand and for trying a
cluster out on one machine with loopback workers (``tfpipeline cluster-config``).

No TensorFlow here: printing a cluster configuration should not load it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any, Dict, List, Optional, Sequence

from tfpipeline.errors import ConfigError

TF_CONFIG = "TF_CONFIG"


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """``count`` distinct TCP ports that were free a moment ago on ``host``.

    The OS picks them (bind to port 0); they are released before returning, so
    another program could take one before a worker binds it: start the workers
    right away, and pick new ports if a worker reports its address is in use.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


def tf_config(workers: Sequence[str], index: int) -> Dict[str, Any]:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``workers`` (``host:port`` each; 0 is the chief)."""
    workers = [check_address(w) for w in workers]
    if not workers:
        raise ConfigError("a cluster needs at least one worker address (host:port)")
    if len(set(workers)) != len(workers):
        raise ConfigError(f"worker addresses must be distinct: {', '.join(workers)}")
    if not 0 <= index < len(workers):
        raise ConfigError(f"worker index {index} is outside the cluster's {len(workers)} workers (0..{len(workers) - 1})")
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}


def local_cluster(count: int, host: str = "127.0.0.1") -> List[str]:
    """``host:port`` of ``count`` workers on this machine, on free ports."""
    if count < 1:
        raise ConfigError(f"a cluster needs at least one worker, got {count}")
    return [f"{host}:{port}" for port in free_ports(count, host)]


def local_tf_configs(count: int, host: str = "127.0.0.1") -> List[str]:
    """One ``TF_CONFIG`` value (JSON) per worker of a ``count``-worker cluster on this machine."""
    workers = local_cluster(count, host)
    return [json.dumps(tf_config(workers, i)) for i in range(count)]


def check_address(address: str) -> str:
    """``host:port`` with a numeric port, else ``ConfigError``."""
    host, sep, port = str(address).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"worker address {address!r}: expected host:port, e.g. 10.0.0.5:2222")
    return f"{host}:{port}"


def cluster_from_env(environ: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The parsed ``TF_CONFIG`` of this process; ``ConfigError`` when it is missing or malformed.

    ``--strategy multiworker`` without it would silently train alone, so the
    trainer asks for it first and names what is wrong.
    """
    raw = (os.environ if environ is None else environ).get(TF_CONFIG)
    if not raw:
        raise ConfigError("--strategy multiworker needs the TF_CONFIG environment variable (the cluster and this "
                          "worker's index; `tfpipeline cluster-config` prints it, docs/distributed.md explains it)")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError('TF_CONFIG needs "cluster" and "task" mappings, e.g. {"cluster": {"worker": '
                          '["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}')
    jobs = {name: list(addresses) for name, addresses in cluster.items()}
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in jobs or not isinstance(index, int) or not 0 <= index < len(jobs[kind]):
        raise ConfigError(f"TF_CONFIG task {task} is not in its cluster {jobs}")
    return config


def describe_task(config: Dict[str, Any]) -> str:
    """``worker 1 of 2`` / ``chief`` for log lines."""
    task, cluster = config["task"], config["cluster"]
    total = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
    return f"{task['type']} {task.get('index', 0)} ({total} training tasks)"
