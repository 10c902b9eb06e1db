"""``tfpipeline tune``: ``tuner.tune`` searches; ``--retrain-best`` trains its best config for real."""
from __future__ import annotations

from tfpipeline.training.trainer import train
from tfpipeline.training.tuner import tune


def run(config, args) -> int:
    """``config.train`` is the base ``TrainConfig`` of every trial, ``config.tune`` the ``TuneConfig``."""
    result = tune(config.train, config.tune)
    if args.retrain_best:
        train(result.best_config, overwrite=True)
    return 0
