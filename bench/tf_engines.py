"""tfpipeline's side of the inference comparison: the exported SavedModel, loaded the way a server would.

Uses ``ModelBundle.export`` (signatures ``predict_ids`` for token ids and
``serving_default`` for raw text), once per export optimisation compared
(``--optimize none|compact|compact+xla|compact+bf16|compact+tflite``; ``none`` is the baseline). A
``compact+tflite`` export is timed through its ``model.tflite``, by the interpreter pool of
``serve --prefer-tflite-model`` (``serving.tflite_pool``), as TF Serving's ``--prefer_tflite_model`` serves it.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from serving.tflite_pool import tflite_signatures
from tfpipeline.bundle import ModelBundle
from tfpipeline.config.commands import EXPORT_OPTIMIZATIONS, OPTIMIZE_NONE

SAVED_MODEL = "tfpipeline SavedModel"


def engine_name(optimize: str, level: str) -> str:
    """Row name of a SavedModel engine: the ``none`` export keeps the historical names (the baseline); the others
    are short enough for the ratio table's engine column (33 characters)."""
    if optimize == OPTIMIZE_NONE:
        return f"{SAVED_MODEL} {level}"
    return f"SavedModel {optimize} {'ids' if level == 'predict_ids' else level}"


def export_saved_model(model, encoder, labels, task: str, base_dir: str, optimize: str = OPTIMIZE_NONE) -> str:
    """Write the SavedModel under ``base_dir`` exactly as ``tfpipeline export --optimize`` does; returns its path."""
    name = "bench" if optimize == OPTIMIZE_NONE else f"bench_{EXPORT_OPTIMIZATIONS.index(optimize)}"
    return ModelBundle(model, encoder, labels, task).export(base_dir, name, optimize=optimize)


def load_signatures(path: str, threads: Optional[int] = None) -> Dict[str, Callable]:
    """{'ids': f(ids int32, mask int32) -> scores, 'text': f(list[str]) -> scores} from the SavedModel, or from
    its model.tflite (``threads`` interpreter threads) where the export has one."""
    tflite = tflite_signatures(path, 1, threads)
    if tflite:
        ids_lite, text_lite = tflite["predict_ids"], tflite["serving_default"]

        def ids_fn(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            return ids_lite(input_ids=input_ids, attention_mask=attention_mask)["scores"]

        def text_fn(texts) -> np.ndarray:
            return text_lite(text=np.array(list(texts), dtype=object))["scores"]

        ids_fn.loaded = text_fn.loaded = tflite
        return {"ids": ids_fn, "text": text_fn}
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
