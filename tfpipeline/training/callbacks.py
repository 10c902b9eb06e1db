"""The standard callback set: early stopping, best checkpoint, TensorBoard, CSV log."""
from __future__ import annotations

import os
from typing import List

import tf_keras

BEST_WEIGHTS = os.path.join("checkpoints", "best")


def default_callbacks(run_dir: str, *, monitor: str = "val_accuracy", mode: str = "max",
                      patience: int = 2) -> List[tf_keras.callbacks.Callback]:
    """Callbacks for ``fit``: the best weights (by ``monitor``) land in ``run_dir/checkpoints/best``."""
    callbacks = [
        tf_keras.callbacks.ModelCheckpoint(os.path.join(run_dir, BEST_WEIGHTS), monitor=monitor, mode=mode,
                                           save_best_only=True, save_weights_only=True),
        tf_keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "logs"), update_freq="epoch"),
        tf_keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv")),
    ]
    if patience and patience > 0:
        callbacks.insert(0, tf_keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    return callbacks
