"""Back up a run's training state so an interrupted ``train`` resumes (``--resume``), on one machine or many.

The backup is Keras's own ``BackupAndRestore`` (TensorFlow's fault-tolerance
mechanism for ``fit``, multi-worker included): weights, optimizer state, epoch
and step, in ``<run folder>/backup``. What it does not hold is kept by the run
folder itself and read back here: ``history.csv`` (the scores of the epochs
already run, which decide the best epoch and early stopping) and
``checkpoints/best`` (the best epoch's weights so far). The run folder is the
chief's ``<output_dir>.partial``; on a cluster every worker reads it (shared
storage), only the chief writes it.

A resumed run continues from the last backup: with backups at epoch ends
(the default) it ends with the model an uninterrupted run would have (seeded
data order included, see ``skip_epochs``; dropout masks are the exception, as
TensorFlow's random kernels restart with the process). A backup inside an epoch
(``backup_every``) restarts that epoch's data from its beginning for the steps
left, as ``BackupAndRestore`` does.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf
import tf_keras

from tfpipeline.errors import ConfigError

BACKUP_DIR = "backup"
HISTORY_FILE = "history.csv"
RUN_OPTIONS_FILE = "run_options.json"
# Options that may differ between an interrupted run and its resumption (they do not change what is trained).
FREE_ON_RESUME = ("resume", "overwrite", "verbose", "extra")


class RunBackup(tf_keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that backs up at every epoch's end, and also every ``every`` steps inside epochs.

    Keras's step-based backup skips epoch ends and may fall on an epoch's last
    step, before that epoch's row in ``history.csv`` and its best-weights
    checkpoint exist; a run resumed from there would lose the epoch's score.
    Here the last step never backs up and the epoch's end always does (put this
    callback last, so the others have finished the epoch when it does). Steps
    are counted within each epoch, and a backup records the last step done,
    also when ``steps_per_execution`` runs several steps per call.
    """

    def __init__(self, backup_dir: str, every: int = 0):
        super().__init__(backup_dir, save_freq=every if every else "epoch", delete_checkpoint=True)
        self.every, self.steps_done = every, 0

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.steps_done = 0

    def on_train_batch_end(self, batch, logs=None):
        self._training_state.backup_if_preempted()
        steps = (self.params or {}).get("steps")
        if not self.every or (steps and batch + 1 >= steps):
            return   # the epoch's end backs up
        if (batch + 1) // self.every > self.steps_done // self.every:
            self._training_state._ckpt_saved_batch.assign(batch)
            self._backup(epoch=self._current_epoch, batch=batch)
        self.steps_done = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        steps = (self.params or {}).get("steps")
        if steps:
            self._training_state._ckpt_saved_batch.assign(steps - 1)   # the epoch is done: resume at the next
        self._backup(epoch=epoch)


def backup_dir(run_dir: str) -> str:
    return os.path.join(run_dir, BACKUP_DIR)


def has_backup(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a backup a run could resume from."""
    return tf.train.latest_checkpoint(os.path.join(backup_dir(run_dir), "chief")) is not None


def backed_up_position(run_dir: str, steps_per_epoch: int, every: int = 0) -> Optional[Tuple[int, int]]:
    """(epoch, step), 0-based, where ``fit`` will continue from the backup in ``run_dir``; None without one.

    The same rule ``BackupAndRestore`` applies when it restores (read here
    first, so the history and data order can be prepared before ``fit``).
    """
    path = tf.train.latest_checkpoint(os.path.join(backup_dir(run_dir), "chief"))
    if path is None:
        return None
    reader = tf.train.load_checkpoint(path)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    if every:
        if batch < 0:
            return 0, 0
        return (epoch + 1, 0) if batch == steps_per_epoch - 1 else (epoch, batch + 1)
    return (epoch + 1, 0) if epoch >= 0 else (0, 0)


def past_epochs(run_dir: str, before: int) -> List[Dict[str, float]]:
    """The logged scores of epochs ``0..before-1`` from ``run_dir/history.csv`` (rows of a redone epoch dropped)."""
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if int(row["epoch"]) < before]
    if len(rows) != before:
        raise ConfigError(f"{path}: has {len(rows)} epoch rows before epoch {before + 1}, where the backup "
                          f"continues; the run folder does not match its backup (start afresh with --overwrite)")
    return [{k: _number(v) for k, v in row.items() if k != "epoch"} for row in rows]


def keep_history(run_dir: str, before: int) -> None:
    """Cut ``history.csv`` to epochs ``0..before-1``, so the resumed run's rows follow them (chief only)."""
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [row for row in reader if int(row["epoch"]) < before]
    with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)   # other workers may be reading it


