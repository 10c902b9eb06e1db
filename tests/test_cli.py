"""The ``tfpipeline`` command line: train (flags and YAML), predict, evaluate, datasets, error exits."""
from __future__ import annotations

import io
import json
import os

import pytest
import yaml

from tfpipeline.cli import main

from conftest import TINY_TRAIN


def tiny_flags(checkpoint: str, **changes) -> list:
    opts = {"model": checkpoint, **{k: v for k, v in TINY_TRAIN.items()}, **changes}
    flags = []
    for key, value in opts.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, tiny_checkpoint, clf_files):
    """A classifier trained through ``tfpipeline train`` with flags only."""
    out = str(tmp_path_factory.mktemp("cli") / "model")
    rc = main(["train", "--task", "classification", "--train-file", clf_files["train"],
               "--validation-file", clf_files["validation"], "--output-dir", out] + tiny_flags(tiny_checkpoint))
    assert rc == 0
    return out


def test_train_with_flags(cli_model, clf_files):
    files = set(os.listdir(cli_model))
    assert {"tf_model.h5", "labels.json", "tfpipeline.json", "eval_report.json"} <= files
    with open(os.path.join(cli_model, "tfpipeline.json")) as f:
        meta = json.load(f)
    cfg = meta["config"]
    assert cfg["train_file"] == clf_files["train"] and cfg["epochs"] == TINY_TRAIN["epochs"]
    assert cfg["learning_rate"] == TINY_TRAIN["learning_rate"] and cfg["early_stopping_patience"] == 0
    assert meta["dataset"] == clf_files["train"]
    with open(os.path.join(cli_model, "eval_report.json")) as f:
        report = json.load(f)
    assert report["split"] == "validation" and report["examples"] == 32 and report["accuracy"] >= 0.9


def test_train_with_yaml_config_and_flag_override(tmp_path, tiny_checkpoint, clf_files):
    out = tmp_path / "from_yaml"
    config = {"task": "classification", "train_file": clf_files["train"], "validation_file": clf_files["validation"],
              "model": tiny_checkpoint, "output_dir": str(out), **TINY_TRAIN, "epochs": 5, "bucket": False}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", "--config", str(path), "--epochs", "2", "--no-bucket"]) == 0
    with open(out / "tfpipeline.json") as f:
        cfg = json.load(f)["config"]
    assert cfg["epochs"] == 2  # the flag wins over the file
    assert cfg["learning_rate"] == TINY_TRAIN["learning_rate"] and cfg["bucket"] is False  # from the file
    with open(out / "history.csv") as f:
        assert len(f.read().strip().splitlines()) == 1 + 2


def test_predict_texts_json_and_file(cli_model, tmp_path, capsys):
    assert main(["predict", "--model-dir", cli_model, "what a great story", "an awful film"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["pos", "neg"]
    assert [ln.split("\t")[2] for ln in lines] == ["what a great story", "an awful film"]
    assert all(0.5 <= float(ln.split("\t")[1]) <= 1.0 for ln in lines)

    texts = tmp_path / "texts.txt"
    texts.write_text("awful awful\n\n  great music  \n", encoding="utf-8")
    assert main(["predict", "--model-dir", cli_model, "--file", str(texts), "--json"]) == 0
    results = [json.loads(ln) for ln in capsys.readouterr().out.strip().splitlines()]
    assert [r["label"] for r in results] == ["neg", "pos"]
    assert set(results[0]["scores"]) == {"neg", "pos"}


def test_predict_ner(trained_ner, capsys):
    assert main(["predict", "--model-dir", trained_ner.output_dir, "today bob jones went to london"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == "bob jones [PER], london [LOC]\ttoday bob jones went to london"


def test_evaluate_file(cli_model, clf_files, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert main(["evaluate", "--model-dir", cli_model, "--file", clf_files["validation"],
                 "--output", str(report_path)]) == 0
    text = capsys.readouterr().out
    with open(report_path) as f:
        report = json.load(f)
    with open(os.path.join(cli_model, "eval_report.json")) as f:
        train_report = json.load(f)
    assert report["source"] == clf_files["validation"] and report["examples"] == 32
    assert report["accuracy"] == pytest.approx(train_report["accuracy"])  # same model, same examples
    assert f"accuracy {report['accuracy']:.4f}" in text and "confusion matrix" in text


def test_evaluate_with_column_options(cli_model, tmp_path, capsys):
    path = tmp_path / "other.tsv"
    path.write_text("s\ty\ngreat acting\tpos\nawful plot\tneg\n", encoding="utf-8")
    assert main(["evaluate", "--model-dir", cli_model, "--file", str(path), "--text-column", "s",
                 "--label-column", "y"]) == 0
    assert "accuracy 1.0000" in capsys.readouterr().out


# --------------------------------------------------------------------------- errors -> exit code 2
def _fails(argv, capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("tfpipeline: error: ")
    return captured.err


def test_missing_train_file(tmp_path, tiny_checkpoint, capsys):
    missing = str(tmp_path / "missing.csv")
    err = _fails(["train", "--task", "classification", "--train-file", missing, "--output-dir",
                  str(tmp_path / "out")] + tiny_flags(tiny_checkpoint), capsys)
    assert missing in err and "file not found" in err
    assert not os.path.exists(tmp_path / "out")


def test_unknown_config_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("task: classification\nlearning_rat: 0.1\n", encoding="utf-8")
    err = _fails(["train", "--config", str(path)], capsys)
    assert str(path) in err and "learning_rat" in err and "unknown option" in err


def test_missing_and_unparsable_config(tmp_path, capsys):
    err = _fails(["train", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert "nope.yaml" in err and "not found" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n", encoding="utf-8")
    assert "cannot parse config" in _fails(["train", "--config", str(bad)], capsys)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n", encoding="utf-8")
    assert "mapping" in _fails(["train", "--config", str(listy)], capsys)


def test_missing_evaluation_file(cli_model, tmp_path, capsys):
    missing = str(tmp_path / "gold.csv")
    err = _fails(["evaluate", "--model-dir", cli_model, "--file", missing], capsys)
    assert missing in err and "not found" in err


def test_predict_errors(tmp_path, cli_model, capsys, monkeypatch):
    err = _fails(["predict", "--model-dir", str(tmp_path), "hello"], capsys)
    assert str(tmp_path) in err and "not a tfpipeline model folder" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert "nothing to predict" in _fails(["predict", "--model-dir", cli_model], capsys)


def test_predict_from_stdin(cli_model, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("great fun\n\nawful mess\n"))
    assert main(["predict", "--model-dir", cli_model]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["pos", "neg"]


def test_bad_flags_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "many"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    capsys.readouterr()


def test_datasets_lists_the_catalog(capsys):
    catalog = pytest.importorskip("tfpipeline.data.catalog")
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    names = [info.name for info in catalog.list_datasets()]
    assert names and out.splitlines()[0].split()[:2] == ["name", "task"]
    for name in names:
        assert any(line.startswith(name) for line in out.splitlines()[1:]), name
