"""Continual learning: head growth keeps the old head, the EWC penalty and rehearsal behave,
on a synthetic two-task setup both keep more of the old task than plain fine-tuning, and the
learning-rate schedule ends on the last step."""
import json
import math
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import FILLER, keyword_examples
from tfpipeline.bundle import ModelBundle
from tfpipeline.config import DataOptions
from tfpipeline.data.examples import TaskData, TextExample
from tfpipeline.data.pipeline import batches_per_epoch
from tfpipeline.errors import ConfigError, DataError
from tfpipeline.models.weights import weight_key
from tfpipeline.training.continual import (continual_finetune, ewc_anchors, ewc_penalty, expand_head,
                                           fisher_diagonal, old_task_data, rehearsal_mix, union_labels)


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
    old = ModelBundle.load(trained_classifier.output_dir)
    labels = union_labels(old.labels, ["sport", "pos", "food"])
    assert labels.names == ["neg", "pos", "sport", "food"]
    grown = expand_head(old.model, trained_classifier.output_dir, old.labels, labels)
    features = old.encoder.pad(old.encoder.encode(tf.constant(["a great film", "an awful plot"])))
    np.testing.assert_allclose(grown(features).numpy()[:, :2], old.model(features).numpy(), atol=1e-5)


def test_ewc_penalty_is_zero_at_the_old_weights_and_positive_elsewhere(trained_classifier, old_task):
    bundle = ModelBundle.load(trained_classifier.output_dir)
    model, labels = bundle.model, bundle.labels
    fisher = fisher_diagonal(model, bundle.encoder, labels, old_task.train, max_examples=16)
    assert set(fisher) == {weight_key(v) for v in model.trainable_variables}
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    old = {weight_key(w): w.numpy() for w in model.weights}
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
    # 8 epochs at 5e-3: rehearsal learns the new task from either tiny starting classifier tried (at 1e-2
    # for 4 epochs one start learned it, another stayed at chance)
    settings = dict(epochs=8, learning_rate=5e-3, batch_size=16, replay_fraction=0.25, ewc_lambda=1.0,
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

    saved = ModelBundle.load(out)  # the continual model is an ordinary model folder
    assert saved.labels.names == ["neg", "pos", "food", "sport"]
    assert list(saved.meta) == ["source_checkpoint", "dataset", "continual"]
    with open(os.path.join(out, "continual_report.json")) as f:
        assert json.load(f)["method"] == "rehearsal"


def test_the_learning_rate_schedule_ends_on_the_last_step(trained_classifier, old_task):
    """Bucketing makes one partial batch per length bucket: the schedule must count them, not ceil(n / batch)."""
    rng = random.Random(4)
    train = [TextExample(ex.text if i % 2 else ex.text + " " + " ".join(rng.choice(FILLER) for _ in range(14)),
                         ex.label, origin=ex.origin) for i, ex in enumerate(topic_examples(40, 7))]
    new = TaskData("topics", "classification", train=train, test=topic_examples(16, 9), labels=["food", "sport"])
    batch, epochs = 16, 2
    encoder = ModelBundle.load(trained_classifier.output_dir).encoder
    per_epoch = batches_per_epoch(train, encoder, "classification", batch)
    assert per_epoch != math.ceil(len(train) / batch)      # the case the old step count got wrong
    result = continual_finetune(trained_classifier.output_dir, new, old_task, method="none", epochs=epochs,
                                batch_size=batch)
    optimizer = result.bundle.model.optimizer
    scheduled = optimizer.get_config()["learning_rate"]["config"]["total_steps"]
    assert int(optimizer.iterations) == scheduled == epochs * per_epoch
    assert len(result.history["loss"]) == epochs and "ewc_penalty" in result.history


def test_unknown_method_is_an_error(trained_classifier, old_task, new_task):
    with pytest.raises(ConfigError, match="method"):
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

    saved = ModelBundle.load(str(out))  # an ordinary, loadable model folder
    assert saved.labels.names == ["neg", "pos", "food", "sport"]  # old labels keep their ids, new ones appended
    assert saved.meta["continual"]["method"] == "ewc+rehearsal" and saved.meta["dataset"] == topic_files["train"]
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
    """Exit status 2 and an error line (argparse rejects a bad choice itself, after its usage lines)."""
    from tfpipeline.cli import main

    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(("tfpipeline: error: ", "tfpipeline continual: error: ")), err
    return err[-1]


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


def test_old_task_data_defaults_to_what_the_model_folder_records(tmp_path, clf_files, monkeypatch):
    def model_folder(name, meta):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "tfpipeline.json").write_text(json.dumps({"task": "classification", **meta}))
        return str(folder)

    options = DataOptions(limit_train=20, limit_eval=10)
    # trained on files (tfpipeline train records them in its config): the same files again
    on_files = model_folder("files", {"dataset": clf_files["train"], "config": {
        "train_file": clf_files["train"], "validation_file": clf_files["validation"]}})
    data = old_task_data(on_files, options, seed=13)
    assert (data.name, len(data.train), len(data.validation)) == (clf_files["train"], 20, 10)
    # the old task's own options win over what the folder records
    given = old_task_data(model_folder("given", {"dataset": "keywords"}),
                          DataOptions(train_file=clf_files["validation"], limit_train=5), seed=13)
    assert given.name == clf_files["validation"] and len(given.train) == 5
    # trained on a built-in dataset: that dataset
    calls = []
    monkeypatch.setattr("tfpipeline.data.sources.load_task_data", lambda **kw: calls.append(kw) or "data")
    assert old_task_data(model_folder("builtin", {"dataset": "rotten_tomatoes"}), options, seed=13) == "data"
    assert len(calls) == 1 and {k: calls[0].get(k) for k in ("dataset", "task", "limit_train", "limit_eval", "seed")} \
        == dict(dataset="rotten_tomatoes", task="classification", limit_train=20, limit_eval=10, seed=13)
    # an in-memory dataset cannot be found again: the error says how to give the old task's data
    with pytest.raises(DataError, match="--old-dataset"):
        old_task_data(model_folder("memory", {"dataset": "keywords"}), options, seed=13)
