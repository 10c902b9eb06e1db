"""Pretrained checkpoints, Keras task models, PEFT, and the registry of model kinds.

Importing the package registers every model kind (``kinds``: task models;
``zeroshot``: label-vector classifiers; ``cloze``: masked-LM prompt classifiers).
"""
from tfpipeline.models import cloze, kinds, zeroshot  # noqa: F401  (register their model kinds)
