"""In-graph BERT tokenization shared by training (tf.data) and export (serving graph).

One ``TextEncoder`` turns raw strings (or pre-split words, for NER) into
``input_ids`` / ``token_type_ids`` / ``attention_mask``. The same object is
used by the tf.data pipelines and traced into the exported SavedModel, so
training and serving cannot drift apart.

Tokenization mirrors Hugging Face's (slow, Python) ``BertTokenizer`` and follows
the checkpoint's ``tokenizer_config.json`` (``do_lower_case``,
``tokenize_chinese_chars``, ``strip_accents``). ``FastBertTokenizer``'s own
normaliser cannot do that: it case-folds (``ß`` -> ``ss``), NFKC-folds
full-width forms (``，`` -> ``,``, ids a Chinese checkpoint never saw in
pretraining), turns control characters into spaces instead of dropping them, and
always splits CJK characters. So the HF steps run here as plain TF ops and the
WordPiece step is ``tensorflow_text.FastWordpieceTokenizer`` on words we split
ourselves:

1. lower-case character by character (HF lowers each character on its own, so
   ``Σ`` is ``σ`` even at a word end), when ``do_lower_case``;
2. drop control/format/private-use characters, NUL and U+FFFD; map every
   whitespace character to a space;
3. NFD and drop combining marks (Mn) when accents are stripped, else NFC;
4. split on spaces and around punctuation (ASCII symbols count, as in BERT)
   and, with ``tokenize_chinese_chars``, around each CJK ideograph;
5. WordPiece; a word longer than 100 characters is one ``[UNK]``.

Every op ships with TF or with tensorflow-text 2.8 and later (checked in the
2.8.2 wheel: ``FastWordpieceTokenizeWithOffsets``, ``RegexSplitWithOffsets``,
``NormalizeUTF8`` and its offsets-map ops), so the graph stays exportable and
loads in TF Serving 2.12+, which bundles tensorflow-text.
Truncation and segment combination use plain TF ops only, no ``RoundRobinTrim``.

Known differences from ``BertTokenizer``: text holding a special token's literal
(``"[MASK]"``) is tokenized as text, HF maps it to the special id; characters
unassigned in Python's Unicode tables (e.g. emoji newer than Unicode 14 on
Python 3.11) are dropped by HF and become ``[UNK]`` here (HF's fast tokenizer
does the same as here).
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
# HF BasicTokenizer's character classes, as RE2 patterns.
CJK = (r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}"
       r"\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]")   # _is_chinese_char's blocks
PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"               # every ASCII symbol plus Unicode punctuation
REMOVED = r"[^\P{C}\t\n\r]|\x{FFFD}"                # control, format, private use; tab/newline are spaces
WHITESPACE = r"[\t\n\r\p{Zs}\p{Zl}\p{Zp}]"
MAX_WORD_CHARS = 100   # HF WordPiece: a longer word is a single [UNK]
# NER words (``split_words``): whitespace, and every punctuation mark or symbol as its own word (CoNLL style)
WORD_SPLIT = r"[\s\p{Z}]+|[\p{P}\p{S}]"
WORD_KEEP = r"[\p{P}\p{S}]"


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


def read_tokenizer_config(path: str) -> dict:
    """A ``tokenizer_config.json`` as a dict (a clear error for a file that is not a JSON object)."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def _flag(cfg: dict, key: str, default: Optional[bool], path: str) -> Optional[bool]:
    """A true/false (or, where the default is None, null) setting of a tokenizer config."""
    value = cfg.get(key, default)
    if value is None and default is not None:
        value = default
    if value is not None and not isinstance(value, bool):
        raise DataError(f"{path}: {key} must be true or false{' or null' if default is None else ''}, "
                        f"got {value!r}")
    return value


