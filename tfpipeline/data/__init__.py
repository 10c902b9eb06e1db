"""Data: readers, built-in catalog, tokenization and tf.data pipelines."""
from tfpipeline.data.examples import CLASSIFICATION, NER, DataError, TaskData, TextExample, TokenExample

__all__ = ["CLASSIFICATION", "NER", "DataError", "TaskData", "TextExample", "TokenExample"]
