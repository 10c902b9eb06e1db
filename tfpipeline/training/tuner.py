"""Hyperparameter search with KerasTuner over learning rate, batch size and more.

KerasTuner 1.4.8 type-checks models against Keras 3 and rejects tf_keras
models, so the tuners here override ``run_trial``: each trial builds its
``TrainConfig`` from the hyperparameters and calls ``fit_model`` itself (that
is also where batch size becomes tunable: it shapes the tf.data pipeline).

Search state lives in ``<directory>/<project_name>``: running the same search
again resumes it and skips finished trials. Distributed tuning uses
KerasTuner's own chief/worker variables (``KERASTUNER_TUNER_ID``,
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``), see docs/tuning.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import keras_tuner as kt
import tf_keras
import yaml

from tfpipeline.config import TrainConfig, TuneConfig, make_config
from tfpipeline.data.examples import TaskData
from tfpipeline.errors import ConfigError
from tfpipeline.models.checkpoint_recipes import recipe_for
from tfpipeline.training.callbacks import SELECTION_METRIC
from tfpipeline.training.trainer import data_for, fit_model

BEST_CONFIG = "best_config.yaml"
TRIALS_FILE = "trials.json"


def define_search_space(hp: kt.HyperParameters, tune: TuneConfig) -> Dict[str, Any]:
    """Declare the hyperparameters on ``hp`` and return this trial's values as TrainConfig overrides."""
    values: Dict[str, Any] = {
        "learning_rate": hp.Float("learning_rate", tune.learning_rate_min, tune.learning_rate_max,
                                  sampling="log"),
        "batch_size": hp.Choice("batch_size", sorted(set(int(b) for b in tune.batch_sizes))),
    }
    if "warmup_ratio" in tune.also_tune:
        values["warmup_ratio"] = hp.Choice("warmup_ratio", [0.0, 0.06, 0.1, 0.2])
    if "weight_decay" in tune.also_tune:
        values["weight_decay"] = hp.Choice("weight_decay", [0.0, 0.01, 0.1])
    if "dropout" in tune.also_tune:
        values["dropout"] = hp.Choice("dropout", [0.0, 0.1, 0.2])
    if "epochs" in tune.also_tune:
        values["epochs"] = hp.Int("epochs", 1, tune.max_epochs)
    if "tuner/epochs" in hp.values:  # Hyperband hands each trial its epoch budget
        values["epochs"] = int(hp.values["tuner/epochs"])
    return values


class _StepCounter(tf_keras.callbacks.Callback):
    """Counts optimizer steps in the first epoch (proves the batch size really changed)."""

    def __init__(self):
        super().__init__()
        self.steps, self._epoch = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == 0:
            self.steps += 1


class FineTuneSearch:
    """Mixin: a KerasTuner tuner whose trials fine-tune with ``fit_model``."""

    def __init__(self, *, base: TrainConfig, tune: TuneConfig, data: TaskData, **kwargs):
        self.base, self.tune, self.data = base, tune, data
        super().__init__(**kwargs)

    def run_trial(self, trial, *args, **kwargs):
        overrides = define_search_space(trial.hyperparameters, self.tune)
        cfg = dataclasses.replace(self.base, **overrides)
        run_dir = os.path.join(self.project_dir, f"trial_{trial.trial_id}", "run")
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        counter = _StepCounter()
        started = time.perf_counter()
        result = fit_model(cfg, self.data, run_dir, callbacks=[counter], say=lambda *a, **k: None)
        history = result.history
        if self.tune.objective not in history:
            raise ConfigError(f"objective {self.tune.objective!r} not among the metrics {sorted(history)}")
        best = max(history[self.tune.objective]) if maximise(self.tune.objective) \
            else min(history[self.tune.objective])
        return {self.tune.objective: float(best), "trial_seconds": time.perf_counter() - started,
                "train_steps_epoch1": float(counter.steps)}


class RandomSearchTuner(FineTuneSearch, kt.RandomSearch):
    pass


class BayesianTuner(FineTuneSearch, kt.BayesianOptimization):
    pass


class HyperbandTuner(FineTuneSearch, kt.Hyperband):
    pass


