"""Batch prediction at scale: peak memory of ``predict --input`` on 1M rows vs 10k rows, and its throughput
against the in-memory ``Predictor``.

* memory: each run is a fresh child process (``--child``), its peak RSS read by the parent from
  ``os.wait4``'s resource usage. Streaming a 1M-row file should need what a 10k-row file needs (ratio ~1);
  the in-memory path (read every text, predict, then write) on 10k and 100k rows is shown for contrast
  (it is too slow to wait for at 1M).
* throughput: rows/s of ``StreamingPredictor.predict_file`` (stream, tokenize and sort windows in tf.data,
  write JSON lines as they come) vs the in-memory path (read all texts, ``Predictor.classify`` them, write
  JSON lines), on the same rows, in this process, interleaved run by run, both models traced before timing.

The model is a classifier with a tiny random BERT (hidden 32, 2 layers: the input path, not the model, is
what is measured) unless ``--model minilm`` (untuned MiniLM-L6: realistic model cost) or ``--model-dir``.
Synthetic texts: 1-60 words (log-normal lengths) from a small English vocabulary, one per line (.txt).

    python bench/batch_predict.py                          # 1M vs 10k rows, throughput on 10k rows
    python bench/batch_predict.py --rows 20000 --small-rows 2000 --memory-rows 5000 --throughput-rows 2000  # quick
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

from tfpipeline import batch_predict  # noqa: E402  (sets up TF's environment; TensorFlow loads here)
from tfpipeline.bundle import ModelBundle  # noqa: E402
from tfpipeline.config import CLASSIFICATION  # noqa: E402
from tfpipeline.data.labels import LabelMap  # noqa: E402
from tfpipeline.data.readers import read_lines  # noqa: E402
from tfpipeline.data.tokenization import TextEncoder  # noqa: E402
from tfpipeline.models.checkpoint import resolve_checkpoint  # noqa: E402
from tfpipeline.models.task_model import build_task_model, save_random_checkpoint  # noqa: E402

WORDS = ("the a movie film plot actor scene story music was is very quite really this that it and with of about "
         "great awful boring brilliant slow fun dull moving funny sad long short best worst ever never again "
         "service delivery order refund price quality staff support product arrived late broken perfect").split()


def write_texts(path: str, rows: int, seed: int = 0) -> str:
    """``rows`` synthetic texts, one per line, with log-normal word counts (median ~12, capped at 60)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(rows):
            n = max(1, min(60, int(rng.lognormvariate(2.5, 0.7))))
            f.write(" ".join(rng.choice(WORDS) for _ in range(n)) + "\n")
    return path


def in_memory(predictor, source: str, output: str) -> int:
    """Today's way: every text in memory, one ``classify`` over all, then the results written."""
    texts = read_lines(source)
    results = predictor.classify(texts)
    with open(output, "w", encoding="utf-8") as f:
        for line, result in enumerate(results, start=1):
            f.write(json.dumps({"line": line, **result}, ensure_ascii=False) + "\n")
    return len(texts)


def streamed(streamer, source: str, output: str) -> int:
    """The streaming path: ``predict --input source --output output``."""
    if os.path.exists(output):
        os.remove(output)
    return streamer.predict_file(source, output, progress=False).written


def child(args) -> int:
    """One measured run in this fresh process; prints {"rows", "seconds"} as JSON on its last line."""
    streamer = batch_predict.StreamingPredictor(ModelBundle.load(args.model_dir), args.batch_size)
    started = time.perf_counter()
    if args.child == "stream":
        rows = streamed(streamer, args.input, args.output)
    else:
        rows = in_memory(streamer.predictor, args.input, args.output)
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
    return 0


