"""Prompt-based (cloze / PET / LM-BFF style) classification with a masked-LM head: the model.

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

This module holds the model and its checkpoint/template helpers; the
classifier workflow (``ClozeClassifier``: zero-shot, prompt fine-tuning,
saving) is ``tfpipeline.training.prompting``.

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
  So ``Predictor``, evaluation, export (tokenizer in the graph) and the model
  server use a cloze classifier exactly like a fine-tuned one.
* Truncation: the *prompted* sequence is at most ``max_length`` =
  ``min(encoder.max_length, config.max_position_embeddings)`` pieces, i.e. the
  same length budget as an ordinary classifier run with that ``--max-length``.
  The text is cut (from the end) to ``max_length - 2 - len(template pieces)``
  pieces; the template, and so ``[MASK]``, is never cut. A template that
  leaves no room for the text is an error.
* Verbalizer: label -> words; every word must be one WordPiece of the
  vocabulary (a ``ConfigError`` names the word and its pieces otherwise). The
  default is the label name itself.
* Model folder kind ``cloze`` (registered below): an HF masked-LM checkpoint +
  vocab + labels.json + ``tfpipeline.json`` holding the prompt ids
  (``ClozeModel.prompt_metadata``). A checkpoint whose MLM head weights are
  missing is a ``CheckpointError`` (``load_mlm``), not silently a random head.

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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np
import tensorflow as tf
import tf_keras
from safetensors import safe_open
from transformers import AutoConfig, TFAutoModelForMaskedLM

from tfpipeline.data.examples import CLASSIFICATION
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import FEATURES, TextEncoder
from tfpipeline.errors import CheckpointError, ConfigError
from tfpipeline.models.checkpoint import load_hf_model, resolve_checkpoint, weights_file
from tfpipeline.models.kinds import ModelKind, register_model_kind

CLOZE_HEAD = "cloze"                      # tfpipeline.json "head" of a saved cloze classifier
TEXT_SLOT, MASK_TOKEN = "{text}", "[MASK]"
DEFAULT_CLOZE_TEMPLATE = "{text} It was [MASK]."
REDUCTIONS = ("mean", "logsumexp")
NO_HEAD_HINT = ("cloze prompting needs a checkpoint with its masked-LM head (cls.predictions.*); use the "
                "similarity-based ZeroShotClassifier (tfpipeline zeroshot --method similarity) instead")


# ------------------------------------------------------------------ checkpoint helpers
def _head_layer_names(path: str) -> List[str]:
    """Top-level layer names of the checkpoint's TF masked-LM class, minus the encoder (no weights built)."""
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
    path = resolve_checkpoint(path)
    kind, wfile = weights_file(path)
    try:
        heads = _head_layer_names(path)
    except CheckpointError:
        return False
    if not heads:
        return False
    if kind == "tf":
        with h5py.File(wfile, "r") as f:
            stored = {n.decode() if isinstance(n, bytes) else n for n in f.attrs.get("layer_names", [])}
            return all(h in stored and len(f[h].attrs.get("weight_names", [])) > 0 for h in heads)
    prefixes = tuple(h.split("___")[-1] + "." for h in heads)   # TF 'mlm___cls' is PyTorch 'cls.'
    keys = []
    for shard in wfile.split(","):
        with safe_open(shard, "np") as f:
            keys += list(f.keys())
    return any(k.startswith(prefixes) and "seq_relationship" not in k for k in keys)


def load_mlm(path: str):
    """The checkpoint as a transformers ``TFAutoModelForMaskedLM``; ``CheckpointError`` if its MLM head is missing.

    ``load_hf_model`` reports missing head weights instead of raising (right
    for task heads, which are new); here they must be there, or the "MLM"
    would predict label words with a random head.
    """
    model, missing = load_hf_model(TFAutoModelForMaskedLM, path)
    if missing:
        raise CheckpointError(f"{path}: checkpoint has no masked-LM head (missing {missing[:5]}); {NO_HEAD_HINT}")
    return model


