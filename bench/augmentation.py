"""Does text augmentation help with little labelled data? MiniLM with no augmentation vs EDA vs span cutoff.

Why: augmentation is sold for low-data regimes, and it can as easily hurt
(EDA's deletions can remove the one word a label hangs on). This script
measures it the way a user would use it: ``train`` with no recipe flags, only
``--augmentation``, on random training subsets of a few sizes, three seeds
each. Every variant of a (dataset, size, seed) cell trains on the *same*
subset, so differences are paired. Validation (epoch selection) is a fixed
sample of the dataset's validation split; scores are on the full test split.

    python bench/augmentation.py                                   # 2 datasets x 3 sizes x 3 seeds x 3 variants
    python bench/augmentation.py --sizes 50 --seeds 1              # minutes: proves it runs
    python bench/augmentation.py --readme README.md                # also rewrite the README's table
    python bench/augmentation.py --table-only --readme README.md   # the table of the runs done so far

Results go to bench/augmentation_runs.json after every run, and a rerun with
the same ``--out`` skips the runs already there (an interrupted benchmark
resumes). Unlike bench/results/, that file is committed: the full grid is
about two hours of training on 2 cores, more than one session, so it is
continued across machines. Each run records its test accuracy, macro-F1,
epochs and training seconds (seconds only comparable within one run).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import random
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfpipeline  # noqa: E402,F401

import benchlib  # noqa: E402

README_START, README_END = "<!-- augmentation-table:start -->", "<!-- augmentation-table:end -->"
VARIANTS = ("none", "eda", "cutoff")
VALIDATION_SIZE = 200


def subset(examples, size: int, seed: int) -> list:
    """``size`` training examples, stratified by label (every class keeps its share, at least one each)."""
    by_label = collections.defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    rng = random.Random(seed)
    picked = []
    for label in sorted(by_label):
        share = max(1, round(size * len(by_label[label]) / len(examples)))
        picked += rng.sample(by_label[label], min(share, len(by_label[label])))
    rng.shuffle(picked)
    return picked[:size]


def run_key(dataset: str, size: int, seed: int, variant: str) -> str:
    return f"{dataset}/{size}/{seed}/{variant}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="rotten_tomatoes,trec_questions")
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--readme")
    parser.add_argument("--table-only", action="store_true", help="train nothing: print (and --readme) the table "
                        "of the runs already in --out")
    parser.add_argument("--out", default=os.path.join("bench", "augmentation_runs.json"))
    args = parser.parse_args(argv)

    from tfpipeline.data.examples import TaskData
    from tfpipeline.data.sources import load_task_data
    from tfpipeline.training.trainer import train

    done = {}
    if os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            done = json.load(f).get("runs", {})
    datasets, sizes = args.datasets.split(","), [int(s) for s in args.sizes.split(",")]
    variants = args.variants.split(",")
    loaded = {} if args.table_only else {name: load_task_data(dataset=name) for name in datasets}
    if args.table_only:
        sizes = []
    for size in sizes:                       # small sizes of every dataset first: a cut-short run still compares
        for name in datasets:
            full = loaded[name]
            validation = random.Random(0).sample(full.validation, min(VALIDATION_SIZE, len(full.validation)))
            for seed in range(args.seeds):
                train_examples = subset(full.train, size, seed)
                for variant in variants:
                    key = run_key(name, size, seed, variant)
                    if key in done:
                        continue
                    data = TaskData(name, full.task, train=train_examples, validation=validation, test=full.test,
                                    labels=full.labels)
                    with tempfile.TemporaryDirectory() as runs:
                        result = train(data=data, output_dir=os.path.join(runs, "m"), augmentation=variant,
                                       seed=seed, verbose=0)
                    done[key] = {"accuracy": result.report["accuracy"], "macro_f1": result.report["macro_f1"],
                                 "epochs_run": result.report["epochs"]["run"],
                                 "train_seconds": round(result.train_seconds, 1)}
                    print(f"{key}: accuracy {done[key]['accuracy']:.4f}, macro-F1 {done[key]['macro_f1']:.4f}, "
                          f"{done[key]['epochs_run']} epochs, {done[key]['train_seconds']} s", flush=True)
                    benchlib.write_json(args.out, {"runs": done, "machine": benchlib.machine_info()})

    lines = table(done, datasets, [int(s) for s in args.sizes.split(",")], variants, args.seeds)
    print("\n".join(lines))
    if args.readme:
        benchlib.replace_readme_block(args.readme, README_START, README_END, lines)
    return 0


def table(done: dict, datasets, sizes, variants, seeds: int) -> list:
    """Mean test accuracy over seeds (and its range), and each variant's mean paired gain over none."""
    day = datetime.date.today().isoformat()
    lines = [f"MiniLM, no recipe flags except `--augmentation`; mean test accuracy over {seeds} seeds (min-max), "
             f"stratified random training subsets, the same subset for every variant; validation: "
             f"{VALIDATION_SIZE} examples of the validation split; {day} (`python bench/augmentation.py`):", "",
             "| dataset | train size | " + " | ".join(variants) + " |",
             "|---|---|" + "---|" * len(variants)]
    for name in datasets:
        for size in sizes:
            cells = []
            for variant in variants:
                scores = [done[run_key(name, size, s, variant)]["accuracy"] for s in range(seeds)
                          if run_key(name, size, s, variant) in done]
                if not scores:
                    cells.append("-")
                    continue
                gains = [done[run_key(name, size, s, variant)]["accuracy"] - done[run_key(name, size, s, "none")]
                         ["accuracy"] for s in range(seeds) if run_key(name, size, s, variant) in done
                         and run_key(name, size, s, "none") in done]
                gain = f", {statistics.mean(gains) * 100:+.1f}" if variant != "none" and gains else ""
                partial = f", {len(scores)} of {seeds} seeds" if len(scores) < seeds else ""
                cells.append(f"{statistics.mean(scores):.3f} ({min(scores):.3f}-{max(scores):.3f}{gain}{partial})")
            if any(cell != "-" for cell in cells):
                lines.append(f"| {name} | {size:,} | " + " | ".join(cells) + " |")
    lines += ["", "In brackets: the range over seeds, then the mean paired change in accuracy points against "
                  "`none` for the same subsets."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
