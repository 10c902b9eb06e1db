"""Export trained models as versioned SavedModels for TF Serving (tokenizer in the graph).

    from tfpipeline.export import export_model
    path = export_model("runs/rotten_tomatoes", "exports", "sentiment")   # exports/sentiment/1

See ``signatures.py`` for the signature table and docs/serving.md for serving;
on-device TFLite conversion is ``tfpipeline.models.compression.export_tflite``.
"""
from tfpipeline.export.graph_ops import CUSTOM_OPS_ALLOWED, custom_ops, saved_model_ops
from tfpipeline.export.saved_model import (ExportError, encoder_from_export, existing_versions, export_model,
                                           read_export_metadata, signature_table)

__all__ = ["export_model", "ExportError", "encoder_from_export", "existing_versions", "read_export_metadata",
           "signature_table", "saved_model_ops", "custom_ops", "CUSTOM_OPS_ALLOWED"]
