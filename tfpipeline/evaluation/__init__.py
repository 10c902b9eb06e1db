"""Evaluation reports: sklearn for classification, seqeval entity-level scores for NER."""
from tfpipeline.evaluation.reports import classification_report, format_report, ner_report

__all__ = ["classification_report", "ner_report", "format_report"]
