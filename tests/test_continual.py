"""Continual learning: head growth keeps the old head, the EWC penalty and rehearsal behave,
and on a synthetic two-task setup both keep more of the old task than plain fine-tuning."""
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import FILLER, keyword_examples
from tfpipeline.data.examples import DataError, TaskData, TextExample
from tfpipeline.inference import Predictor
from tfpipeline.models.task_model import load_task_model
from tfpipeline.training.continual import (_weight_key, continual_finetune, ewc_anchors,
                                           ewc_penalty, expand_head, fisher_diagonal, rehearsal_mix,
                                           union_labels)


def topic_examples(n: int, seed: int) -> list:
    """The new task: a new label set (class-incremental), cued by 'football' / 'pizza'."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "sport" if i % 2 == 0 else "food"
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 10))]
        words.insert(rng.randint(0, len(words)), "football" if label == "sport" else "pizza")
        out.append(TextExample(" ".join(words), label, origin=f"topics:{i}"))
    return out


@pytest.fixture(scope="module")
def old_task(clf_data):
    return TaskData("keywords", "classification", train=clf_data.train, validation=clf_data.validation,
                    test=keyword_examples(48, seed=5), labels=["neg", "pos"])


@pytest.fixture(scope="module")
def new_task():
    return TaskData("topics", "classification", train=topic_examples(96, 7), validation=topic_examples(16, 8),
                    test=topic_examples(48, 9), labels=["food", "sport"])


def test_grown_head_keeps_the_old_rows(trained_classifier):
    old, encoder, old_labels, _ = load_task_model(trained_classifier.output_dir)
    labels = union_labels(old_labels, ["sport", "pos", "food"])
    assert labels.names == ["neg", "pos", "sport", "food"]
    grown = expand_head(old, trained_classifier.output_dir, old_labels, labels)
    features = encoder.pad(encoder.encode(tf.constant(["a great film", "an awful plot"])))
    np.testing.assert_allclose(grown(features).numpy()[:, :2], old(features).numpy(), atol=1e-5)


def test_ewc_penalty_is_zero_at_the_old_weights_and_positive_elsewhere(trained_classifier, old_task):
    model, encoder, labels, _ = load_task_model(trained_classifier.output_dir)
    fisher = fisher_diagonal(model, encoder, labels, old_task.train, max_examples=16)
    assert set(fisher) == {_weight_key(v) for v in model.trainable_variables}
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    old = {_weight_key(w): w.numpy() for w in model.weights}
    anchors = ewc_anchors(model, fisher, old)
    assert float(ewc_penalty(anchors, 1.0)) == 0.0
    kernel = next(v for v in model.trainable_variables if "query/kernel" in v.name)
    kernel.assign_add(tf.fill(kernel.shape, 0.05))
    moved = float(ewc_penalty(anchors, 1.0))
    assert moved > 0 and float(ewc_penalty(anchors, 3.0)) == pytest.approx(3 * moved, rel=1e-5)
    # a grown head: new columns carry no anchor, old columns do
    grown_labels = union_labels(labels, ["food"])
    grown = expand_head(model, trained_classifier.output_dir, labels, grown_labels)
    head = next(v for v, f, _ in ewc_anchors(grown, fisher, old) if "classifier/kernel" in v.name)
    f_head = next(f for v, f, _ in ewc_anchors(grown, fisher, old) if "classifier/kernel" in v.name)
    assert head.shape[-1] == 3 and float(tf.reduce_sum(f_head[:, 2])) == 0.0


def test_rehearsal_mixes_old_examples_in():
    new, old = topic_examples(40, 1), keyword_examples(30, seed=2)
    mixed, replayed = rehearsal_mix(new, old, 0.25, seed=3)
    assert replayed == 10 and len(mixed) == 50
    assert sum(ex.label in ("pos", "neg") for ex in mixed) == 10
    assert set(new) <= set(mixed)
    assert rehearsal_mix(new, old, 0.0)[1] == 0 and rehearsal_mix(new, old[:3], 1.0)[1] == 3


def test_rehearsal_and_ewc_keep_more_of_the_old_task(tmp_path, trained_classifier, old_task, new_task):
    settings = dict(epochs=4, learning_rate=1e-2, batch_size=16, replay_fraction=0.25, ewc_lambda=1.0,
                    fisher_examples=32)
    out = str(tmp_path / "continual")
    runs = {method: continual_finetune(trained_classifier.output_dir, new_task, old_task,
                                       out if method == "rehearsal" else None, method=method, **settings).report
            for method in ("none", "rehearsal", "ewc")}
    none, rehearsal, ewc = (runs[m] for m in ("none", "rehearsal", "ewc"))
    assert none["old_before"]["accuracy"] >= 0.8
    # plain fine-tuning on new labels only: the old labels are never predicted again
    assert rehearsal["old_after"]["open_set_accuracy"] > none["old_after"]["open_set_accuracy"] + 0.3, runs
    assert ewc["old_after"]["accuracy"] > none["old_after"]["accuracy"] + 0.15, runs
    assert rehearsal["new_after"]["accuracy"] >= 0.8, runs
    assert rehearsal["replayed_examples"] == 24 and none["replayed_examples"] == 0
    assert ewc["ewc_anchored_weights"] > 0 and none["ewc_anchored_weights"] == 0

    predictor = Predictor.from_directory(out)  # the continual model is an ordinary model folder
    assert predictor.labels.names == ["neg", "pos", "food", "sport"]
    with open(os.path.join(out, "continual_report.json")) as f:
        assert json.load(f)["method"] == "rehearsal"


def test_unknown_method_is_an_error(trained_classifier, old_task, new_task):
    with pytest.raises(DataError, match="method"):
        continual_finetune(trained_classifier.output_dir, new_task, old_task, method="magic")


def test_ner_data_is_an_error(trained_classifier, old_task, ner_data):
    with pytest.raises(DataError, match="classification"):
        continual_finetune(trained_classifier.output_dir, ner_data, old_task)


# --------------------------------------------------------------------------- tfpipeline continual (CLI)
@pytest.fixture(scope="module")
def topic_files(tmp_path_factory):
    from conftest import write_csv

    d = tmp_path_factory.mktemp("topic_files")
    return {"train": write_csv(d / "train.csv", topic_examples(48, 7)),
            "validation": write_csv(d / "valid.csv", topic_examples(16, 8)),
            "test": write_csv(d / "test.csv", topic_examples(24, 9))}


def continual_flags(model_dir, clf_files, topic_files, **changes) -> list:
    """Tiny-model settings: old task = the keyword files, new task = the topic files, 1 epoch."""
    opts = {"model_dir": model_dir, "train_file": topic_files["train"],
            "validation_file": topic_files["validation"], "test_file": topic_files["test"],
            "old_train_file": clf_files["train"], "old_test_file": clf_files["validation"],
            "epochs": 1, "learning_rate": 1e-2, "batch_size": 16, "fisher_examples": 16, "limit_train": 48,
            "limit_eval": 24, **changes}
    flags = []
    for key, value in opts.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return ["continual"] + flags + ["--quiet"]


def test_cli_continual_writes_a_model_folder(tmp_path, trained_classifier, clf_files, topic_files, capsys):
    from tfpipeline.cli import main

    out = tmp_path / "rt_then_topics"
    assert main(continual_flags(trained_classifier.output_dir, clf_files, topic_files, output_dir=out,
                                method="ewc+rehearsal", replay_fraction=0.25)) == 0
    text = capsys.readouterr().out
    header, row = text.splitlines()[1:3]
    assert header.split()[:3] == ["method", "old", "before"] and row.split()[0] == "ewc+rehearsal"
    assert f"written to {out}" in text

    model, _, labels, meta = load_task_model(str(out))  # an ordinary, loadable model folder
    assert labels.names == ["neg", "pos", "food", "sport"]  # old labels keep their ids, new ones appended
    assert meta["continual"]["method"] == "ewc+rehearsal" and meta["dataset"] == topic_files["train"]
    with open(out / "continual_report.json") as f:
        report = json.load(f)
    assert {"old_before", "old_after", "new_after"} <= set(report)
    assert report["old_before"]["examples"] == 24 and report["new_after"]["examples"] == 24
    assert report["replayed_examples"] == 12 and report["config"]["epochs"] == 1
    assert float(row.split()[1]) == pytest.approx(report["old_before"]["accuracy"], abs=1e-4)
    assert not os.path.exists(f"{out}.partial")

    # the folder is not clobbered without --overwrite, and the clash is found before any training
    assert main(continual_flags(trained_classifier.output_dir, clf_files, topic_files, output_dir=out)) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_continual_compare_prints_one_row_per_method(trained_classifier, clf_files, topic_files, capsys):
    from tfpipeline.cli import main

    assert main(continual_flags(trained_classifier.output_dir, clf_files, topic_files, compare="none,rehearsal")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("old task ") and lines[1].split()[0] == "method"
    assert [ln.split()[0] for ln in lines[2:]] == ["none", "rehearsal"]
    assert all(len(ln.split()) == 7 for ln in lines[2:])  # method + 6 numbers


def _fails(argv, capsys) -> str:
    from tfpipeline.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfpipeline: error: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_continual_errors(tmp_path, trained_classifier, trained_ner, clf_files, topic_files, capsys):
    model_dir = trained_classifier.output_dir
    missing = str(tmp_path / "no_model")
    assert "not a tfpipeline model folder" in _fails(
        continual_flags(missing, clf_files, topic_files, output_dir=tmp_path / "a"), capsys)
    err = _fails(continual_flags(model_dir, clf_files, topic_files, output_dir=tmp_path / "b", method="magic"),
                 capsys)
    assert "method" in err and "magic" in err
    assert "magic" in _fails(continual_flags(model_dir, clf_files, topic_files, compare="none,magic"), capsys)
    assert "classification" in _fails(
        continual_flags(trained_ner.output_dir, clf_files, topic_files, output_dir=tmp_path / "c"), capsys)
    assert "--output-dir" in _fails(continual_flags(model_dir, clf_files, topic_files), capsys)
    # no old-task data given and the model folder records only an in-memory dataset name
    argv = continual_flags(model_dir, clf_files, topic_files, output_dir=tmp_path / "d")
    for flag in ("--old-train-file", "--old-test-file"):
        i = argv.index(flag)
        del argv[i:i + 2]
    assert "--old-dataset" in _fails(argv, capsys)
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "d"))


def test_cli_old_task_data_defaults_to_what_the_model_folder_records(clf_files, monkeypatch):
    import argparse

    from tfpipeline.cli import _old_data_from_args

    args = argparse.Namespace(old_dataset=None, old_train_file=None, old_validation_file=None, old_test_file=None,
                              limit_train=20, limit_eval=10, seed=13, text_column=None, label_column=None,
                              pair_column=None)
    # trained on files (tfpipeline train records them in its config): the same files again
    meta = {"dataset": clf_files["train"],
            "config": {"train_file": clf_files["train"], "validation_file": clf_files["validation"]}}
    data = _old_data_from_args(args, "model", meta)
    assert (data.name, len(data.train), len(data.validation)) == (clf_files["train"], 20, 10)
    # trained on a built-in dataset: that dataset
    calls = []
    monkeypatch.setattr("tfpipeline.data.sources.load_task_data", lambda **kw: calls.append(kw) or "data")
    assert _old_data_from_args(args, "model", {"dataset": "rotten_tomatoes"}) == "data"
    assert calls == [dict(dataset="rotten_tomatoes", task="classification", limit_train=20, limit_eval=10, seed=13)]
    with pytest.raises(DataError, match="--old-dataset"):
        _old_data_from_args(args, "model", {"dataset": "keywords"})
