"""Request batching benchmark: concurrent batch-1 gRPC clients against the embedded server, batching off and on.

The server runs in this process, the clients in a second one, on loopback; the ratios compare numbers from
the same run (same model, same machine load); absolute numbers are not comparable with other machines. It
measures:

1. direct: the export's ``serving_default`` called in-process (``tf.saved_model.load``) on batches of 32
   short texts, the throughput batching aims for. It runs for half of ``--seconds`` before the server
   runs and half after, pooled (the drift between the halves is printed);
2. the embedded ``ModelServer`` over gRPC: N concurrent clients (``--clients``), each in its own thread
   with its own ``GrpcClient``, sending one text per request for ``--seconds`` after ``--warmup``
   requests, once with batching off and once with ``--batching-file`` (TF Serving's BatchingParameters
   text proto; the rows per model call come from ``server.batching.stats()``). The clients run in a
   process of their own, as remote clients would: in the server's process their Python work held the
   server's GIL too.

It prints a Markdown table (examples/s, p50/p99 latency, errors, rows per model call, throughput vs the
direct batch-32 throughput) and checks the two targets of issue #13: 16 concurrent batch-1 clients with
batching reach >= 80% of the direct batch-32 throughput, and the batching p99 stays within
batch_timeout + one batch (one batch = the direct batch-32 p50 latency). The clients' Python/gRPC work
shares the cores with the server, so on a small machine the server rows pay for it too.

    python bench/serving_batching.py                                   # MiniLM-L6, random head, ~4-5 min
    python bench/serving_batching.py --seconds 5 --checkpoint tiny     # smoke run (~1 min)
    python bench/serving_batching.py --model-dir runs/rotten_tomatoes --clients 1 8 16 32
    python bench/serving_batching.py --optimize compact+tflite --prefer-tflite-model   # model.tflite, both sides

Writes bench/results/serving_batching.md and serving_batching.json (with a ``ratios`` list), and with
``--readme README.md`` the README's serving-batching table; exits 1 if any request failed.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `serving` from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

import tfpipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from serving import GrpcClient, Limits, ModelServer  # noqa: E402
from serving.batching import load_batching_parameters  # noqa: E402
from serving.tflite_pool import interpreter_threads, tflite_signatures  # noqa: E402
from serving_latency import sample_texts  # noqa: E402  (the same short texts: 6-40 common words)
from tfpipeline.bundle import ModelBundle  # noqa: E402
from tfpipeline.config.commands import EXPORT_OPTIMIZATIONS, OPTIMIZE_AUTO  # noqa: E402
from tfpipeline.export import read_export_metadata  # noqa: E402
from tfpipeline.data.labels import LabelMap  # noqa: E402
from tfpipeline.data.tokenization import TextEncoder  # noqa: E402
from tfpipeline.models.checkpoint import resolve_checkpoint  # noqa: E402
from tfpipeline.models.task_model import build_task_model, save_random_checkpoint  # noqa: E402

# README blocks: "<!-- serving-batching:start -->" (the default export) and
# "<!-- serving-batching-tflite:start -->" (a compact+tflite export with --prefer-tflite-model), each with its :end
README_BLOCKS = ("serving-batching", "serving-batching-tflite")
MODEL_NAME = "bench"
DIRECT_BATCH = 32
BASELINE = f"direct batch {DIRECT_BATCH}"
TARGET_CLIENTS, TARGET_RATIO = 16, 0.8


def build_bundle(args, root: str) -> ModelBundle:
    """``--model-dir`` loaded, else a random classification head on ``--checkpoint`` (files under ``root``)."""
    if args.model_dir:
        return ModelBundle.load(args.model_dir, max_length=args.max_length)
    checkpoint = args.checkpoint
    if checkpoint == "tiny":
        checkpoint = save_random_checkpoint(os.path.join(root, "tiny_checkpoint"))
    labels = LabelMap(["neg", "pos"])
    encoder = TextEncoder.from_directory(resolve_checkpoint(checkpoint), max_length=args.max_length)
    return ModelBundle(build_task_model(checkpoint, "classification", labels), encoder, labels, "classification")


def build_export(args, root: str) -> str:
    """A SavedModel export (``--optimize``) of ``--model-dir``, else of a random classification head on
    ``--checkpoint``."""
    return build_bundle(args, root).export(os.path.join(root, "exports"), MODEL_NAME, optimize=args.optimize)


def latency_summary(seconds: list) -> dict:
    ms = np.asarray(seconds) * 1000 if seconds else np.zeros(1)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(np.mean(ms))}


def time_direct(signature, texts: list, seconds: float, warmup: int) -> list:
    """Per-call seconds of in-process batch-32 calls for ``seconds`` (at least 3 calls)."""
    batches = [texts[i:i + DIRECT_BATCH] for i in range(0, len(texts) - DIRECT_BATCH + 1, DIRECT_BATCH)]
    for batch in batches[:warmup]:
        signature(text=tf.constant(batch))
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(latencies) < 3:
        batch = batches[len(latencies) % len(batches)]
        t0 = time.perf_counter()
        signature(text=tf.constant(batch))
        latencies.append(time.perf_counter() - t0)
    return latencies


def batch_counters(server: ModelServer) -> dict:
    """Model calls / requests / rows summed over the server's batching queues (zeros without batching)."""
    stats = server.batching.stats().values() if server.batching is not None else []
    return {key: sum(s[key] for s in stats) for key in ("calls", "requests", "rows")}


