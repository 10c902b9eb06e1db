"""Serving latency benchmark: Keras Predictor vs in-process SavedModel vs gRPC vs REST, batch 1 and 32.

Everything runs in one process on loopback, so the numbers are comparable
with each other (ratios against the Keras ``Predictor`` baseline of the same
run) but not with other machines. Each path runs the same texts, one request
in flight at a time (latency, not server concurrency; throughput = examples
over the summed request times), in bounded loops.

    python bench/serving_latency.py                          # tiny random model (seconds)
    python bench/serving_latency.py --checkpoint minilm      # MiniLM-L6 backbone, random head
    python bench/serving_latency.py --model-dir runs/rotten_tomatoes --requests 100
    python bench/serving_latency.py --checkpoint minilm --threads 1   # TF intra/inter-op threads

Prints the ratio table (p50 latency and examples/s of each path against the Keras
``Predictor``, at batch 1 and 32) and writes bench/results/serving_latency.json (with a
``ratios`` list) and serving_latency.png next to it (the plot needs matplotlib).
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `serving` from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

import tfpipeline  # noqa: E402,F401

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BASELINE = "keras Predictor"
WORDS = ("the a service staff flight hotel movie was were very quite not really great awful slow friendly "
         "late on time in Paris London with my family and friends yesterday booking refund support").split()


def sample_texts(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for _ in range(n)]


def build_model_dir(checkpoint: str, task: str, root: str, max_length: int) -> str:
    """A model folder with a random head on ``checkpoint`` (``tiny`` = random 2-layer BERT)."""
    from tfpipeline.bundle import ModelBundle
    from tfpipeline.data.labels import LabelMap
    from tfpipeline.data.tokenization import TextEncoder
    from tfpipeline.models.checkpoint import resolve_checkpoint
    from tfpipeline.models.task_model import build_task_model, save_random_checkpoint

    if checkpoint == "tiny":
        checkpoint = save_random_checkpoint(os.path.join(root, "tiny_checkpoint"))
    labels = LabelMap(["neg", "pos"] if task == "classification" else ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    model = build_task_model(checkpoint, task, labels)
    encoder = TextEncoder.from_directory(resolve_checkpoint(checkpoint), max_length=max_length)
    return ModelBundle(model, encoder, labels, task).save(os.path.join(root, "model"))


def time_paths(paths: dict, batches: list, warmup: int) -> dict:
    """Per-request latencies (ms) of every path on the same batches.

    Paths are interleaved request by request (in rotating order), so background
    load on a shared machine hits all of them alike and the ratios stay fair.
    """
    names = list(paths)
    for batch in batches[:warmup]:
        for name in names:
            paths[name](batch)
    latencies = {name: [] for name in names}
    for i, batch in enumerate(batches):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            paths[name](batch)
            latencies[name].append((time.perf_counter() - t0) * 1000)
    examples = sum(len(b) for b in batches)
    return {name: {"requests": len(values), "p50_ms": float(np.percentile(values, 50)),
                   "p99_ms": float(np.percentile(values, 99)), "mean_ms": float(np.mean(values)),
                   "examples_per_s": examples / (sum(values) / 1000)}
            for name, values in latencies.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a trained model folder (default: build one with --checkpoint)")
    parser.add_argument("--checkpoint", default="tiny", help="'tiny' (random 2-layer BERT), 'minilm' or a path")
    parser.add_argument("--task", default="classification", choices=["classification", "ner"])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--requests", type=int, default=200, help="timed requests at batch 1")
    parser.add_argument("--batch-requests", type=int, default=20, help="timed requests at batch 32")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra- and inter-op threads (0 = TF's default: all cores)")
    parser.add_argument("--out", default="bench/results/serving_latency.json")
    args = parser.parse_args(argv)
    if args.threads:
        benchlib.configure_tf_threads(args.threads)

    import tensorflow_text  # noqa: F401

    from serving import GrpcClient, Limits, ModelServer, RestClient
    from tfpipeline.bundle import ModelBundle

    with tempfile.TemporaryDirectory() as root:
        model_dir = args.model_dir or build_model_dir(args.checkpoint, args.task, root, args.max_length)
        bundle = ModelBundle.load(model_dir)
        predictor = bundle.predictor()
        task = predictor.task
        t0 = time.perf_counter()
        export_path = bundle.export(os.path.join(root, "exports"), "bench")
        export_seconds = time.perf_counter() - t0
        saved = tf.saved_model.load(export_path).signatures["serving_default"]

        keras_call = predictor.class_probabilities if task == "classification" else predictor.extract
        paths = {BASELINE: keras_call,
                 "SavedModel in-process": lambda texts: saved(text=tf.constant(texts))}
        results = {}
        with ModelServer(os.path.join(root, "exports"), grpc_port=0, rest_port=0, poll_seconds=0,
                         limits=Limits(max_batch_size=64, max_text_bytes=100_000)) as server:
            grpc_client = GrpcClient(server.grpc_target, "bench")
            rest_client = RestClient(server.rest_url, "bench")
            paths["gRPC (embedded server)"] = grpc_client.predict_texts
            paths["REST (embedded server)"] = rest_client.predict_texts
            for batch_size, count in ((1, args.requests), (32, args.batch_requests)):
                texts = sample_texts(batch_size * count, seed=batch_size)
                batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
                results[batch_size] = time_paths(paths, batches, args.warmup)
            grpc_client.close()

    rows = ratio_rows(results)
    print_table(results)
    print()
    label = args.model_dir or args.checkpoint
    table = benchlib.print_ratio_table(rows, title=f"serving latency ({label}, {task}); baseline = {BASELINE}")
    report = {"benchmark": "serving_latency", "model_dir": args.model_dir,
              "checkpoint": None if args.model_dir else args.checkpoint, "task": task,
              "max_length": predictor.encoder.max_length, "export_seconds": export_seconds,
              "threads": args.threads or None,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
                          "loadavg_1_5_15": benchlib.machine_info().get("loadavg_1_5_15")},
              "results": {str(b): r for b, r in results.items()}, "ratios": rows, "table": table}
    benchlib.write_json(args.out, report)
    plot = benchlib.plot_ratios(rows, os.path.splitext(args.out)[0] + ".png",
                                f"serving latency vs {BASELINE} ({label}, {task}, one process, loopback)")
    print(f"written to {args.out}" + (f" and {plot}" if plot else ""))
    return report


def ratio_rows(results: dict) -> list:
    """Per batch size: p50 latency (lower is better) and examples/s of every path vs the Keras Predictor."""
    rows = []
    for batch_size, paths in results.items():
        section = f"batch {batch_size}"
        rows += benchlib.ratio_rows(section, "p50 latency ms", {n: r["p50_ms"] for n, r in paths.items()},
                                    BASELINE, higher_is_better=False)
        rows += benchlib.ratio_rows(section, "examples/s", {n: r["examples_per_s"] for n, r in paths.items()},
                                    BASELINE, higher_is_better=True)
    return rows


def print_table(results: dict) -> None:
    """Absolute numbers of this run (the ratio table follows)."""
    print(f"{'batch':>5}  {'path':<24}{'p50 ms':>9}{'p99 ms':>9}{'ex/s':>10}")
    for batch_size, rows in results.items():
        for name, r in rows.items():
            print(f"{batch_size:>5}  {name:<24}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['examples_per_s']:>10.1f}")


if __name__ == "__main__":
    main()
