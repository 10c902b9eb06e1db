"""TFLite conversion of an export's ``predict_ids`` signature (on-device / edge use).

Only the ids signature converts: the raw-text signatures need tensorflow-text
ops that TFLite lacks, so on device the app tokenizes (same vocab.txt, which
sits in the export's assets/) and feeds ``input_ids`` + ``attention_mask``.
``quantize="dynamic"`` stores weights as int8 (about 4x smaller); check the
effect with ``compare_tflite`` before shipping.
"""
from __future__ import annotations

import os
from typing import Dict, Sequence

from tfpipeline import _env  # noqa: F401

import numpy as np
import tensorflow as tf

from tfpipeline.export.saved_model import ExportError, encoder_from_export

QUANTIZATION = ("none", "dynamic", "float16")
SIGNATURE = "predict_ids"


def export_tflite(export_dir: str, out_file: str, quantize: str = "dynamic") -> str:
    """Convert ``<export_dir>``'s predict_ids signature to a .tflite file; returns its path."""
    if quantize not in QUANTIZATION:
        raise ExportError(f"quantize must be one of {QUANTIZATION}, got {quantize!r}")
    import tensorflow_text  # noqa: F401  (the SavedModel's other signatures reference its ops)

    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir, signature_keys=[SIGNATURE])
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    flatbuffer = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    with open(out_file, "wb") as f:
        f.write(flatbuffer)
    return out_file


def compare_tflite(tflite_file: str, export_dir: str, texts: Sequence[str]) -> Dict[str, float]:
    """Run the .tflite model and the SavedModel's predict_ids on ``texts``: label agreement and score drift.

    For NER, agreement counts every real (non-padding) token position.
    """
    import tensorflow_text  # noqa: F401

    encoder = encoder_from_export(export_dir)
    signature = tf.saved_model.load(export_dir).signatures[SIGNATURE]
    interpreter = tf.lite.Interpreter(model_path=tflite_file)
    run_lite = interpreter.get_signature_runner(SIGNATURE)
    agree = total = 0
    max_diff = 0.0
    for text in texts:   # one at a time: the interpreter resizes to each input's shape
        features = encoder.pad(encoder.encode(tf.constant([text])))
        ids, mask = features["input_ids"].numpy(), features["attention_mask"].numpy()
        reference = signature(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
        lite = run_lite(input_ids=ids, attention_mask=mask)
        ref_ids, lite_ids = reference["label_id"].numpy(), lite["label_id"]
        agree += int(np.sum(ref_ids == lite_ids))
        total += int(ref_ids.size)
        max_diff = max(max_diff, float(np.max(np.abs(reference["scores"].numpy() - lite["scores"]))))
    return {"texts": len(texts), "label_agreement": agree / max(total, 1), "max_abs_score_diff": max_diff,
            "tflite_bytes": os.path.getsize(tflite_file)}
