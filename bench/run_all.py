"""Run the benchmark suite at small sizes (< 30 min on 2 cores) and merge the results.

Runs, one after the other in fresh processes (so TF/torch thread pools and
memory do not leak from one benchmark into the next):

* bench/input_pipeline.py   padding waste and pipeline-vs-model throughput
* bench/vs_pytorch.py       tfpipeline vs PyTorch / ONNX Runtime (1 thread each, then all cores)
* bench/serving_latency.py  and bench/fine_tuning_menu.py, when present

Each script prints its ratios and writes bench/results/<name>.json (with a
``ratios`` list of ``benchlib.ratio_rows`` rows) and <name>.png; their ``ratios``
lists are printed here as one table and written to bench/results/summary.md
together with the commands, exit codes, durations and the machine's load
average. A wall-clock budget is shared by all scripts: one that would overrun
it is stopped (its own process only).

    python bench/run_all.py [--budget-min 30] [--only vs_pytorch input_pipeline]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join("bench", "results")

# name -> (script, small-size arguments, per-script time limit in minutes). Flags of scripts owned by
# others are passed only if that script's --help lists them (they may change under us).
SUITE = {
    "input_pipeline": ("bench/input_pipeline.py", ["--steps", "5"], 6),
    # 1 thread each first: OpenMP pools (torch) stall when other jobs hold a core, 1 thread does not.
    # lr 1e-4: at 5e-5 and this size both frameworks stay near chance, so accuracy says nothing.
    "vs_pytorch_1thread": ("bench/vs_pytorch.py", ["--threads", "1", "--train-examples", "1000", "--epochs", "2",
                                                   "--learning-rate", "1e-4", "--eval-examples", "300",
                                                   "--requests", "40", "--batches", "4",
                                                   "--out", "bench/results/vs_pytorch_1thread.json"], 10),
    "vs_pytorch": ("bench/vs_pytorch.py", ["--train-examples", "1000", "--epochs", "2", "--learning-rate", "1e-4",
                                           "--eval-examples", "300", "--requests", "40", "--batches", "4"], 10),
    "serving_latency": ("bench/serving_latency.py", ["--requests", "50", "--batch-requests", "10",
                                                     "--max-length", "64"], 6),
    # Its own result name, so the suite never overwrites a full `bench/fine_tuning_menu.py` run.
    "fine_tuning_small": ("bench/fine_tuning_menu.py", ["--datasets", "rotten_tomatoes", "--train", "600",
                                                        "--eval", "100", "--test", "200", "--epochs", "2",
                                                        "--max-length", "64", "--latency-examples", "16",
                                                        "--work-dir", "runs/fine_tuning_small",
                                                        "--out", "bench/results/fine_tuning_small"], 10),
}
OWN = ("input_pipeline", "vs_pytorch", "vs_pytorch_1thread")
# Short benchmark names for the section column of the combined table.
LABELS = {"input_pipeline": "input", "vs_pytorch_1thread": "vs torch 1thr", "vs_pytorch": "vs torch",
          "serving_latency": "serving", "fine_tuning_small": "fine-tuning"}
REQUIRED = {"section", "metric", "engine", "value", "ratio", "baseline"}


def supported_args(script: str, candidates: List[str]) -> List[str]:
    """Keep the ``--flag value`` pairs of ``candidates`` that ``script --help`` mentions."""
    try:
        help_text = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                   timeout=180).stdout
    except subprocess.TimeoutExpired:
        return []
    args: List[str] = []
    i = 0
    while i < len(candidates):
        flag = candidates[i]
        value = candidates[i + 1] if i + 1 < len(candidates) and not candidates[i + 1].startswith("--") else None
        if f"{flag} " in help_text or f"{flag}\n" in help_text or f"{flag}=" in help_text:
            args += [flag] + ([value] if value is not None else [])
        i += 2 if value is not None else 1
    return args


def run_script(name: str, command: List[str], timeout_s: float, log_path: str) -> dict:
    """Run one benchmark, echoing and logging its output; kill only this child if it overruns."""
    print(f"\n=== {name}: {' '.join(command)} (limit {timeout_s / 60:.1f} min)", flush=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                log.write(line)
                if not line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages")):
                    sys.stdout.write(line)
                    sys.stdout.flush()
            code = proc.wait()
        finally:
            timer.cancel()
    seconds = time.perf_counter() - started
    status = "ok" if code == 0 else ("timed out" if seconds >= timeout_s else f"exit {code}")
    shown = " ".join(["python"] + command[1:]) if command and command[0] == sys.executable else " ".join(command)
    return {"name": name, "command": shown, "seconds": round(seconds, 1), "status": status,
            "log": log_path}


def collect_rows(name: str, started: float) -> Optional[List[dict]]:
    """The ``ratios`` list of bench/results/<name>.json if this run wrote it; None if it did not.

    Every script builds its own ratio rows (``benchlib.ratio_rows``); a JSON without a ``ratios``
    list (an older script, or one stopped before it got there) contributes no rows. Sections get a
    short prefix naming the benchmark (``LABELS``).
    """
    path = os.path.join(ROOT, RESULTS, f"{name}.json")
    if not os.path.isfile(path) or os.path.getmtime(path) < started:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"[run_all] could not read {os.path.relpath(path, ROOT)}: {exc}")
        return []
    ratios = result.get("ratios") if isinstance(result, dict) else None
    if not isinstance(ratios, list):
        print(f"[run_all] {os.path.relpath(path, ROOT)} has no 'ratios' list: no rows from {name}")
        return []
    label = LABELS.get(name, name)
    return [dict(r, benchmark=name, section=f"{label}: {r['section']}") for r in ratios
            if isinstance(r, dict) and REQUIRED <= set(r) and isinstance(r["value"], (int, float))
            and isinstance(r["ratio"], (int, float))]


def write_summary(path: str, runs: List[dict], rows: List[dict], machine: Dict) -> None:
    lines = ["# Benchmark summary", "",
             f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `python bench/run_all.py` "
             f"on {machine.get('cpus')} CPU core(s); load average before the run "
             f"{machine.get('loadavg_1_5_15')}, after {benchlib.machine_info().get('loadavg_1_5_15')}.",
             "Machines are shared: compare ratios from the same run, not absolute numbers across runs.", "",
             "| benchmark | status | seconds | command |", "| --- | --- | ---: | --- |"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']} | `{r['command']}` |" for r in runs]
    lines += ["", "## Ratios (> 1.0 = better than the row's baseline)", "",
              "| section | metric | engine | value | vs baseline |", "| --- | --- | --- | ---: | ---: |"]
    for r in rows:
        base = " (baseline)" if r["engine"] == r["baseline"] else ""
        lines.append(f"| {r['section']} | {r['metric']} | {r['engine']}{base} | {r['value']:.4g} | {r['ratio']:.2f}x |")
    plots = sorted(f for f in os.listdir(os.path.dirname(path)) if f.endswith(".png"))
    if plots:
        lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in plots)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-min", type=float, default=30.0, help="wall-clock budget for the whole suite")
    parser.add_argument("--only", nargs="*", choices=list(SUITE), help="run only these benchmarks")
    args = parser.parse_args(argv)

    os.makedirs(os.path.join(ROOT, RESULTS, "logs"), exist_ok=True)
    machine = benchlib.machine_info()
    deadline = time.perf_counter() + 60.0 * args.budget_min
    runs, rows = [], []
    for name, (script, fixed, limit_min) in SUITE.items():
        if args.only and name not in args.only:
            continue
        if not os.path.isfile(os.path.join(ROOT, script)):
            runs.append({"name": name, "command": script, "seconds": 0, "status": "not present"})
            continue
        remaining = deadline - time.perf_counter()
        if remaining < 60:
            runs.append({"name": name, "command": script, "seconds": 0, "status": "skipped (budget spent)"})
            continue
        extra = fixed if name in OWN else supported_args(script, fixed)
        started = time.time()
        run = run_script(name, [sys.executable, script] + extra, min(60.0 * limit_min, remaining),
                         os.path.join(RESULTS, "logs", f"{name}.log"))
        runs.append(run)
        collected = collect_rows(name, started)
        if collected is None and run["status"] == "ok":
            run["status"] = "ok (no bench/results JSON found)"
        elif collected == [] and run["status"] == "ok":
            run["status"] = "ok (no ratio rows in its JSON)"
        rows += collected or []

    print("\n=== suite")
    for r in runs:
        print(f"{r['name']:<20}{r['status']:<34}{r['seconds']:>8} s")
    print()
    benchlib.print_ratio_table(rows, title="combined ratios (each row against its own baseline, same process)",
                               group_by="benchmark")
    summary = os.path.join(ROOT, RESULTS, "summary.md")
    write_summary(summary, runs, rows, machine)
    print(f"\nsummary written to {os.path.relpath(summary, ROOT)}")
    return 0 if all(r["status"].startswith(("ok", "not present")) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
