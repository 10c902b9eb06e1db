"""Hyperparameter search with KerasTuner over learning rate, batch size and more.

KerasTuner 1.4.8 type-checks models against Keras 3 and rejects tf_keras
models, so the tuners here override ``run_trial``: each trial builds its
``TrainConfig`` from the hyperparameters and calls ``fit_model`` itself (that
is also where batch size becomes tunable: it shapes the tf.data pipeline).

Search state lives in ``<directory>/<project_name>``: running the same search
again resumes it and skips finished trials.

Distributed tuning is KerasTuner's own chief/worker mode (``tune(...,
distributed="chief"|"worker")``, or its ``KERASTUNER_TUNER_ID``,
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT`` variables): the chief
holds the oracle and answers the workers over gRPC with KerasTuner's servicer;
each worker is a stock KerasTuner tuner whose oracle is KerasTuner's gRPC
client, asking the chief for a trial, running it here and reporting its
metrics back. Two things differ from a plain ``search()``, both for the chief's
sake:

* the search space is declared on the oracle before any trial starts (in one
  process too, where the first trial is now sampled like the others instead of
  running on the defaults). ``run_trial`` declares hyperparameters as it reads
  them, so an oracle that has seen no finished trial would know an empty space,
  and a second worker asking while the first trial runs would get the same
  empty values, a duplicate, and be told to stop;
* the chief runs KerasTuner's servicer in its own wait loop (``serve_oracle``)
  instead of ``oracle_chief.start_server``: that one polls every 20 s once the
  search is done, and it does not say which worker ran which trial; ours
  polls every half second and records the worker of each trial for the table.

Only the chief holds every trial's metrics, so only the chief prints the trial
table and writes ``trials.json`` and ``best_config.yaml``; a worker prints the
trials it ran. See docs/tuning.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import grpc
import keras_tuner as kt
import tf_keras
import yaml
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief
from keras_tuner.src.engine import trial as trial_module

from tfpipeline.config import TrainConfig, TuneConfig, make_config
from tfpipeline.config.train import split_address
from tfpipeline.data.catalog import list_datasets
from tfpipeline.data.examples import TaskData
from tfpipeline.errors import ConfigError
from tfpipeline.models.checkpoint_recipes import recipe_for
from tfpipeline.training.callbacks import SELECTION_METRIC
from tfpipeline.training.trainer import data_for, fit_model

BEST_CONFIG = "best_config.yaml"
TRIALS_FILE = "trials.json"
WORKERS_FILE = "trial_workers.json"   # chief: which worker ran each trial (kept across restarts of the chief)
CHIEF, WORKER = "chief", "worker"
ORACLE_IP, ORACLE_PORT, TUNER_ID = "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"
CHIEF_POLL_SECONDS = 0.5


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
    """Mixin: a KerasTuner tuner whose trials fine-tune with ``fit_model``.

    ``data`` may be None on a distributed search's chief, which runs no trial.
    ``trials_run`` lists the trials this process ran (a worker's report).
    """

    def __init__(self, *, base: TrainConfig, tune: TuneConfig, data: Optional[TaskData], **kwargs):
        self.base, self.tune, self.data = base, tune, data
        self.trials_run: List[Dict[str, Any]] = []
        self._metrics: Dict[str, Dict[str, float]] = {}
        super().__init__(**kwargs)
        if not self._is_worker():   # the oracle is here: declare the whole space before the first trial
            space = self.oracle.get_space()
            define_search_space(space, self.tune)
            self.oracle.update_space(space)

    def on_trial_end(self, trial):
        self.trials_run.append({"trial": trial.trial_id, "status": trial.status,
                                "hyperparameters": search_values(trial.hyperparameters),
                                **row_metrics(self._metrics.pop(trial.trial_id, {}), self.tune.objective)})
        super().on_trial_end(trial)

    def run_trial(self, trial, *args, **kwargs):
        if self.data is None:
            raise ConfigError("this tuner has no data to run trials on (a distributed search's chief only "
                              "serves the oracle)")
        overrides = define_search_space(trial.hyperparameters, self.tune)
        cfg = dataclasses.replace(self.base, **overrides)
        run_dir = os.path.join(self.project_dir, f"trial_{trial.trial_id}", "run")
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        counter = _StepCounter()
        started = time.perf_counter()
        result = fit_model(cfg, self.data, run_dir, callbacks=[counter], say=lambda *a, **k: None)
        score = trial_score(result.history, result.epochs, self.tune.objective)
        metrics = {self.tune.objective: score, "trial_seconds": time.perf_counter() - started,
                   "train_steps_epoch1": float(counter.steps)}
        self._metrics[trial.trial_id] = metrics
        return metrics


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


def trial_score(history: Mapping[str, Sequence[float]], epochs: Mapping[str, Any], objective: str) -> float:
    """The trial's ``objective`` at the epoch its model keeps (``epochs["kept"]``, 1-based, from
    ``trainer.epoch_summary``), not the objective's best over all epochs: under ``epochs: auto`` the kept
    epoch may be the last one, within one standard error of the best, and the search should rank the
    models the trials produce (``best_config.yaml`` reproduces that model, not a discarded epoch)."""
    if objective not in history:
        raise ConfigError(f"objective {objective!r} not among the metrics {sorted(history)}")
    return float(history[objective][epochs["kept"] - 1])


def maximise(objective: str) -> bool:
    return "loss" not in objective


def task_of(base: TrainConfig) -> str:
    """The task of ``base``'s data without reading it (a distributed search's chief loads no data)."""
    if base.task:
        return base.task
    tasks = {info.name: info.task for info in list_datasets()}
    if base.dataset not in tasks:
        raise ConfigError(f"unknown dataset {base.dataset!r}: give a built-in dataset name, or --task with "
                          "--train-file")
    return tasks[base.dataset]


def make_tuner(base: TrainConfig, tune: TuneConfig, data: Optional[TaskData],
               task: Optional[str] = None) -> FineTuneSearch:
    """The tuner for ``tune.algorithm``; ``data`` may be None when ``task`` is given (a chief runs no trial)."""
    tune = with_task_defaults(tune.validate(), base, task or data.task)
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
    """``trials``: every trial (one process, or the chief); a worker's own trials. A worker has no best
    config (``None``): only the chief sees every trial's score."""

    trials: List[Dict[str, Any]]
    best_config: Optional[TrainConfig]
    best_config_path: Optional[str]
    tuner: FineTuneSearch
    role: Optional[str] = None   # None (one process), "chief" or "worker"


