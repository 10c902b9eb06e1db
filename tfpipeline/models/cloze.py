"""Prompt-based (cloze / PET / LM-BFF style) zero- and few-shot classification with a masked-LM head.

Why: a pretrained masked language model already "classifies" when a text is
turned into a cloze question. With the template ``"{text} It was [MASK]."``
and the verbalizer ``positive -> great``, ``negative -> terrible``,

    p(label | text)  =  softmax over labels of  log p_MLM(label word at [MASK] | prompted text)

so the pretrained checkpoint classifies with no training at all (zero-shot),
and prompt-based fine-tuning (the whole MLM trained with cross-entropy over
these label logits) learns from very few examples (16-32 per class) far
better than a freshly initialised classifier head, because the task is posed
in the pre-training format. This needs a checkpoint that ships its MLM head
(``cls.predictions.*``); all-MiniLM-L6-v2 does not, which is why
``tfpipeline.models.zeroshot`` classifies by sentence-embedding similarity
instead. ``has_mlm_head(path)`` tells which method a checkpoint supports.

How:

* ``ClozeModel`` is a Keras model ``features -> label logits`` with the
  ``TaskModel`` interface (``backbone``, ``task``). It takes the *ordinary*
  text features (``[CLS] text [SEP]`` + padding, from ``TextEncoder.encode`` +
  ``pad``) and builds the prompt in the graph with plain TF ops (ragged
  concat; dynamic batch and length; works in ``tf.function``, ``fit`` and the
  exported SavedModel): per row it takes the real text pieces (the positions
  between ``[CLS]`` and the last ``[SEP]``, from ``attention_mask``),
  truncates them, and assembles ``[CLS] prefix text suffix [SEP]`` where
  prefix/suffix are the template's ids (tokenized once with the same
  vocabulary; ``[MASK]`` is inserted as its id, never tokenized as text). The
  ``[MASK]`` position of every row follows from its text length. Only the
  hidden state at ``[MASK]`` goes through the MLM head (BERT-style ``mlm``
  heads; other architectures fall back to full-vocabulary logits at every
  position), then ``log_softmax`` over the vocabulary and, per label, the mean
  (or ``logsumexp``: log of the summed probabilities) over its label words.
  So ``Predictor``, ``evaluate``, ``export_model`` (tokenizer in the graph)
  and the model server use a cloze classifier exactly like a fine-tuned one.
* Truncation: the *prompted* sequence is at most ``max_length`` =
  ``min(encoder.max_length, config.max_position_embeddings)`` pieces, i.e. the
  same length budget as an ordinary classifier run with that ``--max-length``.
  The text is cut (from the end) to ``max_length - 2 - len(template pieces)``
  pieces; the template, and so ``[MASK]``, is never cut. A template that
  leaves no room for the text is an error.
* Verbalizer: label -> words; every word must be one WordPiece of the
  vocabulary (a ``DataError`` names the word and its pieces otherwise). The
  default is the label name itself.
* ``ClozeClassifier`` ties it together: ``from_checkpoint`` (``tf_model.h5``
  or ``model.safetensors``; a checkpoint whose MLM head weights are missing is
  a ``CheckpointError``, not silently a random head), ``classify`` /
  ``evaluate`` through ``Predictor``, ``finetune(shots, ...)`` (prompt-based
  fine-tuning with the project's tf.data pipeline and AdamW schedule) and
  ``save`` (an HF MLM checkpoint + vocab + labels.json + ``tfpipeline.json``
  with ``head: "cloze"``, which ``load_task_model`` reads back).

Limits: single-text classification only (text pairs / NLI-style templates
with two slots are not supported); ``{text}`` appears once, ``[MASK]`` once,
and one label word fills the single mask (no multi-token label words);
WordPiece (``vocab.txt``) checkpoints only, like the rest of tfpipeline; the
ragged prompt construction is dynamic-shape TF, so it is not XLA/TPU-friendly
(use GPU/CPU). Zero-shot quality depends entirely on the pretrained MLM and on
choosing template and label words well; a random checkpoint (as in the tests)
only becomes useful after fine-tuning.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from tfpipeline import _env  # noqa: F401

import numpy as np
import tensorflow as tf
import tf_keras

from tfpipeline.data.examples import CLASSIFICATION, DataError, TextExample
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import FEATURES, TextEncoder
from tfpipeline.models.checkpoint import CheckpointError

CLOZE_HEAD = "cloze"                      # tfpipeline.json "head" of a saved cloze classifier
TEXT_SLOT, MASK_TOKEN = "{text}", "[MASK]"
DEFAULT_CLOZE_TEMPLATE = "{text} It was [MASK]."
REDUCTIONS = ("mean", "logsumexp")
NO_HEAD_HINT = ("cloze prompting needs a checkpoint with its masked-LM head (cls.predictions.*); use the "
                "similarity-based ZeroShotClassifier (tfpipeline zeroshot --method similarity) instead")


# ------------------------------------------------------------------ checkpoint helpers
def _head_layer_names(path: str) -> List[str]:
    """Top-level layer names of the checkpoint's TF masked-LM class, minus the encoder (no weights built)."""
    from transformers import AutoConfig, TFAutoModelForMaskedLM

    try:
        model = TFAutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(path))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: no TF masked-LM class for this architecture ({e})") from None
    return [layer.name for layer in model.layers if layer.name != model.base_model_prefix]


