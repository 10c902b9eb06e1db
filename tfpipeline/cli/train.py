"""``tfpipeline train``: the run (data, fit, best epoch, evaluation, model folder) is ``trainer.train``."""
from __future__ import annotations

from tfpipeline.config import TrainConfig
from tfpipeline.training.trainer import train


def run(config: TrainConfig, args) -> int:
    train(config)  # prints its own header, progress and report
    return 0
