"""Score an exported TFLite classifier: accuracy, agreement with the float model, latency, size.

Separate from ``evaluate.py`` because a TFLite model is not a ``Predictor``:
it runs one fixed-length example per invocation, as on device, so its latency
is measured per example.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from tfpipeline.errors import DataError
from tfpipeline.evaluation.reports import classification_report
from tfpipeline.export.tflite import TFLiteClassifier
from tfpipeline.inference import Predictor


def evaluate_tflite(classifier: TFLiteClassifier, examples: Sequence, *, reference: Optional[Predictor] = None,
                    warmup: int = 3) -> Dict[str, Any]:
    """Accuracy / macro-F1 of the TFLite model on labelled ``examples``, its agreement with
    ``reference`` (a ``Predictor`` of the float Keras model, if given), latency and file size."""
    if not examples:
        raise DataError("nothing to evaluate: no examples")
    if any(ex.text_pair is not None for ex in examples):
        raise DataError("TFLite evaluation supports single-text classification examples")
    for ex in examples:
        classifier.labels.id(ex.label, ex.origin)
    texts = [ex.text for ex in examples]
    classifier.class_probabilities(texts[:warmup])
    probs = classifier.class_probabilities(texts)
    latencies = np.asarray(classifier.last_latencies_ms)
    predicted = [classifier.labels.name(i) for i in probs.argmax(axis=1)]
    report = classification_report([ex.label for ex in examples], predicted, classifier.labels.names)
    result = {"examples": len(examples), "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
              "latency_ms_mean": float(latencies.mean()), "latency_ms_p50": float(np.median(latencies)),
              "latency_ms_p95": float(np.percentile(latencies, 95)),
              "size_bytes": os.path.getsize(classifier.path), "max_length": classifier.max_length}
    if reference is not None:
        ref = reference.class_probabilities(texts)
        result["agreement"] = float((ref.argmax(axis=1) == probs.argmax(axis=1)).mean())
        result["max_abs_prob_diff"] = float(np.abs(ref - probs).max())
    return result
