"""Regression on ``rotten_tomatoes_ratings``: fine-tuned MiniLM (no recipe flags) vs ridge regression on TF-IDF.

Why: a sentiment-intensity model is only worth its cost if it beats the cheap
classic on the same split. Both are trained on the training split and scored
on the test split in this process: Pearson, Spearman, MAE and RMSE (in rating
units, -4..+4), with the ridge strength chosen on the validation split.

    python bench/regression_report.py                          # full data
    python bench/regression_report.py --limit-train 500        # minutes: proves it runs
    python bench/regression_report.py --readme README.md       # also rewrite the README's regression table

Writes bench/results/regression_report.json; ``--readme`` replaces the block
between the README's ``regression-table`` markers.
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

README_START, README_END = "<!-- regression-table:start -->", "<!-- regression-table:end -->"
ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0)


def ridge_baseline(data) -> dict:
    """TF-IDF (word 1-2 grams) + ridge, alpha picked by validation Pearson; the test split's report."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    from tfpipeline.evaluation.reports import regression_report

    def arrays(examples):
        return [ex.text for ex in examples], np.asarray([ex.targets for ex in examples], np.float64)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = map(arrays, (data.train, data.validation, data.test))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train_m = vectorizer.fit_transform(train_x)
    best = max(ALPHAS, key=lambda a: np.corrcoef(Ridge(alpha=a).fit(train_m, train_y).predict(
        vectorizer.transform(val_x)).ravel(), val_y.ravel())[0, 1])
    started = time.perf_counter()
    model = Ridge(alpha=best).fit(train_m, train_y)
    seconds = time.perf_counter() - started
    report = regression_report(test_y, model.predict(vectorizer.transform(test_x)).reshape(test_y.shape),
                               data.labels)
    return {**report, "train_seconds": seconds, "alpha": best}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="rotten_tomatoes_ratings")
    parser.add_argument("--limit-train", type=int)
    parser.add_argument("--readme")
    parser.add_argument("--out", default=os.path.join("bench", "results", "regression_report.json"))
    args = parser.parse_args(argv)

    from tfpipeline.data.sources import load_task_data
    from tfpipeline.training.trainer import train

    data = load_task_data(dataset=args.dataset, limit_train=args.limit_train)
    ridge = ridge_baseline(data)
    with tempfile.TemporaryDirectory() as runs:
        result = train(data=data, output_dir=os.path.join(runs, "minilm"), verbose=2)
    minilm = {**result.report, "train_seconds": result.train_seconds}
    rows = {"MiniLM fine-tuned (no recipe flags)": minilm, f"TF-IDF + ridge (alpha {ridge['alpha']:g})": ridge}
    day = datetime.date.today().isoformat()
    lines = [f"`{args.dataset}` test split ({minilm['examples']:,} snippets; mean human rating -4..+4), trained on "
             f"{len(data.train):,}; one run, 2 cores, {day} (`python bench/regression_report.py`):", "",
             "| model | Pearson | Spearman | MAE | RMSE | train time |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['pearson']:.3f} | {r['spearman']:.3f} | {r['mae']:.3f} | {r['rmse']:.3f} | "
              f"{r['train_seconds'] / 60:.1f} min |" for name, r in rows.items()]
    print("\n".join(lines))
    ratios = benchlib.ratio_rows("regression", "test Pearson", {"minilm": minilm["pearson"],
                                                                 "tfidf_ridge": ridge["pearson"]},
                                 baseline="tfidf_ridge", higher_is_better=True)
    benchlib.print_ratio_table(ratios, "fine-tuned MiniLM vs TF-IDF + ridge (same split, same run)")
    benchlib.write_json(args.out, {"rows": rows, "ratios": ratios, "machine": benchlib.machine_info()})
    if args.readme:
        benchlib.replace_readme_block(args.readme, README_START, README_END, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