def client_process(target: str, texts: list, clients: int, seconds: float, warmup: int, conn) -> None:
    """The clients, in a process of their own (as remote clients would be: they do not hold the server's GIL):
    ``clients`` threads, each with its own GrpcClient, sending one-text requests for ``seconds`` after
    ``warmup`` untimed ones. Protocol on ``conn``: sends "ready" once all are warmed up, waits for "go", sends
    the results dict."""
    gate = threading.Barrier(clients + 1)
    latencies = [[] for _ in range(clients)]
    errors = Counter()
    crashed = []
    lock = threading.Lock()

    def call(client, index: int, k: int, timed: bool) -> None:
        t0 = time.perf_counter()
        try:
            client.predict_texts([texts[(index + k * clients) % len(texts)]])
        except grpc.RpcError as e:
            with lock:
                errors[e.code().name] += 1
        else:
            if timed:
                latencies[index].append(time.perf_counter() - t0)

    def client_thread(index: int) -> None:
        client = GrpcClient(target, MODEL_NAME)
        try:
            for k in range(warmup):
                call(client, index, k, timed=False)
            gate.wait()        # everyone warmed up
            gate.wait()        # go
            end, k = time.perf_counter() + seconds, warmup
            while time.perf_counter() < end:
                call(client, index, k, timed=True)
                k += 1
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            crashed.append(f"client {index}: {type(e).__name__}: {e}")
            gate.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=client_thread, args=(i,), name=f"bench-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        gate.wait(timeout=600)
        conn.send("ready")
        conn.recv()
        t0 = time.perf_counter()
        gate.wait(timeout=60)
    except threading.BrokenBarrierError:
        gate.abort()
        t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    conn.send({"latencies": [s for per_client in latencies for s in per_client], "errors": dict(errors),
               "crashed": crashed, "wall_s": time.perf_counter() - t0})


