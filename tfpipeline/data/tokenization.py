"""In-graph BERT tokenization shared by training (tf.data) and export (serving graph).

One ``TextEncoder`` turns raw strings (or pre-split words, for NER) into
``input_ids`` / ``token_type_ids`` / ``attention_mask``. The same object is
used by the tf.data pipelines and traced into the exported SavedModel, so
training and serving cannot drift apart.

Built on ``tensorflow_text.FastBertTokenizer`` (its ops ship with every
tensorflow-text since 2.8, including the 2.12.1 bundled by TF Serving
2.12-2.19). Truncation and segment combination use plain TF ops only, no
``RoundRobinTrim``.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_text as tf_text

from tfpipeline.errors import DataError

VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
IGNORE_INDEX = -100  # label value for positions that do not count in loss or metrics
FEATURES = ("input_ids", "attention_mask", "token_type_ids")
WORD_SPLIT = r"\s+|[\p{P}\p{S}]"   # split on whitespace and around punctuation/symbols
WORD_KEEP = r"[\p{P}\p{S}]"        # ... keeping punctuation/symbols as words


def read_vocab(path: str) -> List[str]:
    """Read a WordPiece ``vocab.txt`` (one token per line)."""
    try:
        with open(path, encoding="utf-8") as f:
            vocab = [line.rstrip("\n").rstrip("\r") for line in f]
    except FileNotFoundError:
        raise DataError(f"{path}: vocabulary file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: vocabulary is not valid UTF-8 ({e})") from None
    if vocab and vocab[-1] == "":
        vocab.pop()
    if not vocab:
        raise DataError(f"{path}: vocabulary file is empty")
    return vocab


class TextEncoder(tf.Module):
    """BERT WordPiece encoder whose methods are plain TF ops (usable in tf.data and SavedModels)."""

    def __init__(self, vocab: Sequence[str], *, lower_case: bool = True, max_length: int = 128,
                 name: str = "text_encoder"):
        super().__init__(name=name)
        if max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {max_length}")
        self.vocab = list(vocab)
        self.lower_case = bool(lower_case)
        self.max_length = int(max_length)
        index = {tok: i for i, tok in enumerate(self.vocab)}
        for special in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"):
            if special not in index:
                raise DataError(f"vocabulary lacks the special token {special}")
        self.cls_id = index["[CLS]"]
        self.sep_id = index["[SEP]"]
        self.pad_id = index["[PAD]"]
        self.unk_id = index["[UNK]"]
        self.mask_id = index.get("[MASK]", self.unk_id)
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=self.vocab, token_out_type=tf.int32, unknown_token="[UNK]",
            lower_case_nfd_strip_accents=self.lower_case)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_directory(cls, path: str, *, max_length: Optional[int] = None) -> "TextEncoder":
        """Build from a HF checkpoint (or exported model) folder holding vocab.txt."""
        vocab = read_vocab(os.path.join(path, VOCAB_FILE))
        lower_case, saved_len = True, None
        cfg_path = os.path.join(path, TOKENIZER_CONFIG)
        if os.path.exists(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
            lower_case = bool(cfg.get("do_lower_case", True))
            saved_len = cfg.get("tfpipeline_max_length")
        length = max_length or saved_len or 128
        return cls(vocab, lower_case=lower_case, max_length=int(length))

    def save(self, path: str) -> None:
        """Write vocab.txt + tokenizer_config.json so ``from_directory`` (and HF) can reload it."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, VOCAB_FILE), "w", encoding="utf-8") as f:
            f.write("\n".join(self.vocab) + "\n")
        cfg = {"do_lower_case": self.lower_case, "tokenizer_class": "BertTokenizer",
               "model_max_length": 512, "tfpipeline_max_length": self.max_length}
        with open(os.path.join(path, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)

    def metadata(self) -> Dict[str, int]:
        """What a model folder's ``tfpipeline.json`` records about the preprocessing."""
        return {"max_length": self.max_length}

    # ------------------------------------------------------------ encoding
    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """[B] strings -> [B, (pieces)] int32 WordPiece ids, no special tokens."""
        return self._tokenizer.tokenize(texts)

    def tokenize_with_offsets(self, texts: tf.Tensor):
        """Like ``tokenize`` plus byte offsets (start, end) of every piece in its string."""
        return self._tokenizer.tokenize_with_offsets(texts)

    def encode(self, texts: tf.Tensor, pairs: Optional[tf.Tensor] = None) -> Dict[str, tf.RaggedTensor]:
        """[B] strings (and optional second segments) -> ragged model features with [CLS]/[SEP]."""
        first = self.tokenize(texts)
        if pairs is None:
            return self._combine([self._truncate(first, self.max_length - 2)])
        second = self.tokenize(pairs)
        first, second = self._truncate_pair(first, second, self.max_length - 3)
        return self._combine([first, second])

    def encode_words(self, words: tf.RaggedTensor) -> Tuple[Dict[str, tf.RaggedTensor], tf.RaggedTensor]:
        """[B, (words)] strings -> (features, word_ids).

        ``word_ids`` has one entry per position: the index of the word whose
        *first* piece sits there, or -1 (continuation pieces, [CLS], [SEP]).
        Only first pieces are labelled and scored, the usual BERT NER recipe.
        """
        pieces = self.tokenize(words)                       # [B, W, P]
        counts = pieces.values.row_lengths()                # pieces per word, flat
        word_index = tf.ragged.range(words.row_lengths()).flat_values
        piece_word = tf.repeat(tf.cast(word_index, tf.int32), counts)
        is_first = tf.ragged.range(counts).flat_values == 0
        flat = pieces.merge_dims(1, 2)
        word_ids = flat.with_flat_values(tf.where(is_first, piece_word, -1))
        flat = self._truncate(flat, self.max_length - 2)
        word_ids = self._truncate(word_ids, self.max_length - 2)
        features = self._combine([flat])
        minus_one = tf.fill([word_ids.nrows(), 1], -1)
        word_ids = tf.concat([minus_one, word_ids, minus_one], axis=1)
        return features, word_ids

    def pad(self, features: Dict[str, tf.RaggedTensor], length: Optional[int] = None) -> Dict[str, tf.Tensor]:
        """Ragged features -> dense, padded to the batch maximum or to ``length`` (static shapes)."""
        shape = None if length is None else [None, length]
        out = {}
        for key, value in features.items():
            out[key] = value.to_tensor(default_value=self.pad_id if key == "input_ids" else 0, shape=shape)
        return out

    def split_words(self, texts: tf.Tensor):
        """Raw strings -> (words, start, end): whitespace/punctuation split with byte offsets.

        This is how raw text becomes NER "words" at predict/serve time; it
        matches CoNLL-style tokenization (punctuation is its own token).
        """
        return tf_text.regex_split_with_offsets(texts, WORD_SPLIT, WORD_KEEP)

    # ------------------------------------------------------------- helpers
    @staticmethod
    def _truncate(ids: tf.RaggedTensor, limit) -> tf.RaggedTensor:
        keep = tf.ragged.range(ids.row_lengths()) < tf.cast(limit, tf.int64)
        return tf.ragged.boolean_mask(ids, keep)

    def _truncate_pair(self, a: tf.RaggedTensor, b: tf.RaggedTensor, budget: int):
        """Longest-first truncation of two segments to ``budget`` pieces in total (plain ops)."""
        la, lb = a.row_lengths(), b.row_lengths()
        budget = tf.constant(budget, tf.int64)
        half = budget // 2
        short = tf.minimum(la, lb)
        short_keep = tf.minimum(short, half)
        long_keep = tf.minimum(tf.maximum(la, lb), budget - short_keep)
        keep_a = tf.where(la + lb <= budget, la, tf.where(la <= lb, short_keep, long_keep))
        keep_b = tf.where(la + lb <= budget, lb, tf.where(la <= lb, long_keep, short_keep))
        return (self._truncate_rows(a, keep_a), self._truncate_rows(b, keep_b))

    @staticmethod
    def _truncate_rows(ids: tf.RaggedTensor, keep: tf.Tensor) -> tf.RaggedTensor:
        mask = tf.ragged.range(ids.row_lengths()) < tf.expand_dims(keep, 1)
        return tf.ragged.boolean_mask(ids, mask)

    def _combine(self, segments: List[tf.RaggedTensor]) -> Dict[str, tf.RaggedTensor]:
        rows = segments[0].nrows()
        cls = tf.fill([rows, 1], self.cls_id)
        sep = tf.fill([rows, 1], self.sep_id)
        ids_parts, type_parts = [cls], [tf.zeros([rows, 1], tf.int32)]
        for type_id, seg in enumerate(segments):
            seg = tf.cast(seg, tf.int32)
            ids_parts += [seg, sep]
            type_parts += [tf.ones_like(seg) * type_id, tf.fill([rows, 1], type_id)]
        input_ids = tf.concat(ids_parts, axis=1)
        return {
            "input_ids": input_ids,
            "attention_mask": tf.ones_like(input_ids),
            "token_type_ids": tf.concat(type_parts, axis=1),
        }
