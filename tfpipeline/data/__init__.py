"""Data: readers, built-in catalog, tokenization / image preprocessing and tf.data pipelines."""
from tfpipeline.data.examples import (CLASSIFICATION, IMAGE_CLASSIFICATION, NER, ImageExample, TaskData, TextExample,
                                      TokenExample)

__all__ = ["CLASSIFICATION", "NER", "IMAGE_CLASSIFICATION", "TaskData", "TextExample", "TokenExample", "ImageExample"]
