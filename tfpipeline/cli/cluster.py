"""``tfpipeline cluster``: print each worker's TF_CONFIG (``training.cluster``); no TensorFlow is loaded.

Without ``--index`` one shell assignment per worker, to prefix that worker's
``tfpipeline train --strategy multiworker ...`` command; with it, that worker's
JSON alone.
"""
from __future__ import annotations

import json

from tfpipeline.training.cluster import local_cluster, tf_config


def run(config, args) -> int:
    workers = local_cluster(config.workers) if config.workers else list(config.hosts)
    if config.index is not None:
        print(json.dumps(tf_config(workers, config.index)))
        return 0
    for i in range(len(workers)):
        print(f"# worker {i}{' (chief: writes the model folder)' if i == 0 else ''}")
        print(f"TF_CONFIG='{json.dumps(tf_config(workers, i))}'")
    return 0
