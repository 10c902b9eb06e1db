"""Multi-worker training and fault tolerance with real worker processes on 127.0.0.1, and ``train --resume``.

Each cluster test starts worker processes (tests/distributed_worker.py) with their own
TF_CONFIG, as a cluster manager would on separate machines; they talk over gRPC on
loopback. Every wait is bounded: a hung worker fails the test and its process group is
killed, it never hangs the suite.

The model is the tiny random BERT with dropout off: dropout masks are random draws whose
kernel state differs between replicas and restarts with each process, which would hide
what these tests compare. Batches are unbucketed and the data divides into whole global
batches, so a 2-worker step averages exactly the examples of a 1-process step.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tf_keras

from tfpipeline.bundle import ModelBundle
from tfpipeline.cli import main
from tfpipeline.errors import ConfigError
from tfpipeline.staging import partial_path
from tfpipeline.training.backup import RunBackup, backed_up_position, has_backup, past_epochs
from tfpipeline.training.callbacks import AnnealOnPlateau, StopWhenStalled
from tfpipeline.training.cluster import local_tf_configs
from tfpipeline.training.strategy import get_strategy
from tfpipeline.training.trainer import train

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")
PROCESS_TIMEOUT = 180    # seconds for a worker to finish (TF start ~10 s, tracing, 12 tiny steps)
EPOCHS, STEPS = 2, 6     # 96 examples / global batch 16
# 2 workers x 8 per replica = the single process's 16: same examples per step.
GLOBAL_BATCH, WORKERS = 16, 2
# Loopback all-reduce sums the two half-batch gradients in another order than one process sums the batch:
# float32 rounding, grown over 12 Adam steps at lr 1e-2 (observed max |diff| 2.5e-6).
CLUSTER_ATOL = 1e-4


@pytest.fixture(scope="module")
def no_dropout_checkpoint(tmp_path_factory, tiny_checkpoint) -> str:
    path = str(tmp_path_factory.mktemp("no_dropout") / "tiny")
    shutil.copytree(tiny_checkpoint, path)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    return path


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict:
    """96 training and 32 validation sentences, all different (so each one identifies an example)."""
    folder = tmp_path_factory.mktemp("distributed_data")
    words = "the a movie film plot story music was very quite".split()
    files = {}
    for split, count, offset in (("train", 96, 0), ("validation", 32, 1000)):
        path = str(folder / f"{split}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for i in range(offset, offset + count):
                label = "pos" if i % 2 else "neg"
                text = f"{words[i % 10]} {words[(i // 10) % 10]} number {i} was {'great' if i % 2 else 'awful'}"
                writer.writerow([text, label])
        files[split] = path
    return files


def run_options(checkpoint: str, files: dict, output_dir: str, **overrides) -> dict:
    options = dict(task="classification", model=checkpoint, train_file=files["train"],
                   validation_file=files["validation"], epochs=EPOCHS, batch_size=GLOBAL_BATCH, learning_rate=1e-2,
                   max_length=32, bucket=False, warmup_ratio=0.0, early_stopping_patience=0, seed=13, verbose=0,
                   output_dir=output_dir)
    options.update(overrides)
    return options


def cli_flags(options: dict) -> list:
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        flags += ([flag] if value else ["--no-" + key.replace("_", "-")]) if isinstance(value, bool) \
            else [flag, str(value)]
    return flags


@pytest.fixture(scope="module")
def reference(tmp_path_factory, no_dropout_checkpoint, data_files):
    """The uninterrupted single-process run every other run is compared with."""
    out = str(tmp_path_factory.mktemp("reference") / "model")
    train(run_options(no_dropout_checkpoint, data_files, out))
    return out


def folder_weights(model_dir: str) -> list:
    return ModelBundle.load(model_dir).model.get_weights()


def saved_weights(path: str) -> list:
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def assert_weights(actual: list, expected: list, atol: float = 0.0) -> None:
    assert len(actual) == len(expected)
    worst = max(float(np.max(np.abs(a - e))) for a, e in zip(actual, expected))
    assert worst <= atol, f"weights differ by up to {worst:g} (tolerance {atol:g})"


class Kill(tf_keras.callbacks.Callback):
    """Send this process ``sig`` when step ``step`` of epoch ``epoch`` begins."""

    def __init__(self, epoch: int, step: int, sig: int):
        super().__init__()
        self.at, self.sig, self.epoch = (epoch, step), sig, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), self.sig)


# --------------------------------------------------------------------------- worker processes
def start_workers(tmp_path, name: str, options: dict, *, count: int = WORKERS, extra=None) -> list:
    """``count`` worker processes of one cluster on loopback (free ports), each in its own process group."""
    configs = local_tf_configs(count) if options.get("strategy") == "multiworker" else [None] * count
    with open(tmp_path / f"{name}.json", "w", encoding="utf-8") as f:
        json.dump(options, f)
    workers = []
    for i, tf_config in enumerate(configs):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="2")
        env.pop("TF_CONFIG", None)
        if tf_config:
            env["TF_CONFIG"] = tf_config
        result = str(tmp_path / f"{name}_{i}.json")
        log = open(tmp_path / f"{name}_{i}.log", "w", encoding="utf-8")
        args = [sys.executable, WORKER, str(tmp_path / f"{name}.json"), result] + list((extra or {}).get(i, []))
        workers.append({"process": subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                    start_new_session=True),
                        "result": result, "log": log.name})
    return workers


def stop(worker) -> None:
    if worker["process"].poll() is None:
        os.killpg(worker["process"].pid, signal.SIGKILL)
        worker["process"].wait(10)


def wait_workers(workers, timeout: float = PROCESS_TIMEOUT) -> list:
    """Return codes; past ``timeout`` every worker still running is killed and the test fails with their logs."""
    deadline = time.monotonic() + timeout
    try:
        for w in workers:
            w["process"].wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for w in workers:
            stop(w)
        pytest.fail("worker timed out:\n" + "\n".join(log_tail(w) for w in workers))
    return [w["process"].returncode for w in workers]


def log_tail(worker, lines: int = 25) -> str:
    with open(worker["log"], encoding="utf-8", errors="replace") as f:
        return f"--- {worker['log']}\n" + "".join(f.readlines()[-lines:])


def results(workers) -> list:
    out = []
    for w in workers:
        assert os.path.isfile(w["result"]), log_tail(w)
        with open(w["result"], encoding="utf-8") as f:
            out.append(json.load(f))
    return out


# --------------------------------------------------------------------------- TF_CONFIG helpers (no workers)
def test_tf_config_for_local_and_listed_workers(capsys):
    configs = [json.loads(c) for c in local_tf_configs(3)]
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)

    assert main(["cluster", "--hosts", "10.0.0.5:2222,10.0.0.6:2222", "--index", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cluster": {"worker": ["10.0.0.5:2222", "10.0.0.6:2222"]},
                                                   "task": {"type": "worker", "index": 1}}
    assert main(["cluster", "--workers", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("TF_CONFIG=")]
    assert [json.loads(line.split("=", 1)[1].strip("'"))["task"]["index"] for line in lines] == [0, 1]
    for argv in (["cluster"], ["cluster", "--hosts", "10.0.0.5", "--index", "0"],
                 ["cluster", "--hosts", "a:1,b:2", "--index", "2"], ["cluster", "--workers", "2", "--hosts", "a:1"]):
        assert main(argv) == 2, argv
    assert "tfpipeline: error:" in capsys.readouterr().err


def test_cluster_command_does_not_load_tensorflow():
    code = "import sys; from tfpipeline.cli import main; main(['cluster', '--workers', '2']); " \
           "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("value, message", [(None, "needs the TF_CONFIG"), ("{not json", "not valid JSON"),
                                            ('{"cluster": {"worker": ["a:1"]}}', "needs \"cluster\" and \"task\""),
                                            ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                                             '"index": 1}}', "not in its cluster")])
def test_multiworker_without_a_usable_tf_config_is_a_clear_error(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ConfigError, match=message):
        get_strategy("multiworker")


# --------------------------------------------------------------------------- resume bookkeeping (no training)
def test_early_stopping_and_annealing_continue_from_the_epochs_already_run():
    stopper = StopWhenStalled("val_accuracy", patience=2)
    stopper.resume_after([0.5, 0.7, 0.6])
    stopper.on_train_begin()
    assert (stopper.best, stopper.wait) == (0.7, 1) and stopper.count(0.65)   # the 2nd epoch without a new best

    annealer = AnnealOnPlateau("val_accuracy", patience=1, max_epochs=5)
    annealer.resume_after([0.5, 0.7, 0.6], best_weights_file="best")
    annealer.on_train_begin()
    assert (annealer.best, annealer.best_epoch, annealer.annealed) == (0.7, 1, 3)
    assert annealer.best_weights is None and annealer.best_weights_file == "best"   # read when the anneal starts


def test_best_weights_from_file_leave_the_model_and_optimizer_alone(tmp_path):
    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    model.compile(optimizer=tf_keras.optimizers.Adam(0.1), loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    saved = model.get_weights()
    model.save_weights(str(tmp_path / "best"))
    model.fit(x, y, epochs=2, verbose=0)
    now, optimizer_state = model.get_weights(), [v.numpy() for v in model.optimizer.variables]
    annealer = AnnealOnPlateau("val_accuracy", patience=1, max_epochs=3)
    annealer.set_model(model)
    assert_weights(annealer.weights_from_file(str(tmp_path / "best")), saved)
    assert_weights(model.get_weights(), now)
    assert_weights([v.numpy() for v in model.optimizer.variables], optimizer_state)


def test_backup_position_and_history(tmp_path):
    run = str(tmp_path / "run.partial")
    model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    steps = []

    class Stop(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)
            if len(steps) == 6 + 5:          # epoch 2, after its 5th step: the backups after steps 2 and 4 exist
                raise KeyboardInterrupt

    x, y = np.ones((12, 2), "float32"), np.zeros((12, 1), "float32")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=2, epochs=3, verbose=0,
                  callbacks=[tf_keras.callbacks.CSVLogger(os.path.join(run, "history.csv")), Stop(),
                             RunBackup(os.path.join(run, "backup"), every=2)])
    assert backed_up_position(run, steps_per_epoch=6, every=2) == (1, 4)   # resume at epoch 2, step 5
    (first,) = past_epochs(run, 1)
    assert first["loss"] > 0
    with pytest.raises(ConfigError, match="does not match its backup"):
        past_epochs(run, 2)


# --------------------------------------------------------------------------- workers on loopback
@pytest.mark.serial   # worker processes with heartbeats: run alone (make test), not beside another test
def test_two_workers_train_like_one_process(tmp_path, no_dropout_checkpoint, data_files, reference):
    out = str(tmp_path / "model")
    options = run_options(no_dropout_checkpoint, data_files, out, strategy="multiworker",
                          batch_size=GLOBAL_BATCH // WORKERS)
    workers = start_workers(tmp_path, "cluster", options, extra={0: ["--shard-check"], 1: ["--shard-check"]})
    codes = wait_workers(workers)
    assert codes == [0, 0], "\n".join(log_tail(w) for w in workers)
    chief, other = results(workers)

    # sharding (checked on the default, bucketed pipeline: uneven last batches): in one epoch the two workers'
    # replicas got disjoint shares that together are every example once
    mine = [r["shards"]["mine"] for r in (chief, other)]
    assert sorted(mine[0] + mine[1]) == sorted(chief["shards"]["all"])
    assert len(set(chief["shards"]["all"])) == 96 and not set(mine[0]) & set(mine[1])

    # synchronous training: the same step count, scores (all-reduced) and weights on both workers
    assert chief["iterations"] == other["iterations"] == EPOCHS * STEPS
    assert chief["history"] == other["history"] and len(chief["history"]["val_accuracy"]) == EPOCHS
    assert chief["started_at"] == [0, 0]
    stem = [os.path.splitext(w["result"])[0] for w in workers]
    assert_weights(saved_weights(stem[1] + "_fit.npz"), saved_weights(stem[0] + "_fit.npz"))
    assert_weights(saved_weights(stem[1] + "_final.npz"), saved_weights(stem[0] + "_final.npz"))

    # only the chief wrote the model folder, and nothing is left beside it
    assert chief["output_dir"] == out and other["output_dir"] is None
    assert not os.path.exists(partial_path(out))
    assert not [p for p, _, files in os.walk(out) for n in files + [p] if "workertemp" in n]
    assert_weights(folder_weights(out), saved_weights(stem[0] + "_final.npz"))

    # the same model as one process with the same global batch
    assert_weights(folder_weights(out), folder_weights(reference), atol=CLUSTER_ATOL)


@pytest.mark.serial   # worker processes with heartbeats: run alone (make test), not beside another test
def test_killed_worker_restarts_from_backup(tmp_path, no_dropout_checkpoint, data_files):
    """SIGKILL one worker mid-epoch; the chief then fails (its collectives lose their peer) or is stopped; the
    whole cluster restarts with the same command (TensorFlow's rule for MultiWorkerMirroredStrategy) and
    continues from the last backup, 2 steps at most before the crash."""
    out = str(tmp_path / "model")
    options = run_options(no_dropout_checkpoint, data_files, out, strategy="multiworker",
                          batch_size=GLOBAL_BATCH // WORKERS, backup_every=2, resume=True)
    first = start_workers(tmp_path, "first", options, extra={1: ["--kill-at", "1:3:SIGKILL"]})
    assert wait_workers(first[1:])[0] == -signal.SIGKILL, log_tail(first[1])
    try:
        first[0]["process"].wait(30)   # the chief notices the lost peer (missed heartbeats) and fails
    except subprocess.TimeoutExpired:
        stop(first[0])
    assert first[0]["process"].returncode != 0
    assert has_backup(partial_path(out)) and not os.path.exists(out)

    second = start_workers(tmp_path, "second", options)
    codes = wait_workers(second)
    assert codes == [0, 0], "\n".join(log_tail(w) for w in second)
    runs = results(second)
    # a backup after step 2 of epoch 2 (every 2 steps); the crash came as step 4 began
    assert [r["started_at"] for r in runs] == [[1, 2], [1, 2]]
    assert [r["iterations"] for r in runs] == [EPOCHS * STEPS] * 2
    assert runs[0]["output_dir"] == out and os.path.isfile(os.path.join(out, "eval_report.json"))
    assert not os.path.exists(partial_path(out))
    with open(os.path.join(out, "history.csv"), encoding="utf-8") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, no_dropout_checkpoint, data_files, reference,
                                                        capsys):
    out = str(tmp_path / "model")
    options = run_options(no_dropout_checkpoint, data_files, out)
    crashed = start_workers(tmp_path, "crash", options, count=1, extra={0: ["--kill-at", "1:3:SIGKILL"]})
    assert wait_workers(crashed) == [-signal.SIGKILL], log_tail(crashed[0])
    assert has_backup(partial_path(out)) and not os.path.exists(out)

    assert main(["train"] + cli_flags(options)) == 2   # a fresh run would discard the backup: refused
    assert "--resume" in capsys.readouterr().err and has_backup(partial_path(out))

    assert main(["train", "--resume"] + cli_flags(options) + ["--verbose", "2"]) == 0
    assert "resuming from the backup" in capsys.readouterr().out
    assert not os.path.exists(partial_path(out))
    assert not {"backup", "run_options.json", "checkpoints"} & set(os.listdir(out))
    assert_weights(folder_weights(out), folder_weights(reference))
    assert history(out) == history(reference)


def test_resume_after_ctrl_c_matches_uninterrupted_run(tmp_path, no_dropout_checkpoint, data_files, reference,
                                                       capsys):
    out = str(tmp_path / "model")
    options = run_options(no_dropout_checkpoint, data_files, out)
    # Python only turns SIGINT into KeyboardInterrupt if SIGINT was not ignored when it started; a
    # background job of a non-interactive shell (CI) starts with it ignored. Install what a terminal gives.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(options, callbacks=[Kill(1, 1, signal.SIGINT)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "--resume" in capsys.readouterr().err
    assert has_backup(partial_path(out)) and not os.path.exists(out)
    with pytest.raises(ConfigError, match="differ.*learning_rate"):
        train(options, resume=True, learning_rate=5e-3)

    resumed = train(options, resume=True)
    assert resumed.report["epochs"]["run"] == EPOCHS
    assert_weights(folder_weights(out), folder_weights(reference))
    assert history(out) == history(reference)
    assert not os.path.exists(partial_path(out))


def history(model_dir: str) -> list:
    """history.csv rows, scores rounded (the same run gives the same rows)."""
    with open(os.path.join(model_dir, "history.csv"), encoding="utf-8") as f:
        return [{k: round(float(v), 5) for k, v in row.items()} for row in csv.DictReader(f)]
