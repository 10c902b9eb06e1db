"""Match weights across two instances of the same architecture (by name, not by position).

Keras names a weight ``<model instance scope>/<path inside the model>:0``; two
instances of one class differ only in that first scope (``..._3`` vs ``..._4``).
Recipes that build a new model from an old one (a distilled student, a
continual model with a grown head) copy weights by the rest of the name.
"""
from __future__ import annotations


def weight_key(variable) -> str:
    """'tf_bert_for_sequence_classification_3/bert/encoder/...:0' -> 'bert/encoder/...'."""
    return variable.name.split("/", 1)[1].rsplit(":", 1)[0]
