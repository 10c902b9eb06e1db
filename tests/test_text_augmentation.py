"""Text augmentation (EDA without synonyms, span cutoff) in the training pipeline: what each operation may do
to a sentence, that buckets and batch counts stay exact, that evaluation never augments, config checks."""
from __future__ import annotations

import collections
import random

import numpy as np
import pytest
import tensorflow as tf

from tfpipeline.config import TrainConfig
from tfpipeline.config.train import check_augmentation
from tfpipeline.data.examples import CLASSIFICATION, REGRESSION, ScoreExample, TextExample
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import TargetScaling, batches_per_epoch, make_dataset
from tfpipeline.data.text_augmentation import cutoff_features, eda_text
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import ConfigError, DataError

from conftest import FILLER

LABELS = LabelMap(["neg", "pos"])
SENTENCE = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return TextEncoder.from_directory(minilm_dir, max_length=64)


def distinct_word_examples(n=48, seed=0):
    """Texts of distinct made-up words, so every piece of every augmented text can be traced to its example."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9 if i % 4 else 40))]
        out.append(TextExample(" ".join(words), "pos" if i % 3 else "neg", origin=f"mem:{i}"))
    return out


def eda(text, seed, rate=0.2):
    return eda_text(tf.constant(text), tf.constant(seed, tf.int64), rate).numpy().decode().split()


def test_each_eda_outcome_is_label_preserving_and_all_kinds_occur():
    original = SENTENCE.split()
    kinds = collections.Counter()
    for seed in range(200):
        words = eda(SENTENCE, seed)
        assert words == eda(SENTENCE, seed)                     # stateless: same seed, same text
        assert words and set(words) <= set(original)            # never new words, never empty
        if words == original:
            kinds["unchanged"] += 1
        elif collections.Counter(words) == collections.Counter(original):
            kinds["swap"] += 1
            assert sum(a != b for a, b in zip(words, original)) <= 4   # k = 2 swaps move at most 4 words
        elif len(words) < len(original):
            kinds["delete"] += 1
            it = iter(original)
            assert all(w in it for w in words)                  # an ordered subsequence of the original
        else:
            kinds["insert"] += 1
            assert len(words) == len(original) + 2              # rate 0.2 of 10 words: two copies
            assert not collections.Counter(original) - collections.Counter(words)
    assert 70 <= kinds["unchanged"] <= 130, kinds               # AUGMENT_PROBABILITY 0.5 (swap may be a no-op)
    assert min(kinds["swap"], kinds["delete"], kinds["insert"]) >= 15, kinds


def test_eda_leaves_one_word_and_empty_texts_alone():
    for seed in range(20):
        assert eda("word", seed) == ["word"]
        assert eda("", seed) == []


def test_cutoff_hides_one_inner_span_and_keeps_ids():
    n = 22
    features = {"input_ids": tf.range(100, 100 + n), "attention_mask": tf.ones(n, tf.int32),
                "token_type_ids": tf.zeros(n, tf.int32)}
    cut = 0
    for seed in range(60):
        out = cutoff_features(features, tf.constant(seed, tf.int64), 0.1)
        np.testing.assert_array_equal(out["input_ids"], features["input_ids"])
        mask = out["attention_mask"].numpy()
        hidden = np.flatnonzero(mask == 0)
        if hidden.size:
            cut += 1
            assert hidden.size == 2 and hidden[1] - hidden[0] == 1   # round(0.1 x 20 inner pieces), contiguous
            assert mask[0] == 1 and mask[-1] == 1                     # [CLS] and final [SEP] stay
    assert 15 <= cut <= 45


def real_rows(dataset):
    out = []
    for features, y in dataset:
        ids, mask = features["input_ids"].numpy(), features["attention_mask"].numpy()
        out += [(tuple(r[m.astype(bool)]), int(label)) for r, m, label in zip(ids, mask, y.numpy())]
    return out


@pytest.mark.parametrize("augmentation", ["eda", "cutoff", "eda+cutoff"])
@pytest.mark.parametrize("static", [False, True])
def test_augmented_epochs_have_the_planned_batches_and_change_each_epoch(encoder, augmentation, static):
    examples = distinct_word_examples()
    ds = make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8, training=True, seed=3,
                      static_shapes=static, augmentation=augmentation, augmentation_rate=0.2)
    planned = batches_per_epoch(examples, encoder, CLASSIFICATION, 8, static_shapes=static)
    assert int(ds.cardinality()) == planned
    epochs = [list(ds) for _ in range(2)]
    assert [len(e) for e in epochs] == [planned, planned]
    for batches in epochs:
        assert set(batches[0][0]) == {"input_ids", "attention_mask", "token_type_ids"}
    first, second = (real_rows(e) for e in epochs)
    labels = collections.Counter(LABELS.id(ex.label) for ex in examples)
    if not static:
        assert collections.Counter(label for _, label in first) == labels   # every example once, its own label
    plain = collections.Counter(real_rows(make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8,
                                                       static_shapes=static)))
    changed = [sum(row not in plain for row in rows) for rows in (first, second)]
    assert all(c >= len(first) // 5 for c in changed), changed          # about half are augmented
    assert sorted(first) != sorted(second)                               # new draws every epoch
    again = make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=8, training=True, seed=3,
                         static_shapes=static, augmentation=augmentation, augmentation_rate=0.2)
    assert real_rows(again) == first                                     # same seed, same run


def test_evaluation_datasets_never_augment(encoder):
    examples = distinct_word_examples(n=16)
    plain = real_rows(make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=4))
    assert real_rows(make_dataset(examples, encoder, LABELS, CLASSIFICATION, batch_size=4,
                                  augmentation="eda+cutoff")) == plain


def test_eda_on_pairs_and_regression_targets(encoder):
    pairs = [TextExample(f"first words {i} here", "pos" if i % 2 else "neg", f"second text {i} now",
                         origin=f"mem:{i}") for i in range(12)]
    features, _ = next(iter(make_dataset(pairs, encoder, LABELS, CLASSIFICATION, batch_size=12, training=True,
                                         augmentation="eda")))
    assert (features["token_type_ids"].numpy().sum(axis=1) > 0).all()   # both segments survive
    scored = [ScoreExample(f"text number {i} is here", (float(i),), origin=f"mem:{i}") for i in range(12)]
    scaling = TargetScaling.fit(scored)
    ds = make_dataset(scored, encoder, LabelMap(["score"]), REGRESSION, batch_size=4, training=True,
                      target_scaling=scaling, augmentation="eda")
    targets = sorted(float(v) for _, y in ds for v in y.numpy().ravel())
    np.testing.assert_allclose(targets, sorted(scaling.standardize(np.arange(12.0))), atol=1e-5)


def test_augmentation_is_checked_against_the_task(encoder):
    check_augmentation("eda", CLASSIFICATION)
    check_augmentation("crop", "image_classification")
    with pytest.raises(ConfigError, match="not available for ner"):
        check_augmentation("cutoff", "ner")
    with pytest.raises(ConfigError, match="image_classification"):
        check_augmentation("eda", "image_classification")
    with pytest.raises(ConfigError, match="augmentation"):
        check_augmentation("crop+flip", CLASSIFICATION)
    with pytest.raises(ConfigError, match="augmentation_rate"):
        TrainConfig(augmentation="eda", augmentation_rate=1.5).validate()
    with pytest.raises(DataError, match="classification and regression"):
        make_dataset([TextExample("a", "pos")], encoder, LABELS, "ner", training=True, augmentation="eda")


def test_recipe_defaults_and_header_line(tiny_checkpoint, clf_data):
    from tfpipeline.training.effective_recipe import USER, resolve_recipe

    labels = LabelMap.from_examples(clf_data.train, clf_data.task)
    plain = resolve_recipe(TrainConfig(model=tiny_checkpoint).validate(), clf_data, labels)
    assert plain.config.augmentation == "none" and "classification default" in plain.settings["augmentation"].source
    assert "augmentation" not in plain.describe()
    chosen = resolve_recipe(TrainConfig(model=tiny_checkpoint, augmentation="eda", augmentation_rate=0.2).validate(),
                            clf_data, labels)
    assert chosen.settings["augmentation"].source == USER
    assert "augmentation eda at rate 0.2 (set)" in chosen.describe()


def test_training_with_augmentation_learns_the_keyword_task(tmp_path, tiny_checkpoint, clf_data):
    """The tiny model still learns 'great' -> pos / 'awful' -> neg with every text augmented half the time."""
    from tfpipeline.training.trainer import train

    from conftest import TINY_TRAIN

    result = train(data=clf_data, model=tiny_checkpoint, output_dir=str(tmp_path / "run"),
                   **{**TINY_TRAIN, "augmentation": "eda+cutoff"})
    assert result.report["accuracy"] >= 0.9
    assert result.bundle.meta["config"]["augmentation"] == "eda+cutoff"