def has_mlm_head(path: Optional[str]) -> bool:
    """Whether a checkpoint (alias, HF folder or model folder) ships masked-LM head weights.

    Reads only file metadata: the layer names of ``tf_model.h5`` or the tensor
    names of ``model.safetensors`` (``cls.predictions.*`` for BERT).
    """
    from tfpipeline.models.checkpoint import resolve_checkpoint, weights_file

    path = resolve_checkpoint(path)
    kind, wfile = weights_file(path)
    try:
        heads = _head_layer_names(path)
    except CheckpointError:
        return False
    if not heads:
        return False
    if kind == "tf":
        import h5py

        with h5py.File(wfile, "r") as f:
            stored = {n.decode() if isinstance(n, bytes) else n for n in f.attrs.get("layer_names", [])}
            return all(h in stored and len(f[h].attrs.get("weight_names", [])) > 0 for h in heads)
    from safetensors import safe_open

    prefixes = tuple(h.split("___")[-1] + "." for h in heads)   # TF 'mlm___cls' is PyTorch 'cls.'
    keys = []
    for shard in wfile.split(","):
        with safe_open(shard, "np") as f:
            keys += list(f.keys())
    return any(k.startswith(prefixes) and "seq_relationship" not in k for k in keys)


def load_mlm(path: str):
    """The checkpoint as a transformers ``TFAutoModelForMaskedLM``; ``CheckpointError`` if its MLM head is missing.

    ``load_safetensors_into`` tolerates missing ``cls.*`` weights (right for
    task heads, which are re-initialised); here they must be there, or the
    "MLM" would predict label words with a random head.
    """
    import logging

    from transformers import AutoConfig, TFAutoModelForMaskedLM

    from tfpipeline.models.checkpoint import load_safetensors_into, weights_file

    kind, wfile = weights_file(path)
    config = AutoConfig.from_pretrained(path)
    try:
        if kind == "tf":
            tf_logger = logging.getLogger("transformers.modeling_tf_utils")
            level = tf_logger.level
            tf_logger.setLevel(logging.ERROR)      # we raise our own, clearer error for a missing head
            try:
                model, info = TFAutoModelForMaskedLM.from_pretrained(path, config=config, output_loading_info=True)
            finally:
                tf_logger.setLevel(level)
            missing = list(info.get("missing_keys", []))
        else:
            model = TFAutoModelForMaskedLM.from_config(config)
            model(model.dummy_inputs, training=False)
            missing = list(load_safetensors_into(model, wfile).get("missing_keys", []))
    except CheckpointError:
        raise
    except ValueError as e:   # e.g. an architecture without a TF masked-LM class
        raise CheckpointError(f"{path}: cannot load as a masked LM ({e})") from None
    if missing:
        raise CheckpointError(f"{path}: checkpoint has no masked-LM head (missing {missing[:5]}); {NO_HEAD_HINT}")
    return model


