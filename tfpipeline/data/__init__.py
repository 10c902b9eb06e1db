"""Data: readers, built-in catalog, tokenization and tf.data pipelines."""
from tfpipeline.data.examples import CLASSIFICATION, NER, TaskData, TextExample, TokenExample

__all__ = ["CLASSIFICATION", "NER", "TaskData", "TextExample", "TokenExample"]