def _source_offsets(offsets_map: tf.Tensor, offsets: tf.RaggedTensor) -> tf.RaggedTensor:
    """``find_source_offsets`` for [B, (N)] offsets; the op rejects a row without offsets, so each row gets
    a dummy 0 for the call."""
    padded = tf.concat([offsets, tf.zeros([offsets.nrows(), 1], offsets.dtype)], axis=1)
    return tf_text.find_source_offsets(offsets_map, padded)[:, :-1]


class _CharacterAlignment:
    """Maps byte offsets in per-character normalised text back to the original strings.

    With ``cumulative[k]`` the running byte total of the normalised characters of
    the whole (flattened) batch up to character ``k``, the character holding
    normalised byte ``p`` of row ``r`` is the first ``k`` with
    ``cumulative[k] > base[r] + p`` (characters normalised away have no bytes and
    are skipped); its original ``starts[k]`` / ``ends[k]`` are the answer.
    """

    def __init__(self, texts: tf.Tensor, chars: tf.RaggedTensor, char_starts: tf.RaggedTensor,
                 normalised: tf.Tensor):
        self.starts = char_starts.flat_values
        # a character ends where the next one starts, the last one where its string ends
        text_bytes = tf.cast(tf.strings.length(texts), tf.int64)
        following = tf.concat([self.starts[1:], tf.zeros([1], tf.int64)], axis=0)[:tf.size(self.starts)]
        nonempty = chars.row_lengths() > 0
        last = tf.boolean_mask(chars.row_limits() - 1, nonempty)
        self.ends = tf.tensor_scatter_nd_update(following, last[:, None], tf.boolean_mask(text_bytes, nonempty))
        self.cumulative = tf.cumsum(tf.cast(tf.strings.length(normalised), tf.int64))
        self.base = tf.gather(tf.concat([[0], self.cumulative], axis=0), chars.row_starts())

    def _owner(self, offsets: tf.RaggedTensor, shift: int) -> tf.Tensor:
        position = offsets.flat_values + tf.gather(self.base, offsets.value_rowids()) - shift
        found = tf.searchsorted(self.cumulative, position, side="right")
        return tf.minimum(found, tf.maximum(tf.size(self.cumulative, out_type=found.dtype) - 1, 0))

    def start(self, offsets: tf.RaggedTensor) -> tf.RaggedTensor:
        """Start offsets: where the character holding the piece's first byte starts."""
        return offsets.with_flat_values(tf.gather(self.starts, self._owner(offsets, 0)))

    def end(self, offsets: tf.RaggedTensor) -> tf.RaggedTensor:
        """End offsets (exclusive): where the character holding the piece's last byte ends."""
        return offsets.with_flat_values(tf.gather(self.ends, self._owner(offsets, 1)))


