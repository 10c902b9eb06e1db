"""Export trained models as versioned SavedModels for TF Serving (tokenizer in the graph).

    from tfpipeline.bundle import ModelBundle
    path = ModelBundle.load("runs/rotten_tomatoes").export("exports", "sentiment")   # exports/sentiment/1

``export_model`` is the writer behind ``ModelBundle.export``. See
``signatures.py`` for the signature table (serving modules are registered per
task) and docs/serving.md for serving; ``model.tflite`` inside a SavedModel version (``--optimize
compact+tflite``, for TF Serving's ``--prefer_tflite_model``) is ``export.tflite_text``; on-device TFLite
is ``export.tflite``.
"""
from tfpipeline.export.graph_ops import CUSTOM_OPS_ALLOWED, custom_ops, saved_model_ops
from tfpipeline.export.saved_model import (ASSETS_EXTRA, METADATA_FILE, encoder_from_export, existing_versions,
                                           export_model, read_export_metadata, read_saved_model_proto,
                                           signature_table)

__all__ = ["export_model", "encoder_from_export", "existing_versions", "read_export_metadata",
           "read_saved_model_proto", "signature_table", "saved_model_ops", "custom_ops", "CUSTOM_OPS_ALLOWED",
           "ASSETS_EXTRA", "METADATA_FILE"]