# ------------------------------------------------------------------ template and verbalizer
def check_template(template: str) -> Tuple[str, str]:
    """'{text} It was [MASK].' -> (prefix, suffix) around ``{text}``; exactly one ``{text}`` and one ``[MASK]``."""
    example = f"e.g. {DEFAULT_CLOZE_TEMPLATE!r}"
    if template.count(TEXT_SLOT) != 1:
        raise DataError(f"cloze template {template!r} needs exactly one {TEXT_SLOT} slot for the text and one "
                        f"{MASK_TOKEN} for the label word ({example})")
    if template.count(MASK_TOKEN) != 1:
        raise DataError(f"cloze template {template!r} needs exactly one {MASK_TOKEN} for the label word ({example})")
    prefix, _, suffix = template.partition(TEXT_SLOT)
    return prefix, suffix


def _piece_ids(encoder: TextEncoder, text: str) -> List[int]:
    if not text.strip():
        return []
    return [int(i) for i in encoder.tokenize(tf.constant([text]))[0].numpy()]


def template_ids(encoder: TextEncoder, template: str) -> Tuple[List[int], List[int]]:
    """(prefix ids, suffix ids) of the template, ``[MASK]`` as the mask token id (not tokenized as text)."""
    if "[MASK]" not in encoder.vocab:
        raise CheckpointError("the vocabulary has no [MASK] token; cloze prompting needs a masked-LM vocabulary")
    parts = []
    for part in check_template(template):
        if MASK_TOKEN in part:
            before, _, after = part.partition(MASK_TOKEN)
            parts.append(_piece_ids(encoder, before) + [encoder.mask_id] + _piece_ids(encoder, after))
        else:
            parts.append(_piece_ids(encoder, part))
    return parts[0], parts[1]


def verbalizer_ids(encoder: TextEncoder, labels: LabelMap,
                   verbalizer: Optional[Mapping[str, Sequence[str]]] = None) -> Tuple[Dict[str, List[str]], List[List[int]]]:
    """(label -> words, per label the vocabulary ids of its words); each word must be one WordPiece."""
    verbalizer = dict(verbalizer or {})
    unknown = sorted(set(verbalizer) - set(labels.names))
    if unknown:
        raise DataError(f"verbalizer names unknown labels {unknown} (labels: {labels.names})")
    words = {n: [w.strip() for w in (verbalizer.get(n) or [n]) if w.strip()] or [n] for n in labels.names}
    ids, owner = [], {}
    for name in labels.names:
        row = []
        for word in words[name]:
            pieces = _piece_ids(encoder, word)
            if len(pieces) != 1 or pieces[0] == encoder.unk_id:
                shown = [encoder.vocab[i] for i in pieces]
                raise DataError(f"label word {word!r} (label {name!r}) is not one vocabulary piece: it tokenizes to "
                                f"{shown}; choose single-piece label words (--verbalizer 'label=word,...')")
            if pieces[0] in owner and owner[pieces[0]] != name:
                raise DataError(f"label word {word!r} is used for both {owner[pieces[0]]!r} and {name!r}")
            owner[pieces[0]] = name
            row.append(pieces[0])
        ids.append(row)
    return words, ids


