"""Evaluation reports as plain dicts (written as JSON) plus a printable table.

Classification: accuracy, macro-F1, sklearn per-class report, confusion matrix.
NER: seqeval *entity-level* precision/recall/F1 (strict spans), not token accuracy.
Regression: Pearson / Spearman correlation, MAE, RMSE per target.
Embedding: recall@k and MRR of each query's matching text among a pool of candidates.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
from scipy import stats
from seqeval import metrics as seqeval_metrics
from seqeval.metrics.sequence_labeling import get_entities
from sklearn import metrics

from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, NER, REGRESSION

REGRESSION_METRICS = ("pearson", "spearman", "mae", "rmse")


def classification_report(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> Dict:
    labels = list(labels)
    report = metrics.classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    per_class = {k: v for k, v in report.items() if k in labels}
    return {
        "task": CLASSIFICATION,
        "examples": len(y_true),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(metrics.f1_score(y_true, y_pred, labels=labels, average="weighted",
                                              zero_division=0)),
        "per_class": per_class,
        "confusion_matrix": {"labels": labels,
                             "matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def entity_count(tag_sequences: Sequence[Sequence[str]]) -> int:
    """Gold entities in BIO tag sequences, chunked as seqeval chunks them: what entity F1 is a share of."""
    return len(get_entities([list(tags) for tags in tag_sequences]))


def ner_report(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> Dict:
    y_true, y_pred = [list(s) for s in y_true], [list(s) for s in y_pred]
    report = seqeval_metrics.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    per_type = {k: {m: float(v) for m, v in d.items()} for k, d in report.items() if "avg" not in k}
    return {
        "task": NER,
        "sentences": len(y_true),
        "precision": float(seqeval_metrics.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(seqeval_metrics.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(seqeval_metrics.f1_score(y_true, y_pred, zero_division=0)),
        "token_accuracy": float(seqeval_metrics.accuracy_score(y_true, y_pred)),
        "per_type": per_type,
    }


def regression_report(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> Dict:
    """MAE, RMSE, Pearson and Spearman per target (and their means over targets), in the targets' units."""
    per_target = {}
    for column, name in enumerate(names):
        truth, pred = y_true[:, column].astype(np.float64), y_pred[:, column].astype(np.float64)
        constant = truth.std() == 0 or pred.std() == 0
        per_target[name] = {
            "mae": float(np.mean(np.abs(pred - truth))), "rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
            "pearson": 0.0 if constant else float(stats.pearsonr(truth, pred)[0]),
            "spearman": 0.0 if constant else float(stats.spearmanr(truth, pred)[0])}
    means = {m: float(np.mean([row[m] for row in per_target.values()])) for m in REGRESSION_METRICS}
    return {"task": REGRESSION, "examples": int(len(y_true)), **means, "per_target": per_target}


def retrieval_report(metrics: Dict[str, float], queries: int, candidates: int) -> Dict:
    """An ``embedding`` model's report: ranking metrics of the split's queries against a candidate pool."""
    return {"task": EMBEDDING, "queries": queries, "candidates": candidates, "metrics": list(metrics), **metrics}


def format_report(report: Dict) -> str:
    """Human-readable table of a report dict; the name column fits the longest label."""
    lines: List[str] = []
    if report["task"] == REGRESSION:
        width = max([24] + [len(name) + 2 for name in report["per_target"]])
        lines.append(f"{'target':<{width}}" + "".join(f"{m:>10}" for m in REGRESSION_METRICS))
        for name, row in report["per_target"].items():
            lines.append(f"{name:<{width}}" + "".join(f"{row[m]:>10.4f}" for m in REGRESSION_METRICS))
        lines.append(f"pearson {report['pearson']:.4f}   spearman {report['spearman']:.4f}   mae "
                     f"{report['mae']:.4f}   rmse {report['rmse']:.4f}   ({report['examples']} examples)")
        return "\n".join(lines)
    if report["task"] == EMBEDDING:
        scores = "   ".join(f"{name} {report[name]:.4f}" for name in report["metrics"])
        return f"{scores}   ({report['queries']} queries against {report['candidates']} candidates)"
    if report["task"] == CLASSIFICATION:
        rows = report["per_class"]
        width = max([24] + [len(name) + 2 for name in rows])
        lines.append(f"{'label':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
        for name, row in rows.items():
            lines.append(f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                         f"{row['f1-score']:>10.3f}{int(row['support']):>10d}")
        lines.append(f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
                     f"({report['examples']} examples)")
        cm = report["confusion_matrix"]
        if len(cm["labels"]) <= 12:
            lines.append("confusion matrix (rows = true, columns = predicted):")
            cell = max(6, max(len(str(v)) for row in cm["matrix"] for v in row) + 1)
            lines.append(" " * width + "".join(f"{n[:cell - 1]:>{cell}}" for n in cm["labels"]))
            for name, row in zip(cm["labels"], cm["matrix"]):
                lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    else:
        rows = report["per_type"]
        width = max([24] + [len(name) + 2 for name in rows])
        lines.append(f"{'entity type':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
        for name, row in rows.items():
            lines.append(f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                         f"{row['f1-score']:>10.3f}{int(row['support']):>10d}")
        lines.append(f"entity precision {report['precision']:.4f}   recall {report['recall']:.4f}   "
                     f"F1 {report['f1']:.4f}   ({report['sentences']} sentences, seqeval)")
    return "\n".join(lines)