def search_values(hp: kt.HyperParameters) -> Dict[str, Any]:
    """The searched values of a trial (without KerasTuner's own ``tuner/...`` bookkeeping)."""
    return {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}


def row_metrics(metrics: Mapping[str, Optional[float]], objective: str) -> Dict[str, Optional[float]]:
    """The metric columns of a trial-table row."""
    return {objective: metrics.get(objective), "seconds": metrics.get("trial_seconds"),
            "train_steps_epoch1": metrics.get("train_steps_epoch1")}


def trial_table(tuner: FineTuneSearch, workers: Optional[Mapping[str, str]] = None) -> List[Dict[str, Any]]:
    """One row per trial: id, status, hyperparameters, objective, seconds (and, given ``workers``, the
    worker that ran it)."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        names = (tuner.tune.objective, "trial_seconds", "train_steps_epoch1")
        metrics = {n: trial.metrics.get_best_value(n) for n in names if trial.metrics.exists(n)}
        row = {"trial": trial_id, "status": trial.status, "hyperparameters": search_values(trial.hyperparameters),
               **row_metrics(metrics, tuner.tune.objective)}
        if workers is not None:
            row["worker"] = workers.get(trial_id)
        rows.append(row)
    return rows


def format_trials(rows: Sequence[Dict[str, Any]], objective: str) -> str:
    names = sorted({k for r in rows for k in r["hyperparameters"]})
    by_worker = any("worker" in r for r in rows)
    header = f"{'trial':<8}{'status':<11}" + "".join(f"{n:>15}" for n in names) + f"{objective:>15}{'seconds':>10}"
    lines = [header + ("  worker" if by_worker else "")]
    for r in rows:
        cells = "".join(f"{_fmt(r['hyperparameters'].get(n)):>15}" for n in names)
        lines.append(f"{r['trial'][:7]:<8}{r['status'][:10]:<11}{cells}{_fmt(r[objective]):>15}"
                     f"{_fmt(r['seconds'], 1):>10}" + (f"  {r.get('worker') or '-'}" if by_worker else ""))
    return "\n".join(lines)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 else f"{value:.{digits}f}"
    return str(value)


# --------------------------------------------------------------------------- distributed search
@dataclass(frozen=True)
class DistributedRole:
    """This process's part in a distributed search, as KerasTuner's variables will say it."""

    role: str        # chief or worker
    host: str
    port: int
    tuner_id: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def distributed_role(tune_cfg: TuneConfig, environ: Mapping[str, str] = os.environ) -> Optional[DistributedRole]:
    """The role from ``tune_cfg`` (``distributed``, ``oracle_address``, ``tuner_id``), each falling back to
    KerasTuner's variables; None for a one-process search (no ``distributed`` and no ``KERASTUNER_ORACLE_IP``)."""
    role = tune_cfg.distributed
    if role is None and environ.get(ORACLE_IP):
        role = CHIEF if CHIEF in environ.get(TUNER_ID, "") else WORKER
    if role is None:
        return None
    address = tune_cfg.oracle_address
    if not address and environ.get(ORACLE_IP):
        if not environ.get(ORACLE_PORT):
            raise ConfigError(f"{ORACLE_IP} is set but {ORACLE_PORT} is not: give the oracle's port")
        address = f"{environ[ORACLE_IP]}:{environ[ORACLE_PORT]}"
    if not address:
        raise ConfigError(f"a distributed search ({role}) needs the chief's address: --oracle-address HOST:PORT "
                          f"(or {ORACLE_IP} and {ORACLE_PORT})")
    host, port = split_address(address)
    if role == CHIEF:
        given = environ.get(TUNER_ID, "")
        tuner_id = given if CHIEF in given else CHIEF
    else:
        tuner_id = tune_cfg.tuner_id or environ.get(TUNER_ID) or f"worker-{socket.gethostname()}-{os.getpid()}"
        if CHIEF in tuner_id:
            raise ConfigError(f"worker id {tuner_id!r} contains 'chief', which makes KerasTuner treat it as the "
                              "oracle; name workers otherwise")
    return DistributedRole(role, host, port, tuner_id)


