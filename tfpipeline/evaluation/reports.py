"""Evaluation reports as plain dicts (written as JSON) plus a printable table.

Classification: accuracy, macro-F1, sklearn per-class report, confusion matrix.
NER: seqeval *entity-level* precision/recall/F1 (strict spans), not token accuracy.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from tfpipeline.data.examples import CLASSIFICATION


def classification_report(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> Dict:
    from sklearn import metrics

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


def ner_report(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> Dict:
    from seqeval import metrics

    y_true, y_pred = [list(s) for s in y_true], [list(s) for s in y_pred]
    report = metrics.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    per_type = {k: {m: float(v) for m, v in d.items()} for k, d in report.items() if "avg" not in k}
    return {
        "task": "ner",
        "sentences": len(y_true),
        "precision": float(metrics.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, y_pred, zero_division=0)),
        "token_accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "per_type": per_type,
    }


def format_report(report: Dict) -> str:
    """Human-readable table of a report dict."""
    lines: List[str] = []
    if report["task"] == CLASSIFICATION:
        lines.append(f"{'label':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
        for name, row in report["per_class"].items():
            lines.append(f"{name[:24]:<24}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                         f"{row['f1-score']:>10.3f}{int(row['support']):>10d}")
        lines.append(f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
                     f"({report['examples']} examples)")
        cm = report["confusion_matrix"]
        if len(cm["labels"]) <= 12:
            lines.append("confusion matrix (rows = true, columns = predicted):")
            width = max(6, max(len(str(v)) for row in cm["matrix"] for v in row) + 1)
            lines.append(" " * 14 + "".join(f"{n[:width - 1]:>{width}}" for n in cm["labels"]))
            for name, row in zip(cm["labels"], cm["matrix"]):
                lines.append(f"{name[:13]:<14}" + "".join(f"{v:>{width}}" for v in row))
    else:
        lines.append(f"{'entity type':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
        for name, row in report["per_type"].items():
            lines.append(f"{name[:24]:<24}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                         f"{row['f1-score']:>10.3f}{int(row['support']):>10d}")
        lines.append(f"entity precision {report['precision']:.4f}   recall {report['recall']:.4f}   "
                     f"F1 {report['f1']:.4f}   ({report['sentences']} sentences, seqeval)")
    return "\n".join(lines)
