"""``tfpipeline tune``: ``tuner.tune`` searches; ``--retrain-best`` trains its best config for real.

In a distributed search only the chief knows the best config, so only the chief retrains.
"""
from __future__ import annotations

from tfpipeline.training.trainer import train
from tfpipeline.training.tuner import tune


def run(config, args) -> int:
    """``config.train`` is the base ``TrainConfig`` of every trial, ``config.tune`` the ``TuneConfig``."""
    result = tune(config.train, config.tune)
    if args.retrain_best and result.best_config is None:
        print("[tfpipeline] --retrain-best: the chief retrains the best config; nothing to do on a worker")
    elif args.retrain_best:
        train(result.best_config, overwrite=True)
    return 0
