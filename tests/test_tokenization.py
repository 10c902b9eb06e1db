"""In-graph TextEncoder vs the Hugging Face reference tokenizer, word ids, truncation, word splitting."""
from __future__ import annotations

import pytest
import tensorflow as tf

from tfpipeline.errors import DataError
from tfpipeline.data.tokenization import TextEncoder, read_vocab
from tfpipeline.decoding import byte_to_char_offsets

SENTENCES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu — naïve résumé, Zürich and São Paulo.",
    "東京は日本の首都です。",
    "Mixed 中文 and English text",
    "I love 🍕 and 🎉!!",
    "don't stop-believing... (really?) $100 & 50% #tag @user",
    "   leading and   multiple   spaces\tand\ttabs\n",
    "unbelievably antidisestablishmentarianism Schwarzenegger",
    "e-mail: foo@bar.com, url https://example.org/a?b=c",
    "Ελληνικά και русский текст",
    "UPPER lower MiXeD 12345 3.14",
    "a" * 300,
    " ".join(["word"] * 200),
    " ".join(f"token{i}" for i in range(100)),
]

# Known divergences of tf_text.FastBertTokenizer's normaliser (ICU case folding / NFKC) from
# HF's BasicTokenizer (str.lower + NFD): documented rather than hidden.
DIVERGENT = [
    pytest.param("Straße", marks=pytest.mark.xfail(strict=True, reason="tf_text case-folds ß to 'ss'")),
    pytest.param("Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ", marks=pytest.mark.xfail(
        strict=True, reason="tf_text NFKC-folds fullwidth letters; HF gives [UNK]")),
]

PAIRS = [
    ("short one", "a much longer second sentence that will need cutting down to size"),
    ("a long first sentence with many many words in it indeed and more", "short"),
    ("equal length here now", "same length here too"),
    ("both segments are fairly long in this particular example", "and the second segment is also long here"),
    ("x", "y"),
]


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(minilm_dir, local_files_only=True)


def _row(features, key, i):
    return features[key][i].numpy().tolist()


@pytest.mark.parametrize("max_length", [128, 16, 5])
def test_encode_matches_hugging_face(minilm_dir, hf_tokenizer, max_length):
    encoder = TextEncoder.from_directory(minilm_dir, max_length=max_length)
    features = encoder.encode(tf.constant(SENTENCES))
    for i, text in enumerate(SENTENCES):
        ref = hf_tokenizer(text, truncation=True, max_length=max_length)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert _row(features, key, i) == ref[key], (key, text)
        assert len(_row(features, "input_ids", i)) <= max_length


@pytest.mark.parametrize("text", DIVERGENT)
def test_known_normalisation_divergences(minilm_encoder, hf_tokenizer, text):
    ours = minilm_encoder.encode(tf.constant([text]))["input_ids"][0].numpy().tolist()
    assert ours == hf_tokenizer(text)["input_ids"]


@pytest.mark.parametrize("max_length", [6, 8, 9, 12, 13, 20, 64])
def test_pair_longest_first_truncation_matches_hugging_face(minilm_dir, hf_tokenizer, max_length):
    encoder = TextEncoder.from_directory(minilm_dir, max_length=max_length)
    features = encoder.encode(tf.constant([a for a, _ in PAIRS]), tf.constant([b for _, b in PAIRS]))
    for i, (a, b) in enumerate(PAIRS):
        ref = hf_tokenizer(a, b, truncation="longest_first", max_length=max_length)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert _row(features, key, i) == ref[key], (key, max_length, a, b)


def test_pair_segment_ids_and_separators(minilm_encoder):
    f = minilm_encoder.encode(tf.constant(["hello world"]), tf.constant(["good bye now"]))
    ids, types = _row(f, "input_ids", 0), _row(f, "token_type_ids", 0)
    assert ids[0] == minilm_encoder.cls_id and ids.count(minilm_encoder.sep_id) == 2 and ids[-1] == minilm_encoder.sep_id
    first_sep = ids.index(minilm_encoder.sep_id)
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)


def test_pad_dynamic_and_static(minilm_encoder):
    f = minilm_encoder.encode(tf.constant(["a", "a b c d e"]))
    dense = minilm_encoder.pad(f)
    assert dense["input_ids"].shape == (2, 7)
    assert dense["attention_mask"].numpy().tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    assert dense["input_ids"].numpy()[0, 3:].tolist() == [minilm_encoder.pad_id] * 4
    static = minilm_encoder.pad(f, length=10)
    assert {k: tuple(v.shape) for k, v in static.items()} == {k: (2, 10) for k in static}