@contextlib.contextmanager
def kerastuner_environment(role: Optional[DistributedRole]) -> Iterator[None]:
    """KerasTuner's variables set for ``role`` while the tuner is built and searches (KerasTuner reads them from
    the environment), restored afterwards; with no role they are removed, so stray ones cannot turn a
    one-process search distributed."""
    values = {ORACLE_IP: role.host, ORACLE_PORT: str(role.port), TUNER_ID: role.tuner_id} if role else {}
    saved = {name: os.environ.get(name) for name in (ORACLE_IP, ORACLE_PORT, TUNER_ID)}
    try:
        for name in saved:
            os.environ.pop(name, None)
        os.environ.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class OracleServicer(oracle_chief.OracleServicer):
    """KerasTuner's oracle service, also noting which worker each trial was handed to (``workers``).

    The note is saved in the project folder at each new trial, so a restarted chief still knows it.
    """

    def __init__(self, oracle, path: str):
        super().__init__(oracle)
        self.path = path
        self.workers: Dict[str, str] = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.workers = json.load(f)

    def CreateTrial(self, request, context):  # noqa: N802 (gRPC method name)
        response = super().CreateTrial(request, context)
        trial = trial_module.Trial.from_proto(response.trial)
        if trial.status == trial_module.TrialStatus.RUNNING:
            self.workers[trial.trial_id] = request.tuner_id
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.workers, f, indent=1, sort_keys=True)
        return response


def search_finished(oracle) -> bool:
    """Whether a reloaded search has nothing left to run: its trials all ran (random, bayesian) and none is
    running or waiting for a retry. A chief restarted after the end reports at once instead of waiting for
    workers that will not come."""
    done = (trial_module.TrialStatus.COMPLETED, trial_module.TrialStatus.FAILED, trial_module.TrialStatus.INVALID)
    return bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials and \
        all(trial.status in done for trial in oracle.trials.values())