def measured_child(mode: str, source: str, model_dir: str, batch_size: int, workdir: str) -> dict:
    """Run one ``--child`` process; its peak RSS (MB) comes from ``os.wait4``."""
    output = os.path.join(workdir, f"{mode}-{os.path.basename(source)}.jsonl")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", mode, "--input", source,
                             "--output", output, "--model-dir", model_dir, "--batch-size", str(batch_size)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} on {source} exited with {proc.returncode}: {out[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    os.remove(output)
    return {**result, "peak_rss_mb": usage.ru_maxrss / 1024.0}   # ru_maxrss is in KiB on Linux


def make_model(args, workdir: str) -> str:
    """The classifier model folder to measure: ``--model-dir``, or a fresh one (tiny random BERT or MiniLM)."""
    if args.model_dir:
        return args.model_dir
    checkpoint = resolve_checkpoint(args.model) if args.model != "tiny" else \
        save_random_checkpoint(os.path.join(workdir, "tiny_checkpoint"))
    labels = LabelMap(["negative", "positive"])
    bundle = ModelBundle(build_task_model(checkpoint, CLASSIFICATION, labels),
                         TextEncoder.from_directory(checkpoint, max_length=args.max_length), labels, CLASSIFICATION)
    return bundle.save(os.path.join(workdir, "model"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the large file")
    parser.add_argument("--small-rows", type=int, default=10_000, help="rows of the small file")
    parser.add_argument("--throughput-rows", type=int, default=10_000, help="rows of the throughput comparison")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per path (interleaved)")
    parser.add_argument("--model", default="tiny", help="tiny (random BERT, default), minilm, or a checkpoint")
    parser.add_argument("--model-dir", help="a trained classifier model folder instead of --model")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--memory-rows", type=int, default=100_000,
                        help="a second, larger file for the in-memory path's memory (0: none; it is slow at 1M)")
    parser.add_argument("--out", default=os.path.join("bench", "results", "batch_predict.json"))
    parser.add_argument("--child", choices=["stream", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    ratios, runs = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        model_dir = make_model(args, workdir)
        started = time.perf_counter()
        small = write_texts(os.path.join(workdir, f"small-{args.small_rows}.txt"), args.small_rows, seed=1)
        large = write_texts(os.path.join(workdir, f"large-{args.rows}.txt"), args.rows, seed=2)
        print(f"wrote {args.small_rows:,} + {args.rows:,} synthetic rows ({os.path.getsize(large) / 2**20:.1f} MB) "
              f"in {time.perf_counter() - started:.0f} s")

        # ---- memory: fresh child processes
        plan = [("stream", small, args.small_rows), ("stream", large, args.rows), ("memory", small, args.small_rows)]
        if args.memory_rows > args.small_rows:
            plan.append(("memory", large if args.memory_rows == args.rows else
                         write_texts(os.path.join(workdir, f"medium-{args.memory_rows}.txt"), args.memory_rows,
                                     seed=4), args.memory_rows))
        for mode, source, rows in plan:
            run = measured_child(mode, source, model_dir, args.batch_size, workdir)
            runs[f"{mode} {rows}"] = run
            print(f"{mode:>6} {rows:>9,} rows: peak RSS {run['peak_rss_mb']:,.0f} MB, {run['seconds']:.1f} s "
                  f"({run['rows'] / run['seconds']:,.0f} rows/s)", flush=True)
        for mode in ("stream", "memory"):
            values = {f"{mode} {rows:,} rows": runs[f"{m} {rows}"]["peak_rss_mb"] for m, _, rows in plan if m == mode}
            if len(values) == 2:
                ratios += benchlib.ratio_rows(f"peak RSS ({mode})", "MB", values, f"{mode} {args.small_rows:,} rows",
                                              higher_is_better=False)

        # ---- throughput: this process, interleaved
        streamer = batch_predict.StreamingPredictor(ModelBundle.load(model_dir), args.batch_size)
        source = write_texts(os.path.join(workdir, "throughput.txt"), args.throughput_rows, seed=3)
        output = os.path.join(workdir, "throughput.jsonl")
        times = benchlib.interleaved({"in-memory Predictor": lambda i: in_memory(streamer.predictor, source, output),
                                      "streaming predict_file": lambda i: streamed(streamer, source, output)},
                                     args.repeats, warmup=1)
        rates = {name: args.throughput_rows / min(t["wall"]) for name, t in times.items()}
        for name, rate in rates.items():
            print(f"{name:<24} {rate:,.0f} rows/s (best of {args.repeats} on {args.throughput_rows:,} rows)")
        ratios += benchlib.ratio_rows("throughput", "rows/s", rates, "in-memory Predictor", higher_is_better=True)
    print()
    benchlib.print_ratio_table(ratios, "batch prediction: memory and throughput", group_by="section")
    benchlib.write_json(args.out, {"runs": runs, "throughput": times, "ratios": ratios,
                                   "machine": benchlib.machine_info(), "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
