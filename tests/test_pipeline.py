"""tf.data pipelines: NER label alignment, bucketing vs static shapes, epoch coverage and shuffling."""
from __future__ import annotations

import collections
import random

import numpy as np
import pytest
import tensorflow as tf

from tfpipeline.data.examples import CLASSIFICATION, NER, TextExample, TokenExample
from tfpipeline.errors import DataError
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import (align_labels, bucket_boundaries, make_dataset, padding_fraction,
                                      sequence_lengths)
from tfpipeline.data.tokenization import IGNORE_INDEX, TextEncoder

from conftest import FILLER

LABELS = LabelMap(["neg", "pos"])


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return TextEncoder.from_directory(minilm_dir, max_length=128)


def mixed_length_examples(n=96, seed=0):
    """Mostly short texts plus some long ones (the case bucketing is for); every text is unique."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(2, 6) if i % 4 else rng.randint(40, 90)
        words = [rng.choice(FILLER) for _ in range(length)]
        out.append(TextExample(f"item{i} " + " ".join(words), "pos" if i % 3 else "neg", origin=f"mem:{i}"))
    return out


def rows(dataset):
    """Every real (unpadded) row of every batch as a tuple of ids, in iteration order."""
    out = []
    for features, _ in dataset:
        ids, mask = features["input_ids"].numpy(), features["attention_mask"].numpy()
        out += [tuple(r[m.astype(bool)]) for r, m in zip(ids, mask)]
    return out


# --------------------------------------------------------------------------- label alignment
def test_align_labels_first_piece_only():
    tags = tf.ragged.constant([[1, 2, 3], [4]], dtype=tf.int32)
    word_ids = tf.ragged.constant([[-1, 0, -1, -1, 1, 2, -1], [-1, 0, -1]], dtype=tf.int32)
    aligned = align_labels(tags, word_ids).to_list()
    assert aligned == [[IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, 2, 3, IGNORE_INDEX],
                       [IGNORE_INDEX, 4, IGNORE_INDEX]]


def test_ner_dataset_word_split_in_three_pieces(encoder):
    labels = LabelMap(["O", "B-PER", "I-PER", "B-LOC"])
    words = ("Arnold", "Schwarzenegger", "visited", "Paris", ".")
    tags = ("B-PER", "I-PER", "O", "B-LOC", "O")
    assert encoder.tokenize(tf.constant(["Schwarzenegger"])).flat_values.shape[0] == 3  # precondition
    ds = make_dataset([TokenExample(words, tags, "s.conll:1")], encoder, labels, NER, batch_size=4)
    features, y = next(iter(ds))
    ids, y = features["input_ids"].numpy()[0], y.numpy()[0]
    pieces = [encoder.vocab[i] for i in ids]
    assert pieces == ["[CLS]", "arnold", "schwarz", "##ene", "##gger", "visited", "paris", ".", "[SEP]"]
    expected = [IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX, 0, 3, 0, IGNORE_INDEX]
    assert y.tolist() == expected
    # the 3-piece word has exactly one labelled position, carrying its tag
    assert [v for v in y[2:5] if v != IGNORE_INDEX] == [labels.id("I-PER")]
    assert int(np.sum(y != IGNORE_INDEX)) == len(words)


def test_ner_batch_padding_uses_ignore_index(encoder):
    labels = LabelMap(["O", "B-X"])
    examples = [TokenExample(("a",), ("B-X",)), TokenExample(tuple("abcdefg"), ("O",) * 7)]
    features, y = next(iter(make_dataset(examples, encoder, labels, NER, batch_size=2, bucket=False)))
    assert y.shape == features["input_ids"].shape == (2, 9)
    short = 0 if features["attention_mask"].numpy()[0].sum() == 3 else 1
    assert y.numpy()[short].tolist() == [IGNORE_INDEX, 1] + [IGNORE_INDEX] * 7


def test_ner_tag_count_mismatch_and_unknown_tag(encoder):
    labels = LabelMap(["O", "B-X"])
    with pytest.raises(DataError, match=r"f\.conll:3: 2 tokens but 1 tags"):
        make_dataset([TokenExample(("a", "b"), ("O",), "f.conll:3")], encoder, labels, NER)
    with pytest.raises(DataError, match=r"f\.conll:9: unknown label 'B-Y'"):
        make_dataset([TokenExample(("a",), ("B-Y",), "f.conll:9")], encoder, labels, NER)


# --------------------------------------------------------------------------- batching modes
def test_bucket_boundaries():
    assert bucket_boundaries(16) == []
    edges = bucket_boundaries(512)
    assert edges[:4] == [16, 24, 32, 48] and edges == sorted(edges) and edges[-1] < 512


def test_bucketing_pads_to_batch_max_and_beats_static(encoder):
    examples = mixed_length_examples()
    lengths = sequence_lengths(examples, encoder, CLASSIFICATION)
    assert min(lengths) < 12 and max(lengths) > 40
    bucketed = make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8, training=True)
    for features, y in bucketed:
        mask = features["attention_mask"].numpy()
        real = mask.sum(axis=1)
        assert features["input_ids"].shape[1] == real.max()  # padded to the batch max, not max_length
        assert (real > 0).all()  # no row is all padding
        assert y.shape == (mask.shape[0],)
        # rows are padded with [PAD] and the mask matches
        ids = features["input_ids"].numpy()
        assert (ids[mask == 0] == encoder.pad_id).all()
    static = make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8, static_shapes=True)
    plain = make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8, bucket=False)
    frac_bucket, frac_plain, frac_static = (padding_fraction(d) for d in (bucketed, plain, static))
    assert frac_bucket < frac_plain < frac_static
    assert frac_bucket < 0.5 * frac_static


def test_static_shapes_are_fixed_and_drop_remainder(encoder):
    examples = mixed_length_examples(n=30)
    ds = make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8, static_shapes=True, training=True)
    spec = ds.element_spec
    assert spec[0]["input_ids"].shape.as_list() == [8, 128] and spec[1].shape.as_list() == [8]
    batches = list(ds)
    assert len(batches) == 30 // 8
    for features, y in batches:
        assert {k: tuple(v.shape) for k, v in features.items()} == {k: (8, 128) for k in features}
        assert y.shape == (8,)


def test_static_shapes_for_ner(encoder):
    labels = LabelMap(["O", "B-X"])
    examples = [TokenExample(("a",) * n, ("O",) * n) for n in range(1, 8)]
    enc = TextEncoder(encoder.vocab, max_length=12)
    batches = list(make_dataset(examples, enc, labels, NER, batch_size=3, static_shapes=True))
    assert len(batches) == 2
    for features, y in batches:
        assert features["input_ids"].shape == (3, 12) and y.shape == (3, 12)


def test_each_example_once_per_epoch_and_reshuffled(encoder):
    examples = mixed_length_examples(n=40, seed=1)
    expected = collections.Counter(tuple(r) for r in encoder.encode(
        tf.constant([e.text for e in examples]))["input_ids"].to_list())
    assert len(expected) == 40

    def make(seed):
        return make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8, training=True, seed=seed)

    ds = make(7)
    epoch1, epoch2 = rows(ds), rows(ds)
    assert collections.Counter(epoch1) == expected and collections.Counter(epoch2) == expected
    assert epoch1 != epoch2  # reshuffled every epoch
    again = make(7)
    assert rows(again) == epoch1 and rows(again) == epoch2  # same seed: same sequence of epochs
    assert rows(make(8)) != epoch1

    # evaluation datasets are not shuffled: two passes give the same order
    val = make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8)
    assert rows(val) == rows(val) and collections.Counter(rows(val)) == expected


@pytest.mark.parametrize("kind", ["bucketed", "static", "padded", "ner"])
def test_datasets_run_without_the_autotuner(encoder, kind):
    """With tf.data's autotuner on, Keras fit calls can end with seconds of idle teardown (bench/input_pipeline.py)."""
    if kind == "ner":
        examples = [TokenExample(("a", "b"), ("B-PER", "O"), "x.conll:1")]
        ds = make_dataset(examples, encoder, LabelMap(["O", "B-PER", "I-PER"]), NER, batch_size=2, training=True)
    else:
        options = {"bucketed": {}, "static": {"static_shapes": True}, "padded": {"bucket": False}}[kind]
        ds = make_dataset(mixed_length_examples(n=16), encoder, LABELS, CLASSIFICATION, batch_size=4,
                          training=kind == "bucketed", **options)
    assert ds.options().autotune.enabled is False


