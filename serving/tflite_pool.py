"""``serve --prefer-tflite-model``: answer a version's signatures from its ``model.tflite`` (an interpreter pool).

TF Serving's ``--prefer_tflite_model`` serves the ``model.tflite`` of a
SavedModel folder instead of the SavedModel (``export --optimize
compact+tflite`` writes one; see ``tfpipeline.export.tflite_text`` for why it
is faster at batch 1). Here each signature of ``model.tflite`` replaces the
SavedModel's signature of the same name; the others (``classify``,
``predict_pair``) stay with the SavedModel, so every API keeps working.

A TFLite interpreter runs one call at a time, so a version gets a pool of
``interpreters`` (TF Serving's ``--num_tflite_interpreters_per_pool``), each
with ``threads`` XNNPACK threads; a call borrows one and gives it back. The
Python interpreter releases the GIL while it runs. ``TfliteSignature`` looks
like a SavedModel signature function to ``serving.runner`` (input specs,
output names, keyword call), and turns the interpreter's errors into TF's
INVALID_ARGUMENT, so requests get the same error codes from both paths.
"""
from __future__ import annotations

import os
import queue
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfpipeline.export.tflite_text import TFLITE_TEXT_FILE, load_interpreter


class InterpreterPool:
    """``size`` interpreters of one ``model.tflite``; ``borrow()`` blocks until one is free."""

    def __init__(self, path: str, size: int = 1, threads: Optional[int] = None):
        if size < 1:
            raise ValueError(f"a TFLite interpreter pool needs at least one interpreter, got {size}")
        self.path = path
        self.interpreters = [load_interpreter(path, num_threads=threads) for _ in range(size)]
        self._free: "queue.Queue[int]" = queue.Queue()
        for i in range(size):
            self._free.put(i)
        # one signature runner per interpreter and signature, made once (each owns resized tensors)
        self._runners = [{name: interpreter.get_signature_runner(name)
                          for name in interpreter.get_signature_list()} for interpreter in self.interpreters]

    def signature_names(self) -> List[str]:
        return sorted(self._runners[0])

    def details(self, name: str):
        runner = self._runners[0][name]
        return runner.get_input_details(), runner.get_output_details()

    def call(self, name: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        index = self._free.get()
        try:
            return self._runners[index][name](**inputs)
        finally:
            self._free.put(index)


class TfliteSignature:
    """One signature of a pool, with the interface ``serving.runner`` uses on a SavedModel signature."""

    def __init__(self, pool: InterpreterPool, name: str):
        self.pool, self.name = pool, name
        inputs, outputs = pool.details(name)
        self.structured_input_signature = ((), {key: _spec(key, info) for key, info in inputs.items()})
        self.structured_outputs = {key: _spec(key, info) for key, info in outputs.items()}

    def __call__(self, **feeds) -> Dict[str, np.ndarray]:
        arrays = {key: _array(value) for key, value in feeds.items()}
        try:
            return self.pool.call(self.name, arrays)
        except (ValueError, RuntimeError) as e:   # what the interpreter raises for a bad input (e.g. an id
            raise tf.errors.InvalidArgumentError(None, None, f"TFLite: {e}") from None   # past the vocabulary)


def tflite_signatures(version_dir: str, interpreters: int = 1,
                      threads: Optional[int] = None) -> Dict[str, TfliteSignature]:
    """{signature: TfliteSignature} of ``version_dir/model.tflite``; empty if the version has none.
    ``threads`` per interpreter: by default the cores shared out among the ``interpreters``."""
    path = os.path.join(version_dir, TFLITE_TEXT_FILE)
    if not os.path.isfile(path):
        return {}
    pool = InterpreterPool(path, interpreters, threads or interpreter_threads(interpreters))
    return {name: TfliteSignature(pool, name) for name in pool.signature_names()}


def interpreter_threads(interpreters: int) -> int:
    """XNNPACK threads per interpreter: the cores shared out, so a full pool does not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // max(interpreters, 1))


def _spec(name: str, info: dict) -> tf.TensorSpec:
    shape = [None if d < 0 else int(d) for d in info.get("shape_signature", info["shape"])]
    dtype = tf.string if info["dtype"] in (np.bytes_, np.str_, np.object_) else tf.as_dtype(info["dtype"])
    return tf.TensorSpec(shape, dtype, name=name)


def _array(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
