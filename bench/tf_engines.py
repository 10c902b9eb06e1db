"""tfpipeline's side of the inference comparison: the exported SavedModel, loaded the way a server would.

Uses ``tfpipeline.export.export_model`` (signatures ``predict_ids`` for token
ids and ``serving_default`` for raw text). If that package is not present
(older checkouts), a minimal SavedModel with the same two signatures is
written with ``tf.saved_model.save`` instead, and the result says so.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Tuple

from tfpipeline import _env  # noqa: F401

import numpy as np
import tensorflow as tf


def export_saved_model(model, encoder, labels, task: str, base_dir: str) -> Tuple[str, str]:
    """Write the SavedModel under ``base_dir``; returns (path, how) with how = export_model | fallback."""
    try:
        from tfpipeline.export import export_model
    except ImportError:
        return _fallback_export(model, encoder, os.path.join(base_dir, "fallback", "1")), "fallback"
    return export_model((model, encoder, labels, task), base_dir, "bench"), "export_model"


def _fallback_export(model, encoder, path: str) -> str:
    """Same signature names as tfpipeline.export, for checkouts without it."""
    module = tf.Module()
    module.encoder = encoder
    module.weights = list(model.variables)

    def scores(features):
        return {"scores": tf.nn.softmax(model(features, training=False), axis=-1)}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                                  tf.TensorSpec([None, None], tf.int32, name="attention_mask")])
    def predict_ids(input_ids, attention_mask):
        return scores({"input_ids": input_ids, "attention_mask": attention_mask,
                       "token_type_ids": tf.zeros_like(input_ids)})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def predict_text(text):
        return scores(encoder.pad(encoder.encode(text)))

    tf.saved_model.save(module, path, signatures={"serving_default": predict_text, "predict_ids": predict_ids})
    return path


def load_signatures(path: str) -> Dict[str, Callable]:
    """{'ids': f(ids int32, mask int32) -> scores, 'text': f(list[str]) -> scores} from the SavedModel."""
    loaded = tf.saved_model.load(path)
    ids_sig = loaded.signatures["predict_ids"]
    text_sig = loaded.signatures["serving_default"]

    def ids_fn(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return ids_sig(input_ids=tf.constant(input_ids), attention_mask=tf.constant(attention_mask))["scores"].numpy()

    def text_fn(texts) -> np.ndarray:
        return text_sig(text=tf.constant(list(texts)))["scores"].numpy()

    ids_fn.loaded = text_fn.loaded = loaded   # keep the SavedModel alive with its functions
    return {"ids": ids_fn, "text": text_fn}


def encode_ids(encoder, texts) -> Tuple[np.ndarray, np.ndarray]:
    """tfpipeline's tokenization of one request batch, padded to its longest text (int32)."""
    features = encoder.pad(encoder.encode(tf.constant(list(texts))))
    return features["input_ids"].numpy(), features["attention_mask"].numpy()
