"""Shared fixtures: a tiny random BERT checkpoint, small learnable datasets and trained models.

Everything expensive is session-scoped: the tiny checkpoint is written once,
and one classifier and one NER model are trained once (a few seconds each on
2 CPU cores) and reused by the model, training, evaluation and CLI tests.
"""
from __future__ import annotations

import csv
import os
import random
import shutil

import tfpipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS etc. before TensorFlow is imported)

import numpy as np
import pytest

from tfpipeline.data.examples import CLASSIFICATION, NER, TaskData, TextExample, TokenExample

# --------------------------------------------------------------------------- synthetic data
FILLER = ("the a movie film plot actor scene story music was is very quite really this that it "
          "and with of about").split()
POSITIVE, NEGATIVE = "great", "awful"

NER_FILLER = "the met in today visited and with went to saw near yesterday".split()
FIRST_NAMES = ["alice", "bob", "carol", "david"]
SURNAMES = ["smith", "jones"]
CITIES = ["paris", "london", "berlin", "tokyo"]


def keyword_examples(n: int, seed: int, origin: str = "mem") -> list:
    """Sentences of filler words plus one keyword: 'great' -> pos, 'awful' -> neg."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 12))]
        words.insert(rng.randint(0, len(words)), POSITIVE if label == "pos" else NEGATIVE)
        out.append(TextExample(" ".join(words), label, origin=f"{origin}:{i + 2}"))
    rng.shuffle(out)
    return out


def ner_examples(n: int, seed: int, origin: str = "mem") -> list:
    """Sentences where names are PER (name [surname] = B-PER [I-PER]) and cities are LOC."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(2, 4)):
            tokens.append(rng.choice(NER_FILLER))
            tags.append("O")
            kind = rng.random()
            if kind < 0.4:
                tokens.append(rng.choice(FIRST_NAMES))
                tags.append("B-PER")
                if rng.random() < 0.5:
                    tokens.append(rng.choice(SURNAMES))
                    tags.append("I-PER")
            elif kind < 0.7:
                tokens.append(rng.choice(CITIES))
                tags.append("B-LOC")
        out.append(TokenExample(tuple(tokens), tuple(tags), origin=f"{origin}:{i + 1}"))
    return out


def write_csv(path, examples, pair: bool = False) -> str:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"] + (["text_pair"] if pair else []))
        for ex in examples:
            w.writerow([ex.text, ex.label] + ([ex.text_pair] if pair else []))
    return str(path)


def write_conll(path, examples) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            for tok, tag in zip(ex.tokens, ex.tags):
                f.write(f"{tok}\t{tag}\n")
            f.write("\n")
    return str(path)


# Training recipe for the tiny random model: a high learning rate learns the keyword task in a
# few epochs (the default 5e-5 is for pretrained backbones).
TINY_TRAIN = dict(epochs=6, batch_size=16, learning_rate=1e-2, max_length=32, verbose=0,
                  early_stopping_patience=0, seed=13)


