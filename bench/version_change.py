"""Latency while a new model version is published: does loading and warming it stall the version being served?

Issue #13 item 7: with 8 concurrent batch-1 gRPC clients, p99 was 0.39 s steady but 9.4 s in a run where a
new version was loaded mid-run. Here, in one process on loopback: ``--clients`` threads (one
``serving.GrpcClient`` each, one text per request) run against ``ModelServer`` for ``--steady-seconds``;
then a copy of the export is dropped in as version 2, which the server's version poller (every 0.5 s)
loads and publishes. Requests that start from the copy until ``--after-seconds`` after version 2
answers form the "change" window. Three variants, same model, same run:

- ``no warmup file``: the export with TF Serving's ``assets.extra/tf_serving_warmup_requests`` deleted,
  i.e. the first real requests to the new version instantiate its graphs (how every version change
  behaved before warmup was replayed);
- ``warmup file, plain load``: the export as written by ``tfpipeline export``, whose warmup records the
  server replays before publishing the version, loaded in the server's reloading thread at normal priority;
- ``warmup file, low-priority load``: the same, loaded as the server does by default
  (``serving.repository.load_behind_requests``: its own thread, lower OS priority, short GIL slices).

    python bench/version_change.py                       # MiniLM-L6, random head, about 2 minutes
    python bench/version_change.py --checkpoint tiny     # smoke run
    python bench/version_change.py --optimize compact+tflite --prefer-tflite-model   # versions served from model.tflite

Prints a Markdown table (p50/p99 steady and during the change, their ratio, failed requests) and writes
bench/results/version_change.md / .json (``--readme README.md``: also the README's version-change table);
exits 1 if any request failed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `serving` from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

import tfpipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402

from serving import GrpcClient, ModelServer  # noqa: E402
from serving_batching import MODEL_NAME, build_export  # noqa: E402
from serving_latency import sample_texts  # noqa: E402  (short texts of 6-40 common words)
from tfpipeline.config.commands import EXPORT_OPTIMIZATIONS, OPTIMIZE_AUTO  # noqa: E402
from tfpipeline.export import ASSETS_EXTRA, read_export_metadata  # noqa: E402
from tfpipeline.export.warmup import WARMUP_FILE  # noqa: E402
from tfpipeline.training.strategy import set_tf_threads  # noqa: E402


def publish(export_dir: str, base: str, version: int, keep_warmup: bool) -> None:
    """Copy the export in as ``version`` the safe way (aside, then rename), optionally without its warmup file."""
    staging = os.path.join(base, MODEL_NAME, f".incoming-{version}")
    shutil.copytree(export_dir, staging)
    if not keep_warmup:
        os.remove(os.path.join(staging, ASSETS_EXTRA, WARMUP_FILE))
    os.rename(staging, os.path.join(base, MODEL_NAME, str(version)))


def percentiles(latencies: list) -> dict:
    values = np.asarray(latencies) * 1000.0
    if not len(values):
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": int(len(values)), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1), "max_ms": round(float(values.max()), 1)}


VARIANTS = {  # name: (keep the export's warmup file, low-priority loads)
    "no warmup file": (False, True),
    "warmup file, plain load": (True, False),
    "warmup file, low-priority load": (True, True),
}
README_VARIANTS = {   # the README's words for them
    "no warmup file": "without its warmup file (first requests build the graphs)",
    "warmup file, plain load": "with it, loaded in the poller's thread at normal priority",
    "warmup file, low-priority load": "with it, loaded behind the requests (the default)",
}
README_START, README_END = "<!-- version-change:start -->", "<!-- version-change:end -->"


def run_variant(export_dir: str, root: str, variant: str, args) -> dict:
    keep_warmup, low_priority = VARIANTS[variant]
    base = os.path.join(root, "base_" + "".join(c if c.isalnum() else "_" for c in variant))
    os.makedirs(os.path.join(base, MODEL_NAME))
    publish(export_dir, base, 1, keep_warmup=True)
    texts = sample_texts(256)
    records, failures, stop = [], [], threading.Event()
    lock = threading.Lock()

    with ModelServer(base, grpc_port=0, rest_port=None, poll_seconds=0.5, low_priority_loads=low_priority,
                     prefer_tflite_model=args.prefer_tflite_model) as server:
        def client(i: int) -> None:
            with GrpcClient(server.grpc_target, MODEL_NAME, timeout=60) as grpc_client:
                for _ in range(args.warmup):
                    grpc_client.predict_texts([texts[i]])
                n = i
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        grpc_client.predict_texts([texts[n % len(texts)]])
                        with lock:
                            records.append((started, time.perf_counter() - started))
                    except Exception as e:  # noqa: BLE001 - counted and reported, never hidden
                        with lock:
                            failures.append(f"{type(e).__name__}: {e}")
                    n += args.clients

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(args.steady_seconds)
        change_start = time.perf_counter()
        publish(export_dir, base, 2, keep_warmup)
        deadline = time.monotonic() + 300
        while server.repository.get(MODEL_NAME).version != 2 and time.monotonic() < deadline:
            time.sleep(0.02)             # the server's version poller loads it, as in production
        reload_end = time.perf_counter()
        time.sleep(args.after_seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        served = server.repository.get(MODEL_NAME).version

    steady = [latency for started, latency in records if started < change_start]
    change = [latency for started, latency in records if change_start <= started < reload_end + args.after_seconds]
    result = {"variant": variant, "steady": percentiles(steady),
              "change": percentiles(change), "reload_seconds": round(reload_end - change_start, 2),
              "failed": len(failures), "failures": failures[:5], "served_version_after": served}
    if result["steady"]["p99_ms"] and result["change"]["p99_ms"]:
        result["p99_ratio"] = round(result["change"]["p99_ms"] / result["steady"]["p99_ms"], 2)
    print(f"[version-change] {result['variant']}: steady {result['steady']}, change {result['change']}, "
          f"reload {result['reload_seconds']} s, {result['failed']} failed", flush=True)
    return result


def markdown(report: dict) -> str:
    lines = ["# Latency during a version change", "",
             f"`{report['command']}` - one process, loopback, {report['clients']} concurrent batch-1 gRPC clients; "
             f"{report['machine']['cpus']} CPUs, load average "
             f"{report['machine'].get('loadavg_1_5_15', [0])[0]:.1f} at start.", "",
             "| new version | steady p50 / p99 ms | during change p50 / p99 / max ms | p99 ratio | reload s | "
             "failed |", "|---|---:|---:|---:|---:|---:|"]
    for r in report["variants"]:
        s, c = r["steady"], r["change"]
        lines.append(f"| {r['variant']} | {s['p50_ms']} / {s['p99_ms']} | {c['p50_ms']} / {c['p99_ms']} / "
                     f"{c['max_ms']} | {r.get('p99_ratio', '-')}x | {r['reload_seconds']} | {r['failed']} |")
    return "\n".join(lines) + "\n"


def readme_lines(report: dict) -> list:
    import datetime
    import textwrap

    header = (f"`{report['command']}` ({report['clients']} concurrent batch-1 gRPC clients, {report['model']} export "
              f"`--optimize {report['optimize']}`"
              + (" served from its model.tflite (`--prefer-tflite-model`)" if report.get("prefer_tflite_model") else "")
              + "; the version poller picks up a copy as version 2 mid-run; three "
              f"variants in one process), {datetime.date.today().isoformat()}, {report['machine']['cpus']} cores, "
              f"1-minute load average {report['machine'].get('loadavg_1_5_15', [float('nan')])[0]:.1f} at start:")
    lines = [textwrap.fill(header, 115), "",
             "| new version | steady p50 / p99 ms | requests started during the change: p50 / p99 / max ms | "
             "p99 ratio | reload s | failed |", "|---|---:|---:|---:|---:|---:|"]
    for r in report["variants"]:
        s, c = r["steady"], r["change"]
        ratio = f"{r['p99_ratio']:.2f}x" if "p99_ratio" in r else "-"
        if r["variant"] == "warmup file, low-priority load":
            ratio = f"**{ratio}**"
        lines.append(f"| {README_VARIANTS[r['variant']]} | {s['p50_ms']} / {s['p99_ms']} | {c['p50_ms']} / "
                     f"{c['p99_ms']} / {c['max_ms']} | {ratio} | {r['reload_seconds']} | {r['failed']} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="minilm", help="minilm, tiny, or a local HF folder (random head)")
    p.add_argument("--model-dir", help="export this trained model folder instead")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--steady-seconds", type=float, default=15.0)
    p.add_argument("--after-seconds", type=float, default=3.0, help="the change window lasts this long past the "
                                                                   "reload, to catch the new version's first requests")
    p.add_argument("--warmup", type=int, default=3, help="requests per client before timing")
    p.add_argument("--threads", type=int, default=2, help="TF intra- and inter-op threads")
    p.add_argument("--optimize", default=OPTIMIZE_AUTO, choices=EXPORT_OPTIMIZATIONS,
                   help="the export's --optimize (default: the export default)")
    p.add_argument("--prefer-tflite-model", action="store_true",
                   help="the server answers from the export's model.tflite: needs --optimize compact+tflite")
    p.add_argument("--out", default="bench/results/version_change.md")
    p.add_argument("--readme", help="also replace this README's version-change block with the table")
    args = p.parse_args(argv)
    if args.prefer_tflite_model and args.optimize != "compact+tflite":
        p.error("--prefer-tflite-model needs --optimize compact+tflite (an export with a model.tflite)")
    set_tf_threads(args.threads, args.threads)
    machine = benchlib.machine_info()
    with tempfile.TemporaryDirectory() as root:
        export_dir = build_export(args, root)
        optimize = read_export_metadata(export_dir)["optimize"]
        variants = [run_variant(export_dir, root, variant, args) for variant in VARIANTS]
    report = {"command": "python bench/version_change.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "clients": args.clients, "machine": machine, "variants": variants,
              "model": args.model_dir or args.checkpoint, "optimize": optimize,
              "prefer_tflite_model": args.prefer_tflite_model}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = markdown(report)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(text)
    if args.readme:
        benchlib.replace_readme_block(args.readme, README_START, README_END, readme_lines(report))
        print(f"{args.readme}: version-change table written")
    return 1 if any(v["failed"] for v in variants) else 0


if __name__ == "__main__":
    sys.exit(main())