def serve_oracle(tuner: FineTuneSearch, role: DistributedRole, say=print) -> Dict[str, str]:
    """Serve ``tuner``'s oracle to the workers until the search is over; return {trial id: worker id}.

    Over means what it means to KerasTuner's chief: a worker has been told to stop (no trials left), no trial is
    running and every worker that took a trial has been told to stop. Like KerasTuner's, this waits for
    workers indefinitely: a worker that dies mid-trial keeps its trial (and the chief) open until a worker
    with the same id comes back for it.
    """
    tuner.save()
    servicer = OracleServicer(tuner.oracle, os.path.join(tuner.project_dir, WORKERS_FILE))
    if search_finished(tuner.oracle):
        say(f"[tfpipeline] chief: {tuner.project_dir} has run all its trials; reporting them")
        return dict(servicer.workers)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(role.address)
    except RuntimeError as e:   # grpcio >= 1.60 raises when it cannot bind
        raise ConfigError(f"cannot listen on {role.address} for the oracle ({e})") from None
    if not bound:
        raise ConfigError(f"cannot listen on {role.address} for the oracle (address in use?)")
    server.start()
    say(f"[tfpipeline] chief: oracle listening on {role.address}, waiting for workers "
        f"({tuner.oracle.max_trials or 'Hyperband budget of'} trials, {tuner.project_dir})")
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle)):
            time.sleep(CHIEF_POLL_SECONDS)
    finally:
        server.stop(grace=2).wait()
    return dict(servicer.workers)


# --------------------------------------------------------------------------- the search
def tune(base: Union[TrainConfig, Dict[str, Any], None] = None, tune_config: Union[TuneConfig, Dict, None] = None,
         *, data: Optional[TaskData] = None, verbose: bool = True) -> TuneResult:
    """Run (or resume) a search, print the trial table and save the best config as YAML.

    In a distributed search (``tune_config.distributed``, or KerasTuner's variables) the chief loads no data,
    serves the oracle until the workers are done, then prints and saves as above; a worker runs trials until
    the chief has none left and returns just those (no best config).
    """
    base = make_config(TrainConfig, base) if isinstance(base, dict) else (base or TrainConfig())
    tune_cfg = make_config(TuneConfig, tune_config) if isinstance(tune_config, dict) else (tune_config or TuneConfig())
    tune_cfg.validate()
    base = dataclasses.replace(base, verbose=0, epochs=min(base.epochs or tune_cfg.max_epochs,
                                                           tune_cfg.max_epochs)).validate()
    role = distributed_role(tune_cfg)
    say = print if verbose else (lambda *a, **k: None)
    if role and role.role == WORKER and tune_cfg.overwrite:   # the project folder is the chief's to clear
        say("[tfpipeline] worker: --overwrite is the chief's to apply; ignored here")
        tune_cfg = dataclasses.replace(tune_cfg, overwrite=False)
    workers = None
    with kerastuner_environment(role):
        if role and role.role == CHIEF:
            tuner = make_tuner(base, tune_cfg, None, task=task_of(base))
            workers = serve_oracle(tuner, role, say)
        else:
            tuner = make_tuner(base, tune_cfg, data or data_for(base))
            tuner.search()
    tune_cfg = tuner.tune
    if role and role.role == WORKER:
        ran = ", ".join(r["trial"] for r in tuner.trials_run) or "none"
        if verbose and tuner.trials_run:
            print(format_trials(tuner.trials_run, tune_cfg.objective))
        say(f"[tfpipeline] worker {role.tuner_id}: ran trials {ran}; the chief ({role.address}) writes "
            f"{BEST_CONFIG}")
        return TuneResult(tuner.trials_run, None, None, tuner, WORKER)
    rows = trial_table(tuner, workers)
    if not tuner.oracle.get_best_trials(1):
        raise ConfigError(f"no trial of {tuner.project_dir} completed; see the trial folders' trial.json")
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
    return TuneResult(rows, best, best_path, tuner, role.role if role else None)