def run_clients(server: ModelServer, texts: list, clients: int, seconds: float, warmup: int) -> dict:
    """``client_process`` in a child process against ``server``; the batching counters are read around the
    timed part."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=client_process, args=(server.grpc_target, texts, clients, seconds, warmup,
                                                           theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(600):
            raise RuntimeError(f"the client process did not get ready ({clients} clients)")
        ours.recv()
        before = batch_counters(server)
        ours.send("go")
        if not ours.poll(seconds + 120):
            raise RuntimeError(f"the client process did not finish ({clients} clients)")
        result = ours.recv()
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    if result["crashed"]:
        raise RuntimeError("a client thread failed: " + "; ".join(result["crashed"]))
    after = batch_counters(server)
    done, wall = result["latencies"], result["wall_s"]
    calls, rows = after["calls"] - before["calls"], after["rows"] - before["rows"]
    return {"clients": clients, "batching": server.batching is not None, "requests": len(done), "wall_s": wall,
            "examples_per_s": len(done) / wall, **latency_summary(done), "errors": sum(result["errors"].values()),
            "error_codes": result["errors"], "model_calls": calls if server.batching is not None else None,
            "rows_per_call": rows / calls if calls else None}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a trained model folder (default: a random head on --checkpoint)")
    parser.add_argument("--checkpoint", default="minilm", help="'minilm' (default), 'tiny' (random 2-layer BERT) "
                                                               "or a checkpoint folder")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per client setting")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent client counts")
    parser.add_argument("--batching-file", default="serving/configs/batching_parameters.txt")
    parser.add_argument("--batch-threads", type=int, default=benchlib.cpu_count(),
                        help="num_batch_threads, replacing the file's (default: this machine's cores, TF Serving's "
                             "advice for CPU serving; 0 = keep the file's value)")
    parser.add_argument("--threads", type=int, default=2, help="TF intra- and inter-op threads (0 = TF default)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per client before each setting")
    parser.add_argument("--texts", type=int, default=512, help="distinct texts cycled through")
    parser.add_argument("--optimize", default=OPTIMIZE_AUTO, choices=EXPORT_OPTIMIZATIONS,
                        help="the export's --optimize (default: the export default)")
    parser.add_argument("--prefer-tflite-model", action="store_true",
                        help="serve (and call directly) the export's model.tflite: needs --optimize compact+tflite")
    parser.add_argument("--tflite-interpreters", type=int, default=1,
                        help="with --prefer-tflite-model: the server's interpreters per version (and the direct "
                             "calls' threads: the cores shared out the same way)")
    parser.add_argument("--out", default="bench/results/serving_batching.md")
    parser.add_argument("--readme", help="also replace this README's serving-batching block with the table")
    parser.add_argument("--readme-block", default=README_BLOCKS[0], choices=README_BLOCKS,
                        help="the README block to replace (serving-batching-tflite: the --prefer-tflite-model run)")
    args = parser.parse_args(argv)
    if args.prefer_tflite_model and args.optimize != "compact+tflite":
        parser.error("--prefer-tflite-model needs --optimize compact+tflite (an export with a model.tflite)")
    if args.threads:
        benchlib.configure_tf_threads(args.threads)
    params = load_batching_parameters(args.batching_file)
    if args.batch_threads:
        params = dataclasses.replace(params, num_batch_threads=args.batch_threads)
    texts = sample_texts(args.texts, seed=0)
    machine = {**benchlib.machine_info(), "tensorflow": tf.__version__}

    runs, stats = [], None
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        export_path = build_export(args, root)
        export_seconds = time.perf_counter() - t0
        optimize = read_export_metadata(export_path)["optimize"]
        loaded = tf.saved_model.load(export_path)
        signature = (tflite_signatures(export_path, 1, interpreter_threads(args.tflite_interpreters))
                     if args.prefer_tflite_model else loaded.signatures)["serving_default"]
        direct_before = time_direct(signature, texts, args.seconds / 2, args.warmup)
        limits = Limits(max_batch_size=params.max_batch_size)      # same limits in both configurations
        for batching in (None, params):
            with ModelServer(os.path.join(root, "exports"), grpc_port=0, rest_port=None, poll_seconds=0,
                             limits=limits, batching=batching, prefer_tflite_model=args.prefer_tflite_model,
                             tflite_interpreters=args.tflite_interpreters) as server:
                for clients in args.clients:
                    run = run_clients(server, texts, clients, args.seconds, args.warmup)
                    run["grpc_workers"] = server.workers
                    runs.append(run)
                    print(f"batching {'on ' if run['batching'] else 'off'} {clients:>3} clients: "
                          f"{run['examples_per_s']:.1f} ex/s, p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
                          f"{run['errors']} errors", flush=True)
                if server.batching is not None:
                    stats = server.batching.stats()
        direct_after = time_direct(signature, texts, args.seconds / 2, 1)

    direct_all = direct_before + direct_after
    direct = {"batch_size": DIRECT_BATCH, "calls": len(direct_all),
              "examples_per_s": DIRECT_BATCH * len(direct_all) / sum(direct_all), **latency_summary(direct_all),
              "examples_per_s_before": DIRECT_BATCH * len(direct_before) / sum(direct_before),
              "examples_per_s_after": DIRECT_BATCH * len(direct_after) / sum(direct_after)}
    for run in runs:
        run["vs_direct"] = run["examples_per_s"] / direct["examples_per_s"]
    targets = check_targets(runs, direct, params)
    label = args.model_dir or args.checkpoint
    command = " ".join(["python", "bench/serving_batching.py"] + list(sys.argv[1:] if argv is None else argv))
    report = {"benchmark": "serving_batching", "command": command, "model": label, "max_length": args.max_length,
              "optimize": optimize, "prefer_tflite_model": args.prefer_tflite_model,
              "tflite_interpreters": args.tflite_interpreters if args.prefer_tflite_model else None,
              "threads": args.threads or None, "seconds_per_setting": args.seconds,
              "build_export_seconds": export_seconds, "batching_file": args.batching_file,
              "batch_threads_override": args.batch_threads or None,
              "batching_parameters": dataclasses.asdict(params), "machine": machine, "direct": direct,
              "runs": runs, "batching_stats": stats, "targets": targets,
              "errors": sum(run["errors"] for run in runs)}
    report["ratios"] = benchlib.ratio_rows(
        "serving batching", "examples/s",
        {BASELINE: direct["examples_per_s"],
         **{f"gRPC {r['clients']} clients, batching {'on' if r['batching'] else 'off'}": r["examples_per_s"]
            for r in runs}},
        BASELINE, higher_is_better=True)
    report["markdown"] = markdown(report, params)
    print()
    print(report["markdown"])
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(report["markdown"] + "\n")
    json_path = benchlib.write_json(os.path.splitext(args.out)[0] + ".json", report)
    print(f"written to {args.out} and {json_path}")
    if args.readme:
        benchlib.replace_readme_block(args.readme, f"<!-- {args.readme_block}:start -->",
                                      f"<!-- {args.readme_block}:end -->", readme_lines(report, params))
        print(f"{args.readme}: {args.readme_block} table written")
    return report


def readme_lines(report: dict, params) -> list:
    """The README block: clients x (batching off, on), the direct batch-32 baseline and the targets."""
    import datetime
    import textwrap

    direct, targets = report["direct"], report["targets"]
    by = {(r["clients"], r["batching"]): r for r in report["runs"]}
    load = report["machine"].get("loadavg_1_5_15", [float("nan")])[0]
    header = (f"`{report['command']}` (loopback, the clients in a second process; {report['model']} export "
              f"`--optimize "
              f"{report['optimize']}`"
              + (f" served from its model.tflite (`--prefer-tflite-model`, {report['tflite_interpreters']} "
                 f"interpreter(s))" if report.get("prefer_tflite_model") else "")
              + f", max length {report['max_length']}, {report['threads'] or 'default'} TF threads; "
              f"batching: {params.describe()}, from `{report['batching_file']}`"
              + (" with num_batch_threads = the cores" if report["batch_threads_override"] else "")
              + f"), {datetime.date.today().isoformat()}, "
              f"{report['machine']['cpus']} cores, 1-minute load average {load:.1f} at start:")
    lines = [textwrap.fill(header, 115, break_on_hyphens=False), "",
             "| gRPC clients, one text per request | batching off: ex/s, p50 / p99 ms | `--enable-batching`: ex/s, "
             "p50 / p99 ms | rows per model call |", "|---:|---:|---:|---:|"]
    for clients in sorted({r["clients"] for r in report["runs"]}):
        cells = []
        for batching in (False, True):
            r = by.get((clients, batching))
            cells.append(f"{r['examples_per_s']:.1f}, {r['p50_ms']:.1f} / {r['p99_ms']:.1f}" if r else "-")
        on = by.get((clients, True))
        rows = f"{on['rows_per_call']:.1f}" if on and on["rows_per_call"] is not None else "-"
        lines.append(f"| {clients} | {cells[0]} | {cells[1]} | {rows} |")
    t, p = targets["throughput"], targets["p99"]
    failed = report["errors"]
    lines += ["", textwrap.fill(
        f"The same {'model.tflite' if report.get('prefer_tflite_model') else 'export'} called in-process at batch "
        f"{DIRECT_BATCH}: {direct['examples_per_s']:.1f} ex/s (p50 "
        f"{direct['p50_ms']:.0f} ms per batch). {t['clients']} batched batch-1 clients reach {t['ratio']:.0%} of it "
        f"(issue #13 asks >= {t['target']:.0%}: {'met' if t['pass'] else 'not met'}); batching p99 "
        f"{'within' if p['pass'] else 'above'} the batch timeout + one batch ({p['bound_ms']:.0f} ms); "
        f"{'zero' if not failed else failed} failed requests.", 115)]
    return lines


def check_targets(runs: list, direct: dict, params) -> dict:
    """Issue #13: throughput of 16 batched batch-1 clients vs direct batch 32; batching p99 vs timeout + one batch."""
    batched = [r for r in runs if r["batching"]]
    at = next((r for r in batched if r["clients"] == TARGET_CLIENTS), max(batched, key=lambda r: r["clients"]))
    bound_ms = params.batch_timeout_micros / 1000 + direct["p50_ms"]
    return {"throughput": {"clients": at["clients"], "ratio": at["vs_direct"], "target": TARGET_RATIO,
                           "pass": at["vs_direct"] >= TARGET_RATIO},
            "p99": {"bound_ms": bound_ms, "timeout_ms": params.batch_timeout_micros / 1000,
                    "one_batch_ms": direct["p50_ms"], "p99_ms": {r["clients"]: r["p99_ms"] for r in batched},
                    "pass": all(r["p99_ms"] <= bound_ms for r in batched)}}