def with_task_defaults(tune: TuneConfig, base: TrainConfig, task: str) -> TuneConfig:
    """``tune`` with its ``auto`` values filled: the learning-rate range around the checkpoint recipe's
    rate for ``task`` (/4 to x2; a given bound stays, the other is kept on its side of it) and the
    task's validation score as the objective."""
    rate = recipe_for(base.model, task).learning_rate(task)
    low = tune.learning_rate_min or min(rate / 4, tune.learning_rate_max or rate)
    high = tune.learning_rate_max or max(rate * 2, low)
    return dataclasses.replace(tune, learning_rate_min=low, learning_rate_max=high,
                               objective=tune.objective or SELECTION_METRIC.get(task, "val_accuracy")).validate()


def maximise(objective: str) -> bool:
    return "loss" not in objective


def make_tuner(base: TrainConfig, tune: TuneConfig, data: TaskData) -> FineTuneSearch:
    tune = with_task_defaults(tune.validate(), base, data.task)
    direction = "max" if maximise(tune.objective) else "min"
    common = dict(base=base, tune=tune, data=data, objective=kt.Objective(tune.objective, direction),
                  directory=tune.directory, project_name=tune.project_name, overwrite=tune.overwrite,
                  seed=tune.seed)
    if tune.algorithm == "random":
        return RandomSearchTuner(max_trials=tune.max_trials, **common)
    if tune.algorithm == "bayesian":
        return BayesianTuner(max_trials=tune.max_trials, **common)
    return HyperbandTuner(max_epochs=tune.max_epochs, factor=3, hyperband_iterations=1, **common)


@dataclass
class TuneResult:
    trials: List[Dict[str, Any]]
    best_config: TrainConfig
    best_config_path: str
    tuner: FineTuneSearch


def trial_table(tuner: FineTuneSearch) -> List[Dict[str, Any]]:
    """One row per trial: id, status, hyperparameters, objective, seconds."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        def metric(name):
            return trial.metrics.get_best_value(name) if trial.metrics.exists(name) else None
        rows.append({"trial": trial_id, "status": trial.status,
                     "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                         if not k.startswith("tuner/")},
                     tuner.tune.objective: metric(tuner.tune.objective),
                     "seconds": metric("trial_seconds"), "train_steps_epoch1": metric("train_steps_epoch1")})
    return rows


def format_trials(rows: Sequence[Dict[str, Any]], objective: str) -> str:
    names = sorted({k for r in rows for k in r["hyperparameters"]})
    header = f"{'trial':<8}{'status':<11}" + "".join(f"{n:>15}" for n in names) + f"{objective:>15}{'seconds':>10}"
    lines = [header]
    for r in rows:
        cells = "".join(f"{_fmt(r['hyperparameters'].get(n)):>15}" for n in names)
        lines.append(f"{r['trial'][:7]:<8}{r['status'][:10]:<11}{cells}{_fmt(r[objective]):>15}"
                     f"{_fmt(r['seconds'], 1):>10}")
    return "\n".join(lines)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 else f"{value:.{digits}f}"
    return str(value)


def tune(base: Union[TrainConfig, Dict[str, Any], None] = None, tune_config: Union[TuneConfig, Dict, None] = None,
         *, data: Optional[TaskData] = None, verbose: bool = True) -> TuneResult:
    """Run (or resume) a search, print the trial table and save the best config as YAML."""
    base = make_config(TrainConfig, base) if isinstance(base, dict) else (base or TrainConfig())
    tune_cfg = make_config(TuneConfig, tune_config) if isinstance(tune_config, dict) else (tune_config or TuneConfig())
    tune_cfg.validate()
    base = dataclasses.replace(base, verbose=0, epochs=min(base.epochs or tune_cfg.max_epochs,
                                                           tune_cfg.max_epochs)).validate()
    data = data or data_for(base)
    tuner = make_tuner(base, tune_cfg, data)
    tune_cfg = tuner.tune
    tuner.search()
    rows = trial_table(tuner)
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best = dataclasses.replace(base, verbose=1, **define_search_space(best_hp, tune_cfg))
    out_dir = tuner.project_dir
    best_path = os.path.join(out_dir, BEST_CONFIG)
    with open(best_path, "w", encoding="utf-8") as f:
        yaml.safe_dump({k: v for k, v in best.to_dict().items() if k != "extra"}, f, sort_keys=False)
    with open(os.path.join(out_dir, TRIALS_FILE), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2, default=str)
    if verbose:
        print(format_trials(rows, tune_cfg.objective))
        print(f"[tfpipeline] best hyperparameters saved to {best_path} "
              f"(reuse: tfpipeline train --config {best_path})")
    return TuneResult(rows, best, best_path, tuner)
