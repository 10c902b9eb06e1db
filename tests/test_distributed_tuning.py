"""Distributed tuning on loopback: one chief (KerasTuner's oracle over gRPC) and two workers, as separate
``tfpipeline tune`` processes, share one search; the workers run distinct trials and the chief reports the best.

Every process runs in its own process group and the whole search has a deadline: a hang (a worker waiting for
a chief that died, a chief waiting for a worker) fails the test instead of hanging CI.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tfpipeline.cli import main
from tfpipeline.config import TuneConfig
from tfpipeline.errors import ConfigError
from tfpipeline.training.tuner import distributed_role, kerastuner_environment

DEADLINE_SECONDS = 300
TRIALS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, log_path, env):
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "tfpipeline.cli", "tune", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_all(procs, deadline):
    """Wait for every process; past the deadline kill every process group and fail."""
    while any(p.poll() is None for p in procs.values()):
        if time.monotonic() > deadline:
            for p in procs.values():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            return False
        time.sleep(0.5)
    return True


@pytest.mark.serial   # worker processes with heartbeats: run alone (make test), not beside another test
def test_chief_and_two_workers_share_one_search(tmp_path, tiny_checkpoint, clf_files, capsys):
    port = _free_port()
    directory = tmp_path / "tuning"
    search = ["--task", "classification", "--train-file", clf_files["train"],
              "--validation-file", clf_files["validation"], "--limit-train", "64", "--model", tiny_checkpoint,
              "--epochs", "1", "--max-length", "32", "--algorithm", "random", "--max-trials", str(TRIALS),
              "--batch-sizes", "8,16", "--learning-rate-min", "1e-3", "--learning-rate-max", "1e-2",
              "--directory", str(directory), "--project-name", "p", "--oracle-address", f"127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    logs = {name: tmp_path / f"{name}.log" for name in ("chief", "w1", "w2")}
    procs = {"chief": _start([*search, "--distributed", "chief"], logs["chief"], env)}
    for worker in ("w1", "w2"):
        procs[worker] = _start([*search, "--distributed", "worker", "--tuner-id", worker], logs[worker], env)
    finished = _wait_all(procs, time.monotonic() + DEADLINE_SECONDS)
    output = {name: path.read_text() for name, path in logs.items()}
    transcript = "\n".join(f"--- {name} (exit {procs[name].returncode})\n{text[-3000:]}"
                           for name, text in output.items())
    assert finished, f"the search did not end within {DEADLINE_SECONDS} s\n{transcript}"
    assert all(p.returncode == 0 for p in procs.values()), transcript

    # Each worker names the trials it ran: at least one each, no trial twice, together all of them.
    ran = {}
    for worker in ("w1", "w2"):
        match = re.search(rf"worker {worker}: ran trials ([0-9, ]+);", output[worker])
        assert match, transcript
        ran[worker] = {t.strip() for t in match.group(1).split(",")}
    assert ran["w1"] and ran["w2"], f"both workers should have run trials: {ran}"
    assert not ran["w1"] & ran["w2"], f"a trial ran on both workers: {ran}"
    assert ran["w1"] | ran["w2"] == {str(i) for i in range(TRIALS)}

    # Only the chief holds every score: its table has all trials, who ran them, and the best config.
    rows = json.load(open(directory / "p" / "trials.json"))
    assert len(rows) == TRIALS and all(r["status"] == "COMPLETED" for r in rows), rows
    assert {r["trial"]: r["worker"] for r in rows} == {t: w for w, ts in ran.items() for t in ts}
    assert len({(r["hyperparameters"]["learning_rate"], r["hyperparameters"]["batch_size"]) for r in rows}) == TRIALS
    best = max(rows, key=lambda r: r["val_accuracy"])
    saved = yaml.safe_load(open(directory / "p" / "best_config.yaml"))
    assert saved["batch_size"] == best["hyperparameters"]["batch_size"]
    assert saved["learning_rate"] == pytest.approx(best["hyperparameters"]["learning_rate"], rel=1e-12)
    assert "best hyperparameters saved to" in output["chief"]
    assert all(f"  {w}" in output["chief"] for w in ("w1", "w2")), "the chief's table shows the workers"

    # A chief restarted on the finished search reports at once, without waiting for workers.
    assert main(["tune", *search, "--distributed", "chief"]) == 0
    again = capsys.readouterr().out
    assert "has run all its trials" in again and "best hyperparameters saved" in again
    assert json.load(open(directory / "p" / "trials.json")) == rows


def test_roles_come_from_options_or_kerastuner_variables(monkeypatch):
    monkeypatch.delenv("KERASTUNER_ORACLE_IP", raising=False)
    assert distributed_role(TuneConfig(), environ={}) is None
    chief = distributed_role(TuneConfig(distributed="chief", oracle_address="0.0.0.0:8000"), environ={})
    assert (chief.role, chief.host, chief.port, chief.tuner_id) == ("chief", "0.0.0.0", 8000, "chief")
    env = {"KERASTUNER_ORACLE_IP": "10.0.0.5", "KERASTUNER_ORACLE_PORT": "9000", "KERASTUNER_TUNER_ID": "tuner3"}
    worker = distributed_role(TuneConfig(), environ=env)   # KerasTuner's own variables alone
    assert (worker.role, worker.address, worker.tuner_id) == ("worker", "10.0.0.5:9000", "tuner3")
    assert distributed_role(TuneConfig(), environ={**env, "KERASTUNER_TUNER_ID": "chief"}).role == "chief"
    assert distributed_role(TuneConfig(distributed="worker", oracle_address="[::1]:7000"), environ={}).host == "::1"
    with pytest.raises(ConfigError, match="oracle-address"):
        distributed_role(TuneConfig(distributed="worker"), environ={})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        TuneConfig(oracle_address="10.0.0.5").validate()
    with pytest.raises(ConfigError, match="chief"):
        TuneConfig(tuner_id="chief2").validate()

    # The variables are KerasTuner's input only while the search runs.
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "mine")
    with kerastuner_environment(worker):
        assert os.environ["KERASTUNER_ORACLE_IP"] == "10.0.0.5" and os.environ["KERASTUNER_TUNER_ID"] == "tuner3"
    assert "KERASTUNER_ORACLE_IP" not in os.environ and os.environ["KERASTUNER_TUNER_ID"] == "mine"