def _expected_word_ids(hf_word_ids):
    """HF word_ids (one per piece) -> the library convention: first piece keeps the index, else -1."""
    out, previous = [], None
    for w in hf_word_ids:
        out.append(w if w is not None and w != previous else -1)
        previous = w
    return out


WORD_SENTENCES = [
    ["Hello", "unbelievably", "world", "!"],
    ["Schwarzenegger", "visited", "Zürich", "."],
    ["東京", "is", "big"],
    ["a"],
]


def test_encode_words_matches_hugging_face_word_ids(minilm_encoder, hf_tokenizer):
    features, word_ids = minilm_encoder.encode_words(tf.ragged.constant(WORD_SENTENCES))
    for i, words in enumerate(WORD_SENTENCES):
        ref = hf_tokenizer(words, is_split_into_words=True)
        assert _row(features, "input_ids", i) == ref["input_ids"]
        assert word_ids[i].numpy().tolist() == _expected_word_ids(ref.word_ids())


def test_encode_words_first_piece_convention(minilm_encoder):
    features, word_ids = minilm_encoder.encode_words(tf.ragged.constant([["big", "Schwarzenegger", "fan"]]))
    vocab = minilm_encoder.vocab
    pieces = [vocab[i] for i in _row(features, "input_ids", 0)]
    assert pieces == ["[CLS]", "big", "schwarz", "##ene", "##gger", "fan", "[SEP]"]
    assert word_ids[0].numpy().tolist() == [-1, 0, 1, -1, -1, 2, -1]


@pytest.mark.parametrize("max_length", [4, 6, 9])
def test_encode_words_truncation(minilm_dir, max_length):
    encoder = TextEncoder.from_directory(minilm_dir, max_length=max_length)
    words = [["unbelievably"] * 5, ["short"]]
    features, word_ids = encoder.encode_words(tf.ragged.constant(words))
    ids0, wid0 = _row(features, "input_ids", 0), word_ids[0].numpy().tolist()
    assert len(ids0) == len(wid0) == max_length
    assert ids0[0] == encoder.cls_id and ids0[-1] == encoder.sep_id
    assert wid0[0] == wid0[-1] == -1
    kept = [w for w in wid0 if w >= 0]
    assert kept == list(range(len(kept)))  # the surviving words, in order
    assert word_ids[1].numpy().tolist() == [-1, 0, -1]  # the short row is untouched


def test_split_words_offsets_slice_the_string(minilm_encoder):
    texts = ["Café, naïve — 東京! Don't  stop", "Angela Merkel visited Paris.", "   "]
    words, starts, ends = minilm_encoder.split_words(tf.constant(texts))
    assert [w.decode() for w in words[1].numpy()] == ["Angela", "Merkel", "visited", "Paris", "."]
    assert words[2].numpy().tolist() == []
    for text, ws, ss, es in zip(texts, words.to_list(), starts.to_list(), ends.to_list()):
        raw = text.encode("utf-8")
        assert [raw[s:e] for s, e in zip(ss, es)] == ws  # byte offsets
        cs, ce = byte_to_char_offsets(text, ss), byte_to_char_offsets(text, es)
        assert [text[s:e] for s, e in zip(cs, ce)] == [w.decode("utf-8") for w in ws]
    first = [w.decode() for w in words[0].numpy()]
    assert first == ["Café", ",", "naïve", "—", "東京", "!", "Don", "'", "t", "stop"]


def test_encoder_save_and_reload(tmp_path, minilm_encoder):
    enc = TextEncoder(minilm_encoder.vocab, max_length=48)
    enc.save(str(tmp_path))
    again = TextEncoder.from_directory(str(tmp_path))
    assert again.max_length == 48 and again.vocab == enc.vocab and again.lower_case
    assert TextEncoder.from_directory(str(tmp_path), max_length=20).max_length == 20
    t = tf.constant(["Some text, to encode!"])
    assert again.encode(t)["input_ids"].to_list() == minilm_encoder.encode(t)["input_ids"].to_list()


def test_cased_vocabulary_keeps_case(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "Hello", "hello"]
    cased = TextEncoder(vocab, lower_case=False)
    lower = TextEncoder(vocab, lower_case=True)
    assert cased.tokenize(tf.constant(["Hello hello"])).flat_values.numpy().tolist() == [4, 5]
    assert lower.tokenize(tf.constant(["Hello hello"])).flat_values.numpy().tolist() == [5, 5]


def test_encoder_errors(tmp_path):
    with pytest.raises(DataError, match="special token"):
        TextEncoder(["[PAD]", "[UNK]", "[CLS]", "hello"])
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], max_length=3)
    with pytest.raises(DataError, match="vocabulary file not found"):
        read_vocab(str(tmp_path / "vocab.txt"))
    (tmp_path / "vocab.txt").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_vocab(str(tmp_path / "vocab.txt"))