def skip_epochs(dataset: tf.data.Dataset, epochs: int) -> None:
    """Advance ``dataset``'s reshuffling past ``epochs`` epochs, so a resumed run sees the same order.

    A seeded ``shuffle(reshuffle_each_iteration=True)`` draws each epoch's
    order when an iterator is created; creating (and dropping) one per epoch
    already run reads no data.
    """
    for _ in range(epochs):
        iter(dataset)


def merged_history(past: List[Dict[str, float]], new: Dict[str, list]) -> Dict[str, list]:
    """The whole run's history: epochs before the interruption, then those ``fit`` ran."""
    if not past:
        return dict(new)
    keys = list(new) or list(past[0])
    return {k: [row.get(k, float("nan")) for row in past] + list(new.get(k, [])) for k in keys}


def write_run_options(run_dir: str, options: Dict[str, Any]) -> None:
    """Record the options a run started with, to check a later ``--resume`` against them."""
    with open(os.path.join(run_dir, RUN_OPTIONS_FILE), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in options.items() if k not in FREE_ON_RESUME}, f, indent=2, default=str)


def check_run_options(run_dir: str, options: Dict[str, Any]) -> None:
    """``ConfigError`` naming each option that differs from those the interrupted run started with."""
    path = os.path.join(run_dir, RUN_OPTIONS_FILE)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        before = json.load(f)
    now = json.loads(json.dumps({k: v for k, v in options.items() if k not in FREE_ON_RESUME}, default=str))
    changed = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
               if before.get(k) != now.get(k)]
    if changed:
        raise ConfigError(f"--resume: the options differ from those of the interrupted run in {run_dir} "
                          f"({'; '.join(changed)}); resume with the same options, or start afresh with --overwrite")


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@dataclass
class Backup:
    """A run's backups: the chief's run folder (``<output_dir>.partial``, shared by all workers), how often to
    back up inside epochs (``every`` steps, 0 = epoch ends only), and whether this run continues one."""

    run_dir: str
    every: int = 0
    resume: bool = False

    def callback(self) -> RunBackup:
        return RunBackup(backup_dir(self.run_dir), self.every)

    def remove(self) -> None:
        """After training: the backup and the recorded options are not part of the model folder."""
        shutil.rmtree(backup_dir(self.run_dir), ignore_errors=True)
        if os.path.exists(os.path.join(self.run_dir, RUN_OPTIONS_FILE)):
            os.remove(os.path.join(self.run_dir, RUN_OPTIONS_FILE))

    def past(self, steps_per_epoch: int, *, chief: bool, say: Callable[..., None] = print) -> Optional[List[Dict]]:
        """A resumed run's logs of the epochs already run (``default_callbacks(past=...)``); None when fresh.

        The chief also cuts ``history.csv`` back to them (rows of an epoch the
        backup predates are redone).
        """
        position = backed_up_position(self.run_dir, steps_per_epoch, self.every) if self.resume else None
        if position is None:
            return None
        epoch, step = position
        past = past_epochs(self.run_dir, epoch)
        if chief:
            keep_history(self.run_dir, epoch)
        say(f"[tfpipeline] resuming from the backup in {backup_dir(self.run_dir)}: epoch {epoch + 1}, "
            f"step {step + 1} of {steps_per_epoch}")
        return past


def resume_decision(run_dir: str, *, resume: bool, overwrite: bool, options: Dict[str, Any],
                    say: Callable[..., None] = print) -> bool:
    """Whether this run continues the backup in ``run_dir`` (every worker decides the same, reading only).

    A backup without ``--resume`` is an error unless ``--overwrite`` (then it is
    discarded): an interrupted run is never lost by accident. ``--resume``
    without a backup starts afresh, so a restarted job can always pass it.
    """
    if has_backup(run_dir):
        if resume:
            check_run_options(run_dir, options)
            return True
        if not overwrite:
            raise ConfigError(f"{run_dir} holds the backup of an interrupted run: continue it with --resume "
                              f"(same options), or pass --overwrite to discard it and start afresh")
        say(f"[tfpipeline] --overwrite: discarding the backup of an interrupted run in {run_dir}")
    elif resume:
        say(f"[tfpipeline] --resume: no backup in {run_dir}, starting afresh")
    return False


def keep_for_resume(run_dir: str) -> bool:
    """``staged_output``'s ``keep_on_error``: keep a failed run's folder when it holds a backup, and say so."""
    if not has_backup(run_dir):
        return False
    print(f"[tfpipeline] interrupted: {run_dir} keeps the last backup; run the same command with --resume to "
          f"continue", file=sys.stderr)
    return True