# ------------------------------------------------------------------ the Keras model
class ClozeModel(tf_keras.Model):
    """``text features -> label logits`` through a masked-LM prompt (see the module docstring).

    ``backbone`` is a transformers TF masked-LM model; ``prefix_ids`` /
    ``suffix_ids`` the template pieces around the text (one of them holds the
    mask id); ``label_word_ids`` the vocabulary ids of each label's words.
    """

    def __init__(self, backbone, prefix_ids: Sequence[int], suffix_ids: Sequence[int],
                 label_word_ids: Sequence[Sequence[int]], *, max_length: int, cls_id: int, sep_id: int,
                 pad_id: int, mask_id: int, reduce: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        self.backbone = backbone
        self.task = CLASSIFICATION
        self.reduce = reduce
        prompt = list(prefix_ids) + list(suffix_ids)
        if prompt.count(mask_id) != 1:
            raise DataError("the template must contain the mask token exactly once")
        positions = getattr(backbone.config, "max_position_embeddings", max_length) or max_length
        self.max_length = int(min(max_length, positions))
        self.text_budget = self.max_length - 2 - len(prompt)
        if self.text_budget < 1:
            raise DataError(f"the template takes {len(prompt)} pieces; with [CLS]/[SEP] that leaves no room for "
                            f"the text within max_length {self.max_length}")
        # numpy (not tracked by Keras); baked into the graph as constants
        self.prefix_ids = np.asarray(prefix_ids, np.int32)
        self.suffix_ids = np.asarray(suffix_ids, np.int32)
        self.mask_in_prefix = mask_id in list(prefix_ids)
        self.mask_offset = (list(prefix_ids) if self.mask_in_prefix else list(suffix_ids)).index(mask_id)
        self.cls_id, self.sep_id, self.pad_id, self.mask_id = int(cls_id), int(sep_id), int(pad_id), int(mask_id)
        width = max(len(row) for row in label_word_ids)
        self.word_ids = np.asarray([list(r) + [0] * (width - len(r)) for r in label_word_ids], np.int32)
        self.word_valid = np.asarray([[1.0] * len(r) + [0.0] * (width - len(r)) for r in label_word_ids], np.float32)
        self._token_types = "token_type_ids" in inspect.signature(self.main.call).parameters

    # properties, not attributes: Keras would track the sub-layers a second time
    @property
    def main(self):
        """The encoder (e.g. ``TFBertMainLayer``) inside the masked-LM model."""
        return getattr(self.backbone, self.backbone.base_model_prefix)

    @property
    def mlm_head(self):
        """BERT-style MLM head (hidden states -> vocabulary logits), or None for other architectures."""
        return getattr(self.backbone, "mlm", None)

    # -------------------------------------------------------------- the prompt, in the graph
    def prompt_features(self, inputs) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
        """Text features -> (prompted features ``[CLS] prefix text suffix [SEP]`` + padding, [MASK] position per row)."""
        ids = tf.cast(inputs["input_ids"], tf.int32)
        real = tf.reduce_sum(tf.cast(inputs["attention_mask"], tf.int32), axis=1)
        text_len = tf.minimum(tf.maximum(real - 2, 0), self.text_budget)       # drop [CLS] and the last [SEP]
        text = tf.RaggedTensor.from_tensor(ids[:, 1:], lengths=text_len)
        rows = tf.shape(ids)[0]
        prefix = tf.tile(tf.constant(self.prefix_ids)[None, :], [rows, 1])
        suffix = tf.tile(tf.constant(self.suffix_ids)[None, :], [rows, 1])
        prompted = tf.concat([tf.fill([rows, 1], self.cls_id), prefix, text, suffix,
                              tf.fill([rows, 1], self.sep_id)], axis=1)
        features = {"input_ids": prompted.to_tensor(default_value=self.pad_id),
                    "attention_mask": tf.ones_like(prompted).to_tensor(default_value=0)}
        features["token_type_ids"] = tf.zeros_like(features["input_ids"])
        if self.mask_in_prefix:
            mask_pos = tf.fill([rows], 1 + self.mask_offset)
        else:
            mask_pos = 1 + len(self.prefix_ids) + text_len + self.mask_offset
        return features, mask_pos

    def mask_logits(self, inputs, training=False) -> tf.Tensor:
        """[B, vocab] MLM logits at each row's [MASK] (float32)."""
        features, mask_pos = self.prompt_features(inputs)
        if not self._token_types:
            features.pop("token_type_ids")
        if self.mlm_head is not None:   # run the head on the mask position only
            hidden = self.main(features, training=training).last_hidden_state
            at_mask = tf.gather(hidden, mask_pos, batch_dims=1)[:, None, :]
            logits = self.mlm_head(at_mask, training=training)[:, 0, :]
        else:
            logits = tf.gather(self.backbone(features, training=training).logits, mask_pos, batch_dims=1)
        return tf.cast(logits, tf.float32)

    def call(self, inputs, training=False):
        log_probs = tf.nn.log_softmax(self.mask_logits(inputs, training=training), axis=-1)
        words = tf.gather(log_probs, tf.constant(self.word_ids), axis=1)       # [B, labels, words]
        valid = tf.constant(self.word_valid)
        if self.reduce == "logsumexp":
            return tf.reduce_logsumexp(tf.where(valid > 0, words, -1e9), axis=-1)
        return tf.reduce_sum(words * valid, axis=-1) / tf.reduce_sum(valid, axis=-1)


def load_cloze_classifier(directory: str, meta: Mapping) -> ClozeModel:
    """The model of a folder written by ``ClozeClassifier.save`` (called by ``load_task_model``)."""
    prompt = meta.get("prompt") or {}
    if not prompt or not meta.get("label_word_ids"):
        raise CheckpointError(f"{directory}: cloze model folder lacks its prompt ids in tfpipeline.json")
    model = ClozeModel(load_mlm(directory), prompt["prefix_ids"], prompt["suffix_ids"], meta["label_word_ids"],
                       max_length=prompt["max_length"], cls_id=prompt["cls_id"], sep_id=prompt["sep_id"],
                       pad_id=prompt["pad_id"], mask_id=prompt["mask_id"], reduce=meta.get("reduce", "mean"))
    model({k: tf.ones([1, 4], tf.int32) for k in FEATURES}, training=False)
    return model


# ------------------------------------------------------------------ classifier
class ClozeClassifier:
    """Masked-LM prompt + verbalizer classifier: zero-shot, or prompt-based fine-tuning on a few shots."""

    def __init__(self, backbone, encoder: TextEncoder, labels: Sequence[str], *,
                 template: str = DEFAULT_CLOZE_TEMPLATE, verbalizer: Optional[Mapping[str, Sequence[str]]] = None,
                 reduce: str = "mean"):
        self.backbone, self.encoder = backbone, encoder
        self.labels = labels if isinstance(labels, LabelMap) else LabelMap(labels)
        self.template = template
        self.prefix_ids, self.suffix_ids = template_ids(encoder, template)
        self.verbalizer, self.label_word_ids = verbalizer_ids(encoder, self.labels, verbalizer)
        self.model = ClozeModel(backbone, self.prefix_ids, self.suffix_ids, self.label_word_ids,
                                max_length=encoder.max_length, cls_id=encoder.cls_id, sep_id=encoder.sep_id,
                                pad_id=encoder.pad_id, mask_id=encoder.mask_id, reduce=reduce)
        self.model({k: tf.ones([1, 4], tf.int32) for k in FEATURES}, training=False)
        self.shots: List[TextExample] = []
        self.finetune_epochs = 0
        self._predictor = None

    @classmethod
    def from_checkpoint(cls, labels: Sequence[str], checkpoint: Optional[str], *, max_length: int = 128,
                        **kwargs) -> "ClozeClassifier":
        """From a local checkpoint (or cloze model folder) with an MLM head; ``CheckpointError`` without one."""
        from tfpipeline.models.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(checkpoint)
        if not has_mlm_head(path):
            raise CheckpointError(f"{path}: checkpoint has no masked-LM head; {NO_HEAD_HINT}")
        return cls(load_mlm(path), TextEncoder.from_directory(path, max_length=max_length), labels, **kwargs)

    @property
    def max_length(self) -> int:
        """Length budget of the prompted sequence (text is truncated to fit the template in it)."""
        return self.model.max_length

    # -------------------------------------------------------------- prediction (all through Predictor)
    def predictor(self, batch_size: int = 64):
        """A ``Predictor`` over ``task_model()`` (what evaluate / export / serving take)."""
        from tfpipeline.inference import Predictor

        if self._predictor is None or self._predictor.batch_size != batch_size:
            self._predictor = Predictor(self.model, self.encoder, self.labels, CLASSIFICATION, batch_size)
        return self._predictor

    def task_model(self) -> ClozeModel:
        return self.model

    def class_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return self.predictor().class_probabilities(list(texts))

    def classify(self, texts: Sequence[str]) -> List[Dict]:
        return self.predictor().classify(list(texts))

    def evaluate(self, examples: Sequence[TextExample]) -> Dict:
        from tfpipeline.evaluation.evaluate import evaluate_examples

        _no_pairs(examples)
        return evaluate_examples(self.predictor(), examples)

    # -------------------------------------------------------------- prompt-based fine-tuning
    def finetune(self, shots: Sequence[TextExample], *, epochs: int = 20, learning_rate: float = 2e-5,
                 batch_size: int = 8, seed: int = 13, warmup_ratio: float = 0.1, verbose: int = 0) -> Dict[str, list]:
        """Train the whole MLM with cross-entropy over the label logits on ``shots``; returns the Keras history.

        Same data pipeline (``make_dataset``: plain text features; the prompt is built inside the model) and
        AdamW warmup/decay schedule (``create_optimizer``) as ordinary fine-tuning. LM-BFF trains pretrained
        BERT-size models for ~1000 steps at 1e-5 with batch 8; with 16-32 shots per class the defaults here
        (20 epochs at 2e-5) are a shorter budget, raise ``epochs`` if the loss has not flattened.
        """
        from tfpipeline.data.pipeline import make_dataset
        from tfpipeline.training.optimization import create_optimizer

        if not shots:
            raise DataError("prompt fine-tuning needs labelled examples")
        _no_pairs(shots)
        tf_keras.utils.set_random_seed(seed)
        steps = epochs * max(1, -(-len(shots) // batch_size))
        self.model.compile(optimizer=create_optimizer(learning_rate, steps, warmup_ratio=warmup_ratio),
                           loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        data = make_dataset(list(shots), self.encoder, self.labels, CLASSIFICATION, batch_size=batch_size,
                            training=True, seed=seed)
        started = time.perf_counter()
        history = self.model.fit(data, epochs=epochs, verbose=verbose)
        self.train_seconds = time.perf_counter() - started
        self.shots, self.finetune_epochs = list(shots), self.finetune_epochs + epochs
        return dict(history.history)

    # -------------------------------------------------------------- deployment
    def save(self, directory: str, *, overwrite: bool = False, source_checkpoint: Optional[str] = None,
             **meta) -> str:
        """Write a model folder (HF MLM checkpoint + vocab + labels + prompt metadata) that
        ``load_task_model`` / ``Predictor.from_directory`` / ``export_model`` / serving use like a trained model.

        The folder appears only when complete (written as ``<directory>.partial``, then renamed).
        """
        from tfpipeline.models.task_model import save_task_model
        from tfpipeline.training.trainer import prepare_output, publish_run

        staging = prepare_output(directory, overwrite)
        enc = self.encoder
        prompt = {"prefix_ids": [int(i) for i in self.prefix_ids], "suffix_ids": [int(i) for i in self.suffix_ids],
                  "max_length": self.max_length, "cls_id": enc.cls_id, "sep_id": enc.sep_id,
                  "pad_id": enc.pad_id, "mask_id": enc.mask_id}
        try:
            save_task_model(self.model, enc, self.labels, staging, head=CLOZE_HEAD, template=self.template,
                            verbalizer=self.verbalizer, label_word_ids=self.label_word_ids, reduce=self.model.reduce,
                            prompt=prompt, shots=len(self.shots), finetune_epochs=self.finetune_epochs,
                            source_checkpoint=source_checkpoint, **meta)
            publish_run(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory

    @classmethod
    def from_directory(cls, directory: str) -> "ClozeClassifier":
        """A saved cloze model folder as a classifier again (e.g. to fine-tune it further)."""
        from tfpipeline.models.task_model import META_FILE

        with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("head") != CLOZE_HEAD:
            raise CheckpointError(f"{directory}: not a cloze classifier folder (head {meta.get('head')!r})")
        return cls(load_mlm(directory), TextEncoder.from_directory(directory, max_length=meta.get("max_length")),
                   LabelMap.load(directory), template=meta["template"], verbalizer=meta["verbalizer"],
                   reduce=meta.get("reduce", "mean"))


def _no_pairs(examples: Sequence[TextExample]) -> None:
    for ex in examples:
        if getattr(ex, "text_pair", None) is not None:
            raise DataError(f"{ex.origin or 'example'}: cloze prompting classifies single texts; text pairs "
                            "are not supported")
