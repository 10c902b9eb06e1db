"""``export --optimize compact+tflite``: the compact SavedModel plus ``model.tflite`` in the same version folder.

Why: at batch 1 the served SavedModel's time is TensorFlow's CPU matmul
kernels on skinny shapes (``bench/matmul_kernels.py``: the 24 dense matmuls of
one 16-token MiniLM request take longer in TF than ONNX Runtime's whole call).
TFLite runs the same graph on XNNPACK's kernels; with the tokenizer inside
the TFLite model too, a raw-text batch-1 request ran in ONNX Runtime's time
(README "Serving speed"). TF Serving serves ``model.tflite`` from a SavedModel
folder instead of the SavedModel when started with ``--prefer_tflite_model``;
``tfpipeline serve --prefer-tflite-model`` does the same with an interpreter
pool (``serving.tflite_pool``). Without that flag both servers serve the
compact SavedModel of the same folder, so the export works everywhere.

What ``model.tflite`` holds (classification models): the SignatureDefs
``serving_default`` / ``predict`` (``text`` -> ``label``, ``label_id``,
``scores``) and ``predict_ids`` (``input_ids``, ``attention_mask`` ->
``label_id``, ``scores``), with the SavedModel's names, dtypes and outputs.
Not in it: ``classify`` (tf.Example parsing) and ``predict_pair``; the
embedded server keeps answering those from the SavedModel. Other tasks raise
``ExportError`` before anything is written.

The tokenizer: TFLite has no kernels for the regex and ICU normalisation ops
of ``TextEncoder``. tensorflow-text's ``FastBertTokenizer`` (FastBertNormalize
+ FastWordpieceTokenize, both with TFLite kernels, registered by
``tensorflow_text``'s ``tflite_registrar``) does BERT's basic tokenization and
WordPiece in two ops. It equals ``TextEncoder`` (HF's tokenizer) except for:
Unicode *compatibility* decomposition (NFKD, where BERT uses NFD: "…" becomes
"...", "½" "1⁄2", fullwidth letters and ligatures ASCII), control characters
such as NUL splitting a word instead of vanishing, and words over 100 bytes
(HF: 100 characters) becoming [UNK]. ``bench/tflite_agreement.py`` measures
how often that changes a token sequence and a prediction on real data
(docs/benchmarks.md); the export checks that the TFLite model gives the
SavedModel's scores on the warmup texts.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
from tensorflow_text.core.pybinds import tflite_registrar

from tfpipeline.data.examples import CLASSIFICATION
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import ExportError
from tfpipeline.export.signatures import ClassifierServing

TFLITE_TEXT_FILE = "model.tflite"               # where TF Serving's --prefer_tflite_model looks for it
TFLITE_SIGNATURES = ("serving_default", "predict", "predict_ids")
TFLITE_SERVING_FLAGS = ["--prefer_tflite_model"]
MAX_WORD_BYTES = 100                            # HF WordPiece turns a word over 100 characters into [UNK]
CHECK_TOLERANCE = 1e-4                          # largest score difference to the SavedModel on the check texts


def tflite_tokenizer(encoder: TextEncoder) -> tf_text.FastBertTokenizer:
    """The ``FastBertTokenizer`` that normalises as ``encoder`` does (``ExportError`` where none does)."""
    strips_accents = encoder.lower_case if encoder.strip_accents is None else encoder.strip_accents
    if encoder.lower_case != strips_accents:
        raise ExportError(f"--optimize compact+tflite: the checkpoint's tokenizer "
                          f"{'lower-cases' if encoder.lower_case else 'keeps case'} but "
                          f"{'strips' if strips_accents else 'keeps'} accents, which tensorflow-text's "
                          f"TFLite tokenizer cannot do; export with --optimize compact")
    if not encoder.tokenize_chinese_chars:
        raise ExportError("--optimize compact+tflite: the checkpoint's tokenizer keeps Chinese characters "
                          "together (tokenize_chinese_chars false), which tensorflow-text's TFLite tokenizer "
                          "cannot do; export with --optimize compact")
    return tf_text.FastBertTokenizer(vocab=encoder.vocab, token_out_type=tf.int32, unknown_token="[UNK]",
                                     lower_case_nfd_strip_accents=encoder.lower_case,
                                     max_bytes_per_word=MAX_WORD_BYTES)


class TfliteClassifierServing(ClassifierServing):
    """The classification signatures with the TFLite-compatible tokenizer in place of ``TextEncoder``.

    Everything after tokenization (model, softmax, label lookup) is
    ``ClassifierServing``'s own code, so the outputs cannot drift from the SavedModel's.
    """

    def __init__(self, model, encoder: TextEncoder, labels: LabelMap):
        super().__init__(model, encoder, labels)
        self.tokenizer = tflite_tokenizer(encoder)
        self.max_length = encoder.max_length
        self.special_ids = encoder.cls_id, encoder.sep_id, encoder.pad_id

    def text_features(self, text: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Texts [B] -> ``[CLS] pieces [SEP]``, cut to ``max_length``, padded to the batch's longest: as
        ``TextEncoder.pad(encode(text))``, in ops TFLite has (no ragged concatenation)."""
        cls_id, sep_id, pad_id = self.special_ids
        pieces = self.tokenizer.tokenize(text)                                       # ragged [B, (pieces)]
        lengths = tf.minimum(tf.cast(pieces.row_lengths(), tf.int32), self.max_length - 2)
        body = tf.cast(pieces.to_tensor(pad_id), tf.int32)[:, :self.max_length - 2]
        rows = tf.shape(body)[0]
        ids = tf.concat([tf.fill([rows, 1], cls_id), body, tf.fill([rows, 1], pad_id)], axis=1)
        positions = tf.range(tf.shape(ids)[1])[tf.newaxis, :]
        ends = (lengths + 1)[:, tf.newaxis]                                          # where [SEP] goes
        ids = tf.where(positions == ends, sep_id, ids)
        mask = tf.cast(positions <= ends, tf.int32)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tf.zeros_like(ids)}

    def signatures(self):
        text = self.predict_text
        return {"serving_default": text, "predict": text, "predict_ids": self.predict_ids}


