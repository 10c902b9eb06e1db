"""One training process for tests/test_distributed.py: ``train`` with the options given, plus what the tests observe.

    python tests/distributed_worker.py OPTIONS.json RESULT.json [--kill-at EPOCH:STEP:SIGNAL] [--shard-check]

OPTIONS.json holds ``train`` keyword options. TF_CONFIG (set by the test) makes it a
worker of a cluster when ``strategy`` is ``multiworker``. The process records, in
RESULT.json: where training started (epoch, step: > 0 after a resume), the optimizer's
step count at the end, its weights at the end of ``fit`` and after ``train`` (.npz beside
RESULT.json), and with ``--shard-check`` the examples each worker's replica received in
one epoch of the trainer's own training dataset, distributed the way Keras ``fit``
distributes it. ``--kill-at`` sends this process a signal when that step begins
(SIGKILL: a crash; SIGINT: Ctrl-C).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time

import tfpipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import tf_keras

from tfpipeline.training.effective_recipe import resolve_recipe
from tfpipeline.training.strategy import get_strategy, shard_by_element
from tfpipeline.training.trainer import as_train_config, data_for, label_map_for, task_inputs, train


class Observer(tf_keras.callbacks.Callback):
    """Where training started, the step count and weights at the end of ``fit``; optionally a signal."""

    def __init__(self, kill_at=None):
        super().__init__()
        self.kill_at, self.epoch, self.started_at, self.iterations, self.weights = kill_at, 0, None, None, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.started_at is None:
            self.started_at = [int(self.epoch), int(batch)]
            print(f"[worker] first step: epoch {self.epoch} step {batch} at {time.time():.1f}", flush=True)
        if self.kill_at and (self.epoch, batch) == self.kill_at[:2]:
            os.kill(os.getpid(), self.kill_at[2])

    def on_train_end(self, logs=None):
        self.iterations = int(self.model.optimizer.iterations.numpy())
        self.weights = self.model.get_weights()


def consumed_examples(cfg, strategy) -> dict:
    """One epoch of the trainer's training dataset as Keras ``fit`` distributes it: each local replica's
    examples (input ids without padding), and the whole undistributed epoch."""
    cfg = dataclasses.replace(cfg, bucket=True)   # the default pipeline: length buckets, uneven last batches
    data = data_for(cfg)
    labels = label_map_for(data)
    recipe = resolve_recipe(cfg, data, labels, replicas=strategy.num_replicas_in_sync, static_shapes=False)
    batch = recipe.config.batch_size * strategy.num_replicas_in_sync
    dataset = task_inputs(recipe.config, data, labels, recipe, batch, False).train

    def rows(ids):
        return [" ".join(map(str, row[row > 0].tolist())) for row in ids.numpy()]

    mine = []
    for features, _ in strategy.experimental_distribute_dataset(shard_by_element(dataset)):
        for ids in strategy.experimental_local_results(features["input_ids"]):
            mine += rows(ids)
    everything = [r for features, _ in dataset for r in rows(features["input_ids"])]
    return {"mine": mine, "all": everything}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("options")
    parser.add_argument("result")
    parser.add_argument("--kill-at")
    parser.add_argument("--shard-check", action="store_true")
    args = parser.parse_args()
    with open(args.options, encoding="utf-8") as f:
        options = json.load(f)
    cfg = as_train_config(None, options)
    print(f"[worker] started at {time.time():.1f}", flush=True)
    strategy = get_strategy(cfg.strategy)   # before any other TensorFlow op (MultiWorkerMirroredStrategy)
    print(f"[worker] strategy ready at {time.time():.1f}", flush=True)
    result = {}
    if args.shard_check:
        result["shards"] = consumed_examples(cfg, strategy)
    kill_at = None
    if args.kill_at:
        epoch, step, name = args.kill_at.split(":")
        kill_at = (int(epoch), int(step), getattr(signal, name))
    observer = Observer(kill_at)
    trained = train(cfg, strategy=strategy, callbacks=[observer])
    print(f"[worker] train returned at {time.time():.1f}", flush=True)
    stem = os.path.splitext(args.result)[0]
    np.savez(stem + "_fit.npz", *observer.weights)
    np.savez(stem + "_final.npz", *trained.bundle.model.get_weights())
    result.update(started_at=observer.started_at, iterations=observer.iterations, output_dir=trained.output_dir,
                  history={k: [float(x) for x in v] for k, v in trained.history.items()}, pid=os.getpid())
    with open(args.result, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
