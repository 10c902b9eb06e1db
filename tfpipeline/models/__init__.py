"""Pretrained checkpoints, Keras task models, PEFT, and the registry of model kinds.

Importing the package registers every model kind (``kinds``: task models;
``zeroshot``: label-vector classifiers; ``cloze``: masked-LM prompt classifiers;
``image_model``: image classifiers; ``embedding_model``: bi-encoders).
"""
from tfpipeline.models import cloze, embedding_model, image_model, kinds, zeroshot  # noqa: F401  (register kinds)