def load_interpreter(model_path: str, num_threads: Optional[int] = None) -> InterpreterWithCustomOps:
    """A TFLite interpreter for ``model.tflite`` with tensorflow-text's tokenizer kernels registered.

    ``tf.lite.Interpreter`` warns that it moves to the ``ai_edge_litert``
    package; it still ships with TensorFlow 2.21 and is what is installed, so
    the warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return InterpreterWithCustomOps(model_path=model_path, num_threads=num_threads,
                                        custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS)


def convert_text_model(serving_model, encoder, labels: LabelMap, task: str,
                       check_texts: Sequence[str]) -> bytes:
    """``model.tflite``'s bytes for ``serving_model`` (the compact graph), checked against the SavedModel's
    scores on ``check_texts``; ``ExportError`` if the model cannot have one or the check fails."""
    if task != CLASSIFICATION:
        raise ExportError(f"--optimize compact+tflite exports classification models only (this is a {task} "
                          f"model: its signatures need ops TFLite lacks); export with --optimize compact")
    if not isinstance(encoder, TextEncoder):
        raise ExportError("--optimize compact+tflite needs a text model")
    module = TfliteClassifierServing(serving_model, encoder, labels)
    with tempfile.TemporaryDirectory(prefix="tflite_") as tmp:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(TFLITE_SIGNATURES))
        converter.allow_custom_ops = True          # the tokenizer ops: tensorflow-text's TFLite kernels
        try:
            model_bytes = converter.convert()
        except Exception as e:   # the converter raises its own error types
            raise ExportError(f"--optimize compact+tflite: TFLite conversion failed: {e}") from None
        path = os.path.join(tmp, TFLITE_TEXT_FILE)
        with open(path, "wb") as f:
            f.write(model_bytes)
        check_against_saved_model(path, ClassifierServing(serving_model, encoder, labels), check_texts)
    return model_bytes


def check_against_saved_model(path: str, reference: ClassifierServing, texts: Sequence[str]) -> None:
    """The TFLite model's scores for ``texts`` must be the SavedModel module's (same tokens, same weights)."""
    runner = load_interpreter(path, num_threads=1).get_signature_runner("serving_default")
    got = runner(text=np.array(list(texts), dtype=object))["scores"]
    want = reference.predict_text(tf.constant(list(texts)))["scores"].numpy()
    worst = float(np.abs(got - want).max())
    if not worst <= CHECK_TOLERANCE:
        raise ExportError(f"--optimize compact+tflite: the TFLite model's scores differ from the SavedModel's by "
                          f"{worst:.2g} on the check texts (tolerance {CHECK_TOLERANCE:g})")
