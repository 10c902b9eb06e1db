"""Image classification: the offline pretrained default (MobileNetV2, ImageNet) vs the same network from scratch.

Why: the image default is only worth shipping if its pretrained weights beat
a random start by a clear margin at equal cost. Both runs call
``tfpipeline.training.trainer.train`` exactly as ``tfpipeline train
--dataset NAME`` does with no recipe flag (``--from-scratch`` for the
baseline), in this process, one after the other, on the same examples;
then the pretrained model is exported and its SavedModel timed at batch 1
and batch 32 on encoded PNG bytes (the serving signature, decoding
included). Ratios are pretrained / from scratch, from this run.

    python bench/image_classification.py          # fashion_mnist: 4,000 training, 2,000 validation/test images
    python bench/image_classification.py --limit-train 600 --limit-eval 500   # minutes: proves it runs
    python bench/image_classification.py --readme README.md       # also rewrite the README's image table

Writes bench/results/image_classification.json and .md; ``--readme`` replaces
the block between the README's ``image-table`` markers.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfpipeline  # noqa: E402,F401

import benchlib  # noqa: E402

README_START, README_END = "<!-- image-table:start -->", "<!-- image-table:end -->"
OUT = os.path.join("bench", "results", "image_classification.json")


def train_once(args, from_scratch: bool, runs: str) -> dict:
    from tfpipeline.training.trainer import train

    name = "from_scratch" if from_scratch else "pretrained"
    started = time.perf_counter()
    result = train(dataset=args.dataset, limit_train=args.limit_train, limit_eval=args.limit_eval,
                   from_scratch=from_scratch, output_dir=os.path.join(runs, name), overwrite=True,
                   verbose=2, seed=args.seed)
    report = result.report
    return {"init": name, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "examples": report["examples"], "train_seconds": result.train_seconds,
            "run_seconds": time.perf_counter() - started, "epochs": report["epochs"],
            "recipe": {k: v["value"] for k, v in report["recipe"].items()}, "model_dir": result.output_dir}


def serving_latency(model_dir: str, images: list, requests: int, batches: int) -> dict:
    """p50 batch-1 latency and batch-32 throughput of the exported ``serving_default`` (bytes in)."""
    import tensorflow as tf

    from tfpipeline.bundle import ModelBundle

    with tempfile.TemporaryDirectory() as base:
        path = ModelBundle.load(model_dir).export(base, "bench")
        fn = tf.saved_model.load(path).signatures["serving_default"]
        one = [tf.constant([images[i % len(images)]]) for i in range(requests)]
        many = [tf.constant([images[(i * 32 + j) % len(images)] for j in range(32)]) for i in range(batches)]
        times = benchlib.interleaved({"batch1": lambda i: fn(image_bytes=one[i % len(one)]),
                                      "batch32": lambda i: fn(image_bytes=many[i % len(many)])},
                                     max(requests, batches), warmup=2)
    batch1 = benchlib.summarize(times["batch1"]["wall"])
    batch32 = benchlib.summarize(times["batch32"]["wall"], [32] * len(times["batch32"]["wall"]))
    return {"batch1_p50_ms": batch1["p50_ms"], "batch32_images_per_s": batch32["items_per_s"]}


def table(rows: list, latency: dict, args, day: str) -> list:
    pre, scratch = rows
    lines = [f"Fashion-MNIST ({pre['examples']:,} test images; training on the first {args.limit_train:,} "
             f"training images), MobileNetV2 at {pre['recipe']['image_size']}x{pre['recipe']['image_size']}, "
             f"no recipe flags, 2 cores, {day} (`python bench/image_classification.py`):", "",
             "| initialisation | accuracy | macro-F1 | epochs (kept / run) | train time | vs scratch |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        ratio = row["train_seconds"] / scratch["train_seconds"]
        lines.append(f"| {row['init'].replace('_', ' ')} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | "
                     f"{row['epochs']['kept']} / {row['epochs']['run']} | {row['train_seconds'] / 60:.1f} min | "
                     f"accuracy {row['accuracy'] - scratch['accuracy']:+.3f}, time {ratio:.2f}x |")
    lines += ["", f"Serving the pretrained export (`serving_default`, PNG bytes in, decoding and resizing in the "
                  f"graph): batch-1 p50 {latency['batch1_p50_ms']:.1f} ms, batch-32 "
                  f"{latency['batch32_images_per_s']:.0f} images/s."]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--limit-train", type=int, default=4000, help="first N training images")
    parser.add_argument("--limit-eval", type=int, default=2000, help="first N validation and test images")
    parser.add_argument("--requests", type=int, default=60, help="batch-1 serving calls timed")
    parser.add_argument("--batches", type=int, default=10, help="batch-32 serving calls timed")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--readme", help="rewrite this README's image-table block")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)

    from tfpipeline.data.catalog import load_dataset

    with tempfile.TemporaryDirectory() as runs:
        rows = [train_once(args, False, runs), train_once(args, True, runs)]
        test = load_dataset(args.dataset, seed=args.seed).test[:64]
        latency = serving_latency(rows[0]["model_dir"], [ex.image for ex in test], args.requests, args.batches)
    day = datetime.date.today().isoformat()
    lines = table(rows, latency, args, day)
    print("\n".join(lines))
    ratios = (benchlib.ratio_rows("image_classification", "test accuracy", {r["init"]: r["accuracy"] for r in rows},
                                  baseline="from_scratch", higher_is_better=True)
              + benchlib.ratio_rows("image_classification", "train seconds",
                                    {r["init"]: r["train_seconds"] for r in rows}, baseline="from_scratch",
                                    higher_is_better=False))
    benchlib.print_ratio_table(ratios, "pretrained vs from scratch (same run)")
    benchlib.write_json(args.out, {"rows": rows, "latency": latency, "ratios": ratios,
                                   "machine": benchlib.machine_info(), "args": vars(args)})
    with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    if args.readme:
        benchlib.replace_readme_block(args.readme, README_START, README_END, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