class TextEncoder(tf.Module):
    """BERT WordPiece encoder whose methods are plain TF ops (usable in tf.data and SavedModels)."""

    def __init__(self, vocab: Sequence[str], *, lower_case: bool = True, max_length: int = 128,
                 tokenize_chinese_chars: bool = True, strip_accents: Optional[bool] = None,
                 name: str = "text_encoder"):
        """``lower_case``, ``tokenize_chinese_chars`` and ``strip_accents`` mean what HF's ``do_lower_case``,
        ``tokenize_chinese_chars`` and ``strip_accents`` mean (``strip_accents=None``: strip when lower-casing)."""
        super().__init__(name=name)
        if max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {max_length}")
        self.vocab = list(vocab)
        self.lower_case = bool(lower_case)
        self.max_length = int(max_length)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.strip_accents = None if strip_accents is None else bool(strip_accents)
        index = {tok: i for i, tok in enumerate(self.vocab)}
        for special in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"):
            if special not in index:
                raise DataError(f"vocabulary lacks the special token {special}")
        self.cls_id = index["[CLS]"]
        self.sep_id = index["[SEP]"]
        self.pad_id = index["[PAD]"]
        self.unk_id = index["[UNK]"]
        self.mask_id = index.get("[MASK]", self.unk_id)
        # HF BasicTokenizer: accents go with lower-casing unless strip_accents says otherwise
        self._strips_accents = self.lower_case if self.strip_accents is None else self.strip_accents
        cjk = f"|{CJK}" if self.tokenize_chinese_chars else ""
        self._split_pattern, self._keep_pattern = f" +|{PUNCTUATION}{cjk}", f"{PUNCTUATION}{cjk}"
        self._word_split = f"{WORD_SPLIT}{cjk}", f"{WORD_KEEP}{cjk}"
        # words arrive split and normalised; the byte limit only has to let MAX_WORD_CHARS characters through
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=self.vocab, token_out_type=tf.int32, unknown_token="[UNK]", no_pretokenization=True,
            max_bytes_per_word=4 * MAX_WORD_CHARS)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_directory(cls, path: str, *, max_length: Optional[int] = None) -> "TextEncoder":
        """Build from a HF checkpoint (or exported model) folder holding vocab.txt."""
        vocab = read_vocab(os.path.join(path, VOCAB_FILE))
        cfg_path = os.path.join(path, TOKENIZER_CONFIG)
        cfg = read_tokenizer_config(cfg_path) if os.path.exists(cfg_path) else {}
        if cfg.get("do_basic_tokenize") is False:
            raise DataError(f"{cfg_path}: do_basic_tokenize false is not supported (WordPiece on raw "
                            f"whitespace-split text); only BERT's basic tokenization is implemented")
        length = max_length or cfg.get("tfpipeline_max_length") or 128
        return cls(vocab, lower_case=_flag(cfg, "do_lower_case", True, cfg_path),
                   tokenize_chinese_chars=_flag(cfg, "tokenize_chinese_chars", True, cfg_path),
                   strip_accents=_flag(cfg, "strip_accents", None, cfg_path), max_length=int(length))

    def resized(self, max_length: int) -> "TextEncoder":
        """The same tokenizer with another ``max_length``."""
        return TextEncoder(self.vocab, lower_case=self.lower_case, max_length=max_length,
                           tokenize_chinese_chars=self.tokenize_chinese_chars, strip_accents=self.strip_accents)

    def save(self, path: str) -> None:
        """Write vocab.txt + tokenizer_config.json so ``from_directory`` (and HF) can reload it."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, VOCAB_FILE), "w", encoding="utf-8") as f:
            f.write("\n".join(self.vocab) + "\n")
        cfg = {"do_lower_case": self.lower_case, "tokenize_chinese_chars": self.tokenize_chinese_chars,
               "strip_accents": self.strip_accents, "tokenizer_class": "BertTokenizer",
               "model_max_length": 512, "tfpipeline_max_length": self.max_length}
        with open(os.path.join(path, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)

    def metadata(self) -> Dict[str, int]:
        """What a model folder's ``tfpipeline.json`` records about the preprocessing."""
        return {"max_length": self.max_length}

    # ------------------------------------------------------------ encoding
    def normalize(self, texts: tf.Tensor) -> tf.Tensor:
        """Strings as HF's BasicTokenizer sees them before splitting (steps 1-3 of the module docstring)."""
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")  # bad bytes -> U+FFFD
        return self._compose(self._per_character(texts))

    def tokenize(self, texts) -> tf.RaggedTensor:
        """[B] strings -> [B, (pieces)] int32 WordPiece ids, no special tokens (any ragged rank: one more)."""
        if isinstance(texts, tf.RaggedTensor):
            return texts.with_flat_values(self.tokenize(texts.flat_values))
        words = tf_text.regex_split(self.normalize(texts), self._split_pattern, self._keep_pattern)
        return self._word_pieces(words).merge_dims(1, 2)

    def tokenize_with_offsets(self, texts):
        """Like ``tokenize`` plus byte offsets (start, end) of every piece in the *original* string.

        Normalisation changes lengths (``İ`` -> ``i``, accents dropped), so it is
        done per character here and the piece offsets are mapped back through it
        (and through NFC's own offsets map). A piece inside a character that
        normalises to several (``ǆ`` -> ``dz``) spans that whole character.
        """
        if isinstance(texts, tf.RaggedTensor):
            ids, starts, ends = self.tokenize_with_offsets(texts.flat_values)
            return tuple(texts.with_flat_values(t) for t in (ids, starts, ends))
        chars, char_starts = tf.strings.unicode_split_with_offsets(texts, "UTF-8", errors="replace")
        normalised = self._per_character(chars.flat_values)
        joined = tf.strings.reduce_join(chars.with_flat_values(normalised), axis=-1)
        composed, nfc_map = joined, None
        if not self._strips_accents:
            composed, nfc_map = tf_text.normalize_utf8_with_offsets_map(joined, "NFC")
        words, word_starts, _ = tf_text.regex_split_with_offsets(composed, self._split_pattern, self._keep_pattern)
        ids, piece_starts, piece_ends = self._word_pieces(words, with_offsets=True)   # offsets within words
        word_of_piece = tf.gather(word_starts.flat_values, ids.values.value_rowids())
        starts, ends = (p.with_flat_values(p.flat_values + word_of_piece).merge_dims(1, 2)
                        for p in (piece_starts, piece_ends))
        ids = ids.merge_dims(1, 2)
        if nfc_map is not None:
            starts, ends = (_source_offsets(nfc_map, o) for o in (starts, ends))
        alignment = _CharacterAlignment(texts, chars, char_starts, normalised)
        return ids, alignment.start(starts), alignment.end(ends)

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
        matches CoNLL-style tokenization (punctuation is its own token). With
        ``tokenize_chinese_chars`` every CJK ideograph is a word of its own, as
        in character-tagged Chinese NER data (Chinese has no spaces between words).
        """
        return tf_text.regex_split_with_offsets(texts, *self._word_split)

    # ------------------------------------------------------- normalisation
    def _per_character(self, texts: tf.Tensor) -> tf.Tensor:
        """Steps 1-3 except NFC, elementwise; each one maps a character independently, so applying them to
        whole strings or to single characters gives the same text (what offset mapping relies on)."""
        texts = tf.strings.regex_replace(texts, REMOVED, "")   # first: tf.strings.lower stops at a NUL
        texts = tf.strings.regex_replace(texts, WHITESPACE, " ")
        if self.lower_case:
            # ICU lower-cases a word-final capital sigma to final sigma; HF lowers character by character
            texts = tf.strings.lower(tf.strings.regex_replace(texts, "\u03a3", "\u03c3"), encoding="utf-8")
        if self._strips_accents:
            texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), r"\p{Mn}", "")
        return texts

    def _compose(self, texts: tf.Tensor) -> tf.Tensor:
        """HF's NFC step; stripping accents ends in NFD anyway, so it only matters when accents stay."""
        return texts if self._strips_accents else tf_text.normalize_utf8(texts, "NFC")

    def _word_pieces(self, words: tf.RaggedTensor, with_offsets: bool = False):
        """[B, (words)] normalised words -> [B, (words), (pieces)] ids (and offsets in each word).

        A word over ``MAX_WORD_CHARS`` characters is replaced by the literal ``[UNK]``
        (a vocabulary entry, so it is that one piece) and its piece spans the word.
        """
        flat = words.flat_values
        too_long = tf.strings.length(flat, unit="UTF8_CHAR") > MAX_WORD_CHARS
        flat = tf.where(too_long, "[UNK]", flat)
        if not with_offsets:
            return words.with_flat_values(self._wordpiece.tokenize(flat))
        ids, starts, ends = self._wordpiece.tokenize_with_offsets(flat)
        owner = ends.value_rowids()
        word_bytes = tf.cast(tf.strings.length(words.flat_values), ends.dtype)
        ends = ends.with_flat_values(tf.where(tf.gather(too_long, owner), tf.gather(word_bytes, owner),
                                              ends.flat_values))
        return tuple(words.with_flat_values(t) for t in (ids, starts, ends))

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