def copy_version(exports_base: str, base: str, name: str, version: int = 1, as_version: int = None) -> str:
    """Drop a version into a served base folder the safe way (copy aside, then rename)."""
    target = os.path.join(base, name, str(as_version or version))
    staging = os.path.join(base, name, f".incoming-{as_version or version}")
    shutil.copytree(os.path.join(exports_base, name, str(version)), staging)
    os.rename(staging, target)
    return target


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A tiny random BERT (hidden 32, 2 layers) with the MiniLM vocabulary, as tf_model.h5."""
    from tfpipeline.models.task_model import save_random_checkpoint

    return save_random_checkpoint(str(tmp_path_factory.mktemp("tiny_checkpoint")))


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    from tfpipeline.models.checkpoint import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def minilm_encoder(minilm_dir):
    from tfpipeline.data.tokenization import TextEncoder

    return TextEncoder.from_directory(minilm_dir)


@pytest.fixture(scope="session")
def clf_data() -> TaskData:
    return TaskData("keywords", CLASSIFICATION, train=keyword_examples(128, seed=1, origin="train.csv"),
                    validation=keyword_examples(32, seed=2, origin="valid.csv"))


@pytest.fixture(scope="session")
def ner_data() -> TaskData:
    return TaskData("people-places", NER, train=ner_examples(128, seed=3, origin="train.conll"),
                    validation=ner_examples(32, seed=4, origin="valid.conll"))


@pytest.fixture(scope="session")
def clf_files(tmp_path_factory, clf_data):
    """The classification data as train/validation CSV files."""
    d = tmp_path_factory.mktemp("clf_files")
    return {"train": write_csv(d / "train.csv", clf_data.train),
            "validation": write_csv(d / "valid.csv", clf_data.validation)}


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory, tiny_checkpoint, clf_data):
    """``train()`` result of the tiny model on the keyword task (model folder in ``output_dir``)."""
    from tfpipeline.training.trainer import train

    out = str(tmp_path_factory.mktemp("runs") / "classifier")
    return train(data=clf_data, model=tiny_checkpoint, output_dir=out, **TINY_TRAIN)


@pytest.fixture(scope="session")
def trained_ner(tmp_path_factory, tiny_checkpoint, ner_data):
    from tfpipeline.training.trainer import train

    out = str(tmp_path_factory.mktemp("runs") / "ner")
    return train(data=ner_data, model=tiny_checkpoint, output_dir=out, **TINY_TRAIN)


# --------------------------------------------------------------------------- exports (test_export, test_serving)
CLF_LABELS = ["neg", "pos"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
CLF_NAME, NER_NAME = "sentiment", "entities"
TEXTS = ["Alice Smith flew from Paris to Tokyo.", "", "naïve café, déjà vu — 東京 in Tokyo!",
         "the movie was great " * 20, "  spaces   and\ttabs ", "awful"]


@pytest.fixture(scope="session")
def exports(tmp_path_factory, tiny_checkpoint) -> dict:
    """The tiny BERT exported once per session: a classifier (from in-memory objects, holding optimizer
    state that must not be exported) and a NER tagger (from its model folder, via the CLI)."""
    import tf_keras

    from tfpipeline.bundle import ModelBundle
    from tfpipeline.cli import main
    from tfpipeline.data.labels import LabelMap
    from tfpipeline.data.tokenization import TextEncoder
    from tfpipeline.models.task_model import build_task_model

    root = tmp_path_factory.mktemp("tiny_exports")
    base = str(root / "base")
    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=32)

    labels = LabelMap(CLF_LABELS)
    clf = build_task_model(tiny_checkpoint, CLASSIFICATION, labels)
    clf.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clf.optimizer.build(clf.trainable_variables)   # Adam slots + step counter, as after training
    assert len(clf.optimizer.variables()) > len(clf.trainable_variables), "the optimizer should hold state"
    clf_bundle = ModelBundle(clf, encoder, labels, CLASSIFICATION)
    clf_dir = clf_bundle.save(str(root / "clf_model"))
    clf_export = clf_bundle.export(base, CLF_NAME)

    tags = LabelMap(NER_LABELS)
    ner_dir = ModelBundle(build_task_model(tiny_checkpoint, NER, tags), encoder, tags, NER).save(str(root / "ner_model"))
    assert main(["export", "--model-dir", ner_dir, "--base-dir", base, "--name", NER_NAME]) == 0
    return dict(base=base, clf_dir=clf_dir, ner_dir=ner_dir, clf_export=clf_export,
                ner_export=os.path.join(base, NER_NAME, "1"),
                clf_weight_count=sum(int(np.prod(v.shape)) for v in clf.variables))


@pytest.fixture(scope="session")
def clf_predictor(exports):
    from tfpipeline.bundle import ModelBundle

    return ModelBundle.load(exports["clf_dir"]).predictor()


@pytest.fixture(scope="session")
def ner_predictor(exports):
    from tfpipeline.bundle import ModelBundle

    return ModelBundle.load(exports["ner_dir"]).predictor()
