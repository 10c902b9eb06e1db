"""Do the Integrated Gradients attributions point at the words that matter? A deletion test on real data.

Completeness (attributions add up to the score change) says the numbers are a
consistent decomposition, not that they are *faithful*. The standard check
(e.g. DeYoung et al.'s ERASER "comprehensiveness") deletes the words an
explanation ranks highest and measures how much the prediction suffers,
against deleting as many random words. On a built-in dataset's test split
(rotten_tomatoes by default), for each example:

* explain the predicted class with ``tfpipeline.evaluation.explain.Explainer``;
* delete the k words with the largest (positive) attribution, and, for each of
  ``--seeds`` seeds, k random words; deletions cut the words' character spans
  out of the text (candidates: words with a letter or digit, for both rankings,
  so random deletion is not wasted on punctuation);
* record the predicted class's probability drop (and whether the label flips).

It prints, per k, the mean drop for top-k vs random-k and their ratio (> 1:
the attributions find words that matter more than chance) and writes
bench/results/explain_deletion.json (settings, per-k numbers, per-seed random
means, completeness gaps, explain time per text).

    python bench/explain_deletion.py                                  # trains MiniLM on 2,000 sentences, 1 epoch
    python bench/explain_deletion.py --model-dir runs/rotten_tomatoes --examples 300
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfpipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402

from tfpipeline.bundle import ModelBundle  # noqa: E402
from tfpipeline.data.catalog import load_dataset  # noqa: E402
from tfpipeline.evaluation.explain import Explainer  # noqa: E402
from tfpipeline.training.trainer import train  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", help="classifier model folder (default: train one, see --train/--epochs)")
    p.add_argument("--dataset", default="rotten_tomatoes", help="built-in classification dataset")
    p.add_argument("--examples", type=int, default=100, help="test examples explained (seeded sample)")
    p.add_argument("--train", type=int, default=2000, help="training sentences when training a model")
    p.add_argument("--epochs", type=int, default=1, help="epochs when training a model")
    p.add_argument("--k", default="1,3", help="comma-separated numbers of words to delete")
    p.add_argument("--seeds", type=int, default=5, help="random deletions per example and k")
    p.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps")
    p.add_argument("--batch-size", type=int, default=64, help="path points per model call")
    p.add_argument("--seed", type=int, default=13, help="seed of the example sample and the training run")
    p.add_argument("--work-dir", help="where a trained model goes (default: a new temporary folder)")
    p.add_argument("--output", default=os.path.join(RESULTS, "explain_deletion.json"), help="JSON results path")
    return p.parse_args(argv)


def model_folder(args) -> str:
    if args.model_dir:
        return args.model_dir
    work = args.work_dir or tempfile.mkdtemp(prefix="explain_deletion_")
    out = os.path.join(work, "model")
    print(f"[bench] training on {args.train} {args.dataset} sentences, {args.epochs} epoch(s) -> {out}")
    train(dataset=args.dataset, limit_train=args.train, limit_eval=200, epochs=args.epochs, output_dir=out,
          seed=args.seed, overwrite=True, verbose=1)
    return out


def model_accuracy(model_dir: str):
    """The model folder's recorded evaluation accuracy (None if it has no report)."""
    path = os.path.join(model_dir, "eval_report.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    return {"accuracy": report.get("accuracy"), "split": report.get("split"), "examples": report.get("examples")}


def sample_texts(dataset: str, count: int, seed: int) -> List[str]:
    data = load_dataset(dataset)
    pool = list(data.test or data.validation)
    return [ex.text for ex in random.Random(seed).sample(pool, min(count, len(pool)))]


def candidates(result: dict) -> List[int]:
    """Indices of the words that may be deleted: those with a letter or digit."""
    return [i for i, w in enumerate(result["words"]) if any(ch.isalnum() for ch in w["text"])]


def without_words(result: dict, indices: Sequence[int]) -> str:
    """The text with the given words' character spans cut out (whitespace collapsed)."""
    text, cut = result["text"], sorted(indices, reverse=True)
    for i in cut:
        word = result["words"][i]
        text = text[:word["start"]] + " " + text[word["end"]:]
    return re.sub(r"\s+", " ", text).strip()


def top_k_words(result: dict, pool: Sequence[int], k: int) -> List[int]:
    attributions = result["explanations"][0]["word_attributions"]
    return sorted(pool, key=lambda i: -attributions[i])[:k]


def deletion_sets(results: Sequence[dict], k: int, seeds: int):
    """(example index, "top" or "random", seed, deleted text) for every example with more than k candidates."""
    out = []
    for index, result in enumerate(results):
        pool = candidates(result)
        if len(pool) <= k:
            continue
        out.append((index, "top", None, without_words(result, top_k_words(result, pool, k))))
        for seed in range(seeds):
            picked = random.Random(f"{seed}:{index}:{k}").sample(pool, k)
            out.append((index, "random", seed, without_words(result, picked)))
    return out


def measure_k(predictor, results, labels, before, k: int, seeds: int) -> Dict:
    """Mean probability drops (and label flips) after deleting the top-k vs k random words, for one k."""
    rows = deletion_sets(results, k, seeds)
    probabilities = predictor.class_probabilities([text for *_, text in rows])
    top: Dict[int, float] = {}
    random_drops: Dict[int, List[float]] = {}
    per_seed: Dict[int, List[float]] = {}
    flips: Dict[str, List[bool]] = {"top": [], "random": []}
    for (index, ranking, seed, _), probs in zip(rows, probabilities):
        drop = float(before[index] - probs[labels[index]])
        flips[ranking].append(int(np.argmax(probs)) != labels[index])
        if ranking == "top":
            top[index] = drop
        else:
            random_drops.setdefault(index, []).append(drop)
            per_seed.setdefault(seed, []).append(drop)
    top_drop = statistics.fmean(top.values())
    random_drop = statistics.fmean(d for drops in random_drops.values() for d in drops)
    return {"k": k, "examples": len(top), "top_k_drop": top_drop, "random_k_drop": random_drop,
            "ratio": top_drop / random_drop if random_drop else float("inf"),
            "top_k_flip_rate": statistics.fmean(flips["top"]), "random_k_flip_rate": statistics.fmean(flips["random"]),
            "random_k_drop_per_seed": [statistics.fmean(v) for _, v in sorted(per_seed.items())],
            "top_beats_random_fraction": statistics.fmean(top[i] > statistics.fmean(random_drops[i]) for i in top)}


def main(argv=None) -> int:
    args = parse_args(argv)
    ks = [int(k) for k in args.k.split(",") if k.strip()]
    model_dir = model_folder(args)
    bundle = ModelBundle.load(model_dir)
    texts = sample_texts(args.dataset, args.examples, args.seed)
    explainer = Explainer(bundle, steps=args.steps, batch_size=args.batch_size)
    explainer.explain(texts[:2])                           # trace once before timing
    start = time.perf_counter()
    results = explainer.explain(texts)
    explain_seconds = time.perf_counter() - start
    labels = [bundle.labels.id(r["prediction"]["label"]) for r in results]
    before = np.array([r["prediction"]["score"] for r in results])
    predictor = bundle.predictor(64)
    per_k = [measure_k(predictor, results, labels, before, k, args.seeds) for k in ks]
    gaps = [abs(r["explanations"][0]["completeness_gap"]) for r in results]
    differences = [abs(r["explanations"][0]["score"] - r["explanations"][0]["baseline_score"]) for r in results]
    summary = {"dataset": args.dataset, "model_dir": model_dir, "examples": len(texts), "steps": args.steps,
               "seeds": args.seeds, "trained": None if args.model_dir else {"train": args.train, "epochs": args.epochs},
               "model_evaluation": model_accuracy(model_dir),
               "explain_seconds_per_text": explain_seconds / len(texts),
               "completeness_gap": {"mean_abs": statistics.fmean(gaps), "max_abs": max(gaps),
                                    "mean_abs_score_difference": statistics.fmean(differences)},
               "deletion": per_k, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    print_summary(summary)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(f"[bench] written to {args.output}")
    return 0


def print_summary(summary: dict) -> None:
    gap = summary["completeness_gap"]
    print(f"[bench] {summary['examples']} {summary['dataset']} test texts, {summary['steps']} steps: "
          f"{summary['explain_seconds_per_text']:.3f} s per text; completeness gap mean |gap| {gap['mean_abs']:.2e} "
          f"(max {gap['max_abs']:.2e}) vs mean |score change| {gap['mean_abs_score_difference']:.3f}")
    print(f"{'k':>3} {'texts':>6} {'drop top-k':>11} {'drop random-k':>14} {'ratio':>7} {'flips top':>10} "
          f"{'flips rand':>11} {'top > rand':>11}")
    for row in summary["deletion"]:
        print(f"{row['k']:>3} {row['examples']:>6} {row['top_k_drop']:>11.4f} {row['random_k_drop']:>14.4f} "
              f"{row['ratio']:>7.2f} {row['top_k_flip_rate']:>10.2f} {row['random_k_flip_rate']:>11.2f} "
              f"{row['top_beats_random_fraction']:>11.2f}")
    print("(drop = fall of the predicted class's probability; ratio > 1: deleting the top-attributed words hurts "
          "more than deleting random words)")


if __name__ == "__main__":
    sys.exit(main())