def markdown(report: dict, params) -> str:
    direct, targets = report["direct"], report["targets"]
    machine = report["machine"]
    load = machine.get("loadavg_1_5_15")
    lines = [f"# Serving request batching ({report['model']}, max length {report['max_length']}, "
             f"{report['threads'] or 'default'} TF threads)", "",
             f"`{report['command']}` - loopback, the clients in a second process, "
             f"{report['seconds_per_setting']:g} s per setting; "
             f"{machine['cpus']} CPUs, TensorFlow {machine['tensorflow']}"
             + (f", load average {load[0]:.1f} at start" if load else "") + ".",
             f"Batching (`{report['batching_file']}`"
             + (f", num_batch_threads {report['batch_threads_override']} from --batch-threads"
                if report["batch_threads_override"] else "") + f"): {params.describe()}.", "",
             "| setting | clients | batching | ex/s | p50 ms | p99 ms | errors | rows/call | vs direct batch-32 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|",
             f"| {'model.tflite' if report.get('prefer_tflite_model') else 'SavedModel'} in-process, batch "
             f"{DIRECT_BATCH} | 1 | - | {direct['examples_per_s']:.1f} | "
             f"{direct['p50_ms']:.1f} | {direct['p99_ms']:.1f} | 0 | {DIRECT_BATCH} | 1.00x |"]
    for r in report["runs"]:
        rows = f"{r['rows_per_call']:.1f}" if r["rows_per_call"] is not None else "1"
        lines.append(f"| gRPC, batch 1 per request | {r['clients']} | {'on' if r['batching'] else 'off'} | "
                     f"{r['examples_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
                     f"{rows} | {r['vs_direct']:.2f}x |")
    t, p = targets["throughput"], targets["p99"]
    p99s = ", ".join(f"{ms:.1f} ms at {n}" for n, ms in p["p99_ms"].items())
    lines += ["", f"Direct batch-{DIRECT_BATCH} throughput {direct['examples_per_s_before']:.1f} ex/s before the "
                  f"server runs, {direct['examples_per_s_after']:.1f} after (pooled: {direct['examples_per_s']:.1f}).",
              "", "Targets (issue #13):", "",
              f"- {t['clients']} concurrent batch-1 clients with batching >= {t['target']:.0%} of direct batch-"
              f"{DIRECT_BATCH} throughput: {t['ratio']:.0%} - **{'pass' if t['pass'] else 'FAIL'}**",
              f"- batching p99 <= batch timeout {p['timeout_ms']:.1f} ms + one batch {p['one_batch_ms']:.1f} ms "
              f"(direct batch-{DIRECT_BATCH} p50) = {p['bound_ms']:.1f} ms: {p99s} clients - "
              f"**{'pass' if p['pass'] else 'FAIL'}**",
              "", f"`server.batching.stats()` after the batching runs: {report['batching_stats']}"]
    if report["errors"]:
        lines += ["", f"**{report['errors']} requests failed** (see `error_codes` in the JSON)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