def test_labels_follow_their_rows(encoder):
    """After shuffling and bucketing each row still carries its own label."""
    examples = mixed_length_examples(n=40, seed=2)
    by_row = {tuple(r): LABELS.id(e.label) for r, e in zip(
        encoder.encode(tf.constant([e.text for e in examples]))["input_ids"].to_list(), examples)}
    ds = make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8, training=True)
    seen = 0
    for features, y in ds:
        ids, mask = features["input_ids"].numpy(), features["attention_mask"].numpy()
        for r, m, label in zip(ids, mask, y.numpy()):
            assert by_row[tuple(r[m.astype(bool)])] == label
            seen += 1
    assert seen == 40


def test_text_pair_dataset(encoder):
    examples = [TextExample("a cat", "pos", "a dog"), TextExample("one two three", "neg", "four")]
    features, y = next(iter(make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=2, bucket=False)))
    types = features["token_type_ids"].numpy()
    assert sorted(y.numpy().tolist()) == [0, 1]
    assert (types.sum(axis=1) > 0).all()  # both rows have a second segment


def test_dataset_errors_name_origin(encoder):
    with pytest.raises(DataError, match=r"valid\.csv:12: unknown label 'neutral'"):
        make_dataset([TextExample("a", "pos", origin="valid.csv:11"),
                      TextExample("b", "neutral", origin="valid.csv:12")], encoder, LABELS, CLASSIFICATION)
    with pytest.raises(DataError, match=r"x\.csv:3: some examples have a text pair"):
        make_dataset([TextExample("a", "pos", "b", "x.csv:2"), TextExample("c", "neg", None, "x.csv:3")],
                     encoder, LABELS, CLASSIFICATION)
    with pytest.raises(DataError, match=r"x\.csv:4: example has no label"):
        make_dataset([TextExample("a", None, origin="x.csv:4")], encoder, LABELS, CLASSIFICATION)
    with pytest.raises(DataError, match="no examples"):
        make_dataset([], encoder, LABELS, CLASSIFICATION)
    with pytest.raises(DataError, match="unknown task"):
        make_dataset([TextExample("a", "pos")], encoder, LABELS, "qa")
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset([TextExample("a", "pos")], encoder, LABELS, CLASSIFICATION, batch_size=0)


def test_long_texts_truncated_in_dataset(encoder):
    enc = TextEncoder(encoder.vocab, max_length=16)
    examples = [TextExample("word " * 100, "pos"), TextExample("short", "neg")]
    for features, _ in make_dataset(examples, enc, LABELS, CLASSIFICATION, batch_size=2, bucket=False):
        assert features["input_ids"].shape == (2, 16)
        assert features["input_ids"].numpy()[:, 0].tolist() == [enc.cls_id] * 2