# ------------------------------------------------------------------ template and verbalizer
def check_template(template: str) -> Tuple[str, str]:
    """'{text} It was [MASK].' -> (prefix, suffix) around ``{text}``; exactly one ``{text}`` and one ``[MASK]``."""
    example = f"e.g. {DEFAULT_CLOZE_TEMPLATE!r}"
    if template.count(TEXT_SLOT) != 1:
        raise ConfigError(f"cloze template {template!r} needs exactly one {TEXT_SLOT} slot for the text and one "
                        f"{MASK_TOKEN} for the label word ({example})")
    if template.count(MASK_TOKEN) != 1:
        raise ConfigError(f"cloze template {template!r} needs exactly one {MASK_TOKEN} for the label word ({example})")
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
        raise ConfigError(f"verbalizer names unknown labels {unknown} (labels: {labels.names})")
    words = {n: [w.strip() for w in (verbalizer.get(n) or [n]) if w.strip()] or [n] for n in labels.names}
    ids, owner = [], {}
    for name in labels.names:
        row = []
        for word in words[name]:
            pieces = _piece_ids(encoder, word)
            if len(pieces) != 1 or pieces[0] == encoder.unk_id:
                shown = [encoder.vocab[i] for i in pieces]
                raise ConfigError(f"label word {word!r} (label {name!r}) is not one vocabulary piece: it tokenizes to "
                                f"{shown}; choose single-piece label words (--verbalizer 'label=word,...')")
            if pieces[0] in owner and owner[pieces[0]] != name:
                raise ConfigError(f"label word {word!r} is used for both {owner[pieces[0]]!r} and {name!r}")
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
            raise ConfigError(f"reduce must be one of {', '.join(REDUCTIONS)}, not {reduce!r}")
        self.backbone = backbone
        self.task = CLASSIFICATION
        self.reduce = reduce
        prompt = list(prefix_ids) + list(suffix_ids)
        if prompt.count(mask_id) != 1:
            raise ConfigError("the template must contain the mask token exactly once")
        positions = getattr(backbone.config, "max_position_embeddings", max_length) or max_length
        self.max_length = int(min(max_length, positions))
        self.text_budget = self.max_length - 2 - len(prompt)
        if self.text_budget < 1:
            raise ConfigError(f"the template takes {len(prompt)} pieces; with [CLS]/[SEP] that leaves no room for "
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

    def prompt_metadata(self) -> Dict[str, Any]:
        """The ``"prompt"`` entry of a cloze model folder's ``tfpipeline.json`` (what rebuilds this model)."""
        return {"prefix_ids": [int(i) for i in self.prefix_ids], "suffix_ids": [int(i) for i in self.suffix_ids],
                "max_length": self.max_length, "cls_id": self.cls_id, "sep_id": self.sep_id,
                "pad_id": self.pad_id, "mask_id": self.mask_id}

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


def _load_cloze_model(directory: str, meta: Mapping[str, Any], labels: LabelMap) -> ClozeModel:
    prompt = meta.get("prompt") or {}
    if not prompt or not meta.get("label_word_ids"):
        raise CheckpointError(f"{directory}: cloze model folder lacks its prompt ids in tfpipeline.json")
    if len(meta["label_word_ids"]) != len(labels):
        raise CheckpointError(f"{directory}: tfpipeline.json has label words for {len(meta['label_word_ids'])} "
                              f"labels, labels.json {len(labels)}")
    model = ClozeModel(load_mlm(directory), prompt["prefix_ids"], prompt["suffix_ids"], meta["label_word_ids"],
                       max_length=prompt["max_length"], cls_id=prompt["cls_id"], sep_id=prompt["sep_id"],
                       pad_id=prompt["pad_id"], mask_id=prompt["mask_id"], reduce=meta.get("reduce", "mean"))
    model({k: tf.ones([1, 4], tf.int32) for k in FEATURES}, training=False)
    return model


register_model_kind(ModelKind(CLOZE_HEAD, _load_cloze_model))   # the MLM checkpoint is the whole state
