"""The ``tfpipeline`` command line: flags from the config dataclasses, help, no TensorFlow for help/datasets,
train (flags and YAML), predict, evaluate, datasets, error exits."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional

import pytest
import yaml

from tfpipeline.cli import build_parser, main
from tfpipeline.cli.flags import add_options, values_from
from tfpipeline.cli.parser import COMMANDS, build_config
from tfpipeline.config import DataOptions, OldTaskOptions, opt
from tfpipeline.errors import ConfigError

from conftest import TINY_TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- parser and help (no TensorFlow)
def subparsers() -> dict:
    """{command name: its ArgumentParser}."""
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_module_with_run():
    """The table and the command modules agree (checked on the source: importing them would load TensorFlow)."""
    assert set(subparsers()) == set(COMMANDS)
    for name in COMMANDS:
        path = os.path.join(ROOT, "tfpipeline", "cli", f"{name}.py")
        tree = ast.parse(open(path, encoding="utf-8").read())
        assert any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body), path


def test_every_option_of_every_command_has_help():
    for name, parser in subparsers().items():
        assert parser.description, name
        for action in parser._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        parser.format_help()  # a stray % in a help text would fail here


# Enumerated options named by issue 12 (and the rest): their flags must list the allowed values.
ENUMERATED = {"train": ["--task", "--peft", "--precision", "--strategy"],
              "tune": ["--algorithm", "--also-tune", "--task", "--peft", "--precision", "--strategy"],
              "evaluate": ["--split"], "distill": ["--student-init"], "compress": ["--quantize"],
              "continual": ["--method", "--compare"], "zeroshot": ["--method"]}


def test_enumerated_options_list_their_choices():
    parsers = subparsers()
    for name, command in COMMANDS.items():
        text = parsers[name].format_help()
        for section in command.sections:
            for f in dataclasses.fields(section.cls):
                choices = f.metadata.get("choices")
                if not choices or f.name in section.skip:
                    continue
                flag = "--" + f.name.replace("_", "-")
                assert f"{flag} {{{','.join(map(str, choices))}}}" in text, f"{name} {flag}"
    for name, flags in ENUMERATED.items():
        text = parsers[name].format_help()
        for flag in flags:
            assert f"{flag} {{" in text, f"{name} {flag} shows no choices"


def test_help_shows_defaults_and_required():
    text = subparsers()["train"].format_help()
    assert "peak AdamW learning rate (auto: the checkpoint recipe's, per task) (default: auto)" in " ".join(text.split())
    assert "global gradient-norm clipping (0 = off) (default: 1.0)" in " ".join(text.split())
    assert "(default: rotten_tomatoes)" in text
    text = " ".join(subparsers()["export"].format_help().split())
    assert "--model-dir MODEL_DIR trained model folder (tfpipeline train output) (required)" in text


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["zeroshot", "--help"], ["datasets"]])
def test_help_and_datasets_do_not_import_tensorflow(argv):
    """A fresh interpreter: only the command table and the catalog load, so these answer in ~0.1 s, not ~6 s."""
    code = ("import sys\nfrom tfpipeline.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\nprint('RC', rc, 'TF', 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                         timeout=120).stdout
    assert out.strip().splitlines()[-1] == "RC 0 TF False", out
    assert "usage: tfpipeline" in out or out.startswith("name")


def test_unknown_command_and_bad_values_are_usage_errors(capsys):
    for argv in (["train", "--task", "sentiment"], ["tune", "--also-tune", "dropout,colour"],
                 ["tune", "--batch-sizes", "16,big"], ["compress", "--model-dir", "m", "--output", "o",
                                                        "--quantize", "int4"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'sentiment'" in err and "'colour'" in err and "int4" in err


# --------------------------------------------------------------------------- flags from a dataclass
@dataclass
class Demo:
    name: str = opt(None, "what to call it", required=True)
    ratio: Optional[float] = opt(None, "share of 100% (or less)")
    count: int = opt(3, "how many")
    mode: str = opt("fast", "how", choices=("fast", "slow"))
    sizes: List[int] = opt(help="sizes, comma-separated", factory=lambda: [1, 2])
    tags: List[str] = opt(help="tags", factory=list, choices=("a", "b"))
    keep: bool = opt(True, "keep the result")
    notes: dict = opt(help="not a flag", factory=dict, flag=False)


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    add_options(parser, Demo)
    return parser


def test_flags_follow_the_field_types():
    args = demo_parser().parse_args(["--name", "x", "--ratio", "0.5", "--sizes", "8, 16,", "--tags", "b,a",
                                     "--no-keep", "--mode", "slow"])
    assert values_from(args, Demo) == {"name": "x", "ratio": 0.5, "sizes": [8, 16], "tags": ["b", "a"],
                                       "keep": False, "mode": "slow"}
    # flags not given stay out, so a config file (or the dataclass default) supplies them
    assert values_from(demo_parser().parse_args(["--name", "x"]), Demo) == {"name": "x"}


def test_flag_help_defaults_choices_and_escapes():
    text = " ".join(demo_parser().format_help().split())
    assert "--name NAME what to call it (required)" in text
    assert "share of 100% (or less)" in text  # % escaped for argparse, shown once
    assert "--count COUNT how many (default: 3)" in text and "(default: 1,2)" in text
    assert "--mode {fast,slow} how (default: fast)" in text and "--tags {a,b},... tags" in text
    assert "--keep, --no-keep keep the result (default: True)" in text
    assert "--notes" not in text


def test_flag_errors(capsys):
    for argv in (["--ratio", "0.5"], ["--name", "x", "--tags", "a,c"], ["--name", "x", "--sizes", "1,x"],
                 ["--name", "x", "--mode", "medium"]):
        with pytest.raises(SystemExit):
            demo_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert "--name" in err and "'c'" in err and "medium" in err


def test_unsupported_field_type_is_a_clear_error():
    @dataclass
    class Bad:
        table: dict = opt(help="no flag form", factory=dict)

    with pytest.raises(TypeError, match="Bad.table"):
        add_options(argparse.ArgumentParser(), Bad)


# --------------------------------------------------------------------------- configs from flags + files
def test_tune_config_from_file_sections_and_flags(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"dataset": "rotten_tomatoes", "learning_rate": 3e-5, "seed": 7,
                                    "tune": {"max_trials": 2, "batch_sizes": [8], "seed": 5}}), encoding="utf-8")
    args = build_parser().parse_args(["tune", "--config", str(path), "--max-trials", "3", "--epochs", "2",
                                      "--also-tune", "dropout", "--retrain-best"])
    config = build_config("tune", args)
    assert (config.train.learning_rate, config.train.epochs, config.train.seed) == (3e-5, 2, 7)
    assert (config.tune.max_trials, config.tune.batch_sizes, config.tune.also_tune, config.tune.seed) == \
        (3, [8], ["dropout"], 5)
    assert args.retrain_best


def test_config_file_errors_name_the_file_and_section(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: rotten_tomatoes\ntune:\n  max_trails: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml \(tune\).*max_trails"):
        build_config("tune", build_parser().parse_args(["tune", "--config", str(path)]))
    path.write_text("tune: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        build_config("tune", build_parser().parse_args(["tune", "--config", str(path)]))
    with pytest.raises(ConfigError, match="learning_rate"):
        build_config("train", build_parser().parse_args(["train", "--learning-rate", "0"]))


def test_continual_options(tmp_path):
    parse = build_parser().parse_args
    base = ["continual", "--model-dir", "m", "--dataset", "tweet_sentiment", "--limit-train", "20",
            "--text-column", "t"]
    config = build_config("continual", parse(base + ["--old-train-file", "old.csv", "--output-dir", "out",
                                                    "--method", "ewc"]))
    assert (config.run.output_dir, config.continual.method, config.data.dataset) == ("out", "ewc", "tweet_sentiment")
    old = config.old.data_options(config.data)  # old files, the new task's columns and limits
    assert (old.dataset, old.train_file, old.text_column, old.limit_train) == (None, "old.csv", "t", 20)
    recorded = OldTaskOptions().data_options(DataOptions(dataset="x"))
    assert recorded.dataset is None and recorded.train_file is None  # -> the model folder's record
    assert build_config("continual", parse(base + ["--compare", "none,ewc"])).run.compare == ["none", "ewc"]
    with pytest.raises(ConfigError, match="--output-dir"):
        build_config("continual", parse(base))
    with pytest.raises(ConfigError, match="drop --output-dir"):
        build_config("continual", parse(base + ["--compare", "none", "--output-dir", "out"]))


def test_commands_without_a_task_flag():
    """distill/compress/continual take the task from the model folder."""
    parsers = subparsers()
    for name in ("distill", "compress", "continual"):
        assert "--task" not in parsers[name].format_help(), name
    assert "--task" in parsers["train"].format_help()


def test_config_error_is_one_line_exit_2(capsys):
    assert main(["evaluate", "--model-dir", "m"]) == 2  # neither --dataset nor --file
    err = capsys.readouterr().err
    assert err.startswith("tfpipeline: error: ") and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- commands end to end


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
