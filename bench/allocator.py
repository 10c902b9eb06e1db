"""Memory allocator lever (issue #13): the same export served with glibc malloc vs jemalloc / tcmalloc (LD_PRELOAD).

An allocator can only be chosen when a process starts, so each variant is a
child process; the children run one after the other in rounds with a
rotating order (A B C, B C A, ...), so a slow minute of the shared machine
hits every variant, and the ratios are medians over rounds against glibc in
the same run. Each child loads the export (``tf.saved_model.load``; cold
start: load + first call), then times ``serving_default`` on raw text at
batch 1 and 32, and reports its minor page faults and the system share of
its CPU time (a cold-start quickstart run showed 21M minor faults and 15%
system time, the usual sign of malloc returning memory to the kernel and
faulting it back).

    python bench/allocator.py [--rounds 3] [--threads 2] [--readme README.md]

The export is MiniLM-L6 with a random classification head, written once with
the export default (``--optimize``). Allocators not installed are skipped
(Debian: ``apt-get install libjemalloc2 libtcmalloc-minimal4``).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402

GLIBC = "glibc malloc"
ALLOCATORS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
README_START, README_END = "<!-- allocator:start -->", "<!-- allocator:end -->"
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_library(filename: str) -> Optional[str]:
    for directory in LIBRARY_DIRS:
        hits = glob.glob(os.path.join(directory, filename))
        if hits:
            return hits[0]
    return None


def child(args) -> int:
    """One variant: load, warm, time; one JSON line on stdout."""
    import tfpipeline  # noqa: F401  (environment before TensorFlow loads)
    from tfpipeline.training.strategy import set_tf_threads

    set_tf_threads(args.threads, args.threads)
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the export's graph uses)

    from serving_latency import sample_texts

    texts = sample_texts(256, seed=0)
    t0 = time.perf_counter()
    signature = tf.saved_model.load(args.child).signatures["serving_default"]
    signature(text=tf.constant(texts[:1]))
    cold = time.perf_counter() - t0
    start = resource.getrusage(resource.RUSAGE_SELF)

    def timed(size: int, calls: int) -> List[float]:
        out = []
        for i in range(calls + 3):
            batch = [texts[(i * size + j) % len(texts)] for j in range(size)]
            t = time.perf_counter()
            signature(text=tf.constant(batch))
            if i >= 3:
                out.append(time.perf_counter() - t)
        return out

    b1, b32 = timed(1, args.requests), timed(32, args.batches)
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
    print(json.dumps({"cold_start_s": cold, "b1_p50_ms": 1000 * float(np.median(b1)),
                      "b32_ex_per_s": 32 / float(np.median(b32)), "minor_faults": end.ru_minflt - start.ru_minflt,
                      "minor_faults_total": end.ru_minflt, "system_cpu_share": (end.ru_stime - start.ru_stime) / cpu}))
    return 0


def write_export(path: str, optimize: str) -> str:
    """MiniLM-L6 + random head exported once by ``serving_batching.build_bundle``, in a child process (the
    parent stays free of TensorFlow)."""
    code = ("import argparse, sys\n"
            f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
            "from serving_batching import build_bundle\n"
            "args = argparse.Namespace(model_dir=None, checkpoint='minilm', max_length=64)\n"
            "print(build_bundle(args, sys.argv[1]).export(sys.argv[1], 'bench', optimize=sys.argv[2]))\n")
    out = subprocess.run([sys.executable, "-c", code, path, optimize], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def run_variant(args, export: str, library: Optional[str]) -> Dict[str, float]:
    env = dict(os.environ)
    if library:
        env["LD_PRELOAD"] = library
    command = [sys.executable, os.path.abspath(__file__), "--child", export, "--threads", str(args.threads),
               "--requests", str(args.requests), "--batches", str(args.batches)]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the {library or GLIBC} child failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(runs: Dict[str, List[dict]]) -> Dict[str, Dict[str, float]]:
    import statistics

    keys = ("cold_start_s", "b1_p50_ms", "b32_ex_per_s", "minor_faults", "system_cpu_share")
    return {name: {k: statistics.median(r[k] for r in rows) for k in keys} for name, rows in runs.items()}


def table(summary: Dict[str, Dict[str, float]]) -> List[str]:
    base = summary[GLIBC]
    lines = ["| allocator | cold start s (load + first call) | batch 1 p50 ms | batch 32 ex/s | minor page faults "
             "while timing | system share of CPU | batch 1 vs glibc | batch 32 vs glibc |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['cold_start_s']:.2f} | {s['b1_p50_ms']:.2f} | {s['b32_ex_per_s']:.1f} | "
                     f"{s['minor_faults']:,.0f} | {100 * s['system_cpu_share']:.1f}% | "
                     f"{base['b1_p50_ms'] / s['b1_p50_ms']:.2f}x | {s['b32_ex_per_s'] / base['b32_ex_per_s']:.2f}x |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every allocator once")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--requests", type=int, default=200, help="timed batch-1 calls per child")
    p.add_argument("--batches", type=int, default=20, help="timed batch-32 calls per child")
    p.add_argument("--optimize", default="auto", help="export --optimize of the model timed")
    p.add_argument("--readme", help="replace this README's allocator block with the table")
    p.add_argument("--out", default="bench/results/allocator.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    variants = {GLIBC: None}
    for name, filename in ALLOCATORS.items():
        library = find_library(filename)
        if library:
            variants[name] = library
        else:
            print(f"{name} ({filename}) not installed: skipped", file=sys.stderr)
    machine = benchlib.machine_info()
    runs: Dict[str, List[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="allocator_") as tmp:
        export = write_export(tmp, args.optimize)
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                runs[name].append(run_variant(args, export, variants[name]))
                print(f"  round {r + 1} {name}: {runs[name][-1]}", flush=True)
    summary = summarize(runs)
    lines = table(summary)
    print("\n".join(lines))
    benchlib.write_json(args.out, {"benchmark": "allocator", "config": vars(args), "machine": machine,
                                   "libraries": variants, "runs": runs, "summary": summary})
    if args.readme:
        import datetime
        import textwrap

        command = "python bench/allocator.py " + " ".join(argv if argv is not None else sys.argv[1:])
        header = (f"`{command}` (MiniLM-L6 export `--optimize {args.optimize}`, random head, max length 64, raw "
                  f"text in, {args.threads} TF threads; each allocator a child process via LD_PRELOAD, "
                  f"{args.rounds} rounds in rotating order, medians), {datetime.date.today().isoformat()}, "
                  f"{machine['cpus']} cores, 1-minute load average "
                  f"{machine.get('loadavg_1_5_15', [float('nan')])[0]:.1f} at start:")
        benchlib.replace_readme_block(args.readme, README_START, README_END,
                                      [textwrap.fill(header, 115), "", *lines])
    return 0


if __name__ == "__main__":
    sys.exit(main())
