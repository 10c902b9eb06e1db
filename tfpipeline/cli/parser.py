"""The command table: every subcommand's help, config dataclasses and hand-written arguments.

Building the parser imports only the standard library and ``tfpipeline.config``
(no TensorFlow), so ``--help`` for any command answers at once; a command's own
module (and TensorFlow with it) is imported only after parsing, by ``main``.

A command's config is built from its flags over its ``--config`` file (flags
win) with ``tfpipeline.config.make_config``, which validates it, so a bad value
fails before any data is read or model built.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, Optional, Tuple

from tfpipeline.cli.flags import add_options, values_from
from tfpipeline.config import (ClusterConfig, CompressConfig, ContinualConfig, ContinualRunOptions, DataOptions, DistillConfig,
                               EvaluateConfig, ExplainConfig, ExportConfig, IndexConfig, OldTaskOptions,
                               PredictConfig, ServeConfig, TextsOptions, TrainConfig, TuneConfig, ZeroShotConfig,
                               load_config_file, make_config)
from tfpipeline.errors import ConfigError

DESCRIPTION = "Fine-tune BERT-family models with tf.data + Keras, evaluate, export and serve them."


@dataclass(frozen=True)
class Section:
    """One config dataclass of a command: its flags, and where its values sit in a ``--config`` file."""

    name: str                       # attribute of the config handed to the command (several sections)
    cls: type
    title: Optional[str] = None     # argument group heading in --help (None: the command's own options)
    skip: Tuple[str, ...] = ()      # fields without a flag here (set elsewhere, or meaningless for the command)
    file_key: Optional[str] = None  # --config: the file's top level (None) or this sub-mapping


@dataclass(frozen=True)
class Command:
    help: str
    description: str = ""
    sections: Tuple[Section, ...] = ()
    config_file: Optional[str] = None   # help of --config (None: the command reads no config file)
    arguments: Tuple[Tuple[Tuple[str, ...], Dict[str, Any]], ...] = ()  # positionals and switches, not options


def _texts(what: str):
    return (("texts",), {"nargs": "*", "metavar": "TEXT", "help": what})


# The task of distill/compress/continual data comes from the model folder, so those commands have no --task.
NO_TASK = ("task",)

COMMANDS: Dict[str, Command] = {
    "train": Command(
        "fine-tune a model and evaluate it",
        "Fine-tune a checkpoint on a built-in dataset or your own files, keep the best epoch, evaluate it and "
        "write a model folder.",
        (Section("train", TrainConfig),),
        config_file="YAML or JSON file of train options (flags override it)"),
    "tune": Command(
        "KerasTuner search over learning rate, batch size, ...",
        "Search train hyperparameters with KerasTuner (resumable) and save the best config as YAML.",
        (Section("train", TrainConfig, "train options (the base config of every trial)",
                 skip=("seed", "overwrite", "resume", "backup_every")),
         Section("tune", TuneConfig, "search options (a config file's `tune:` mapping)", file_key="tune")),
        config_file="YAML/JSON of train options, with search options under `tune:`",
        arguments=((("--retrain-best",), {"action": "store_true",
                                          "help": "train the best config into its output_dir"}),)),
    "evaluate": Command(
        "score a trained model folder",
        "Score a model folder on a built-in dataset split or a labelled file.",
        (Section("evaluate", EvaluateConfig),)),
    "predict": Command(
        "predict raw texts (arguments, --file with one per line, or stdin), or stream a file (--input)",
        "Classify texts or tag their entities with a model folder; one result per line. With --input FILE "
        "--output FILE.jsonl a file of any size is streamed through tf.data, results written in input order as "
        "they come, with a progress bar; --resume continues an interrupted run.",
        (Section("predict", PredictConfig),),
        arguments=(_texts("texts to predict (else --file, else stdin)"),)),
    "explain": Command(
        "which words made the prediction: Integrated Gradients attributions per word",
        "Attribute a model folder's prediction (or --target) to the input words with Integrated Gradients over "
        "the input embeddings; print a table, JSON lines (--json) and/or write a page colouring the words (--html).",
        (Section("explain", ExplainConfig),),
        arguments=(_texts("texts to explain (else --file, else stdin)"),)),
    "cluster": Command(
        "print TF_CONFIG for the workers of a multi-worker training cluster",
        "Print the TF_CONFIG each worker of `train --strategy multiworker` needs: N workers on this machine "
        "(--workers) or one per host:port (--hosts); see docs/distributed.md.",
        (Section("cluster", ClusterConfig),)),
    "datasets": Command("list the built-in datasets",
                        "List the built-in datasets and whether their data package is installed."),
    "export": Command(
        "export a model folder as a versioned SavedModel for TF Serving",
        "Write BASE/NAME/VERSION/ (SavedModel with text-in signatures and warmup requests), atomically.",
        (Section("export", ExportConfig),)),
    "index": Command(
        "export an embedding model with a document index (a search signature)",
        "Embed a document file with an embedding model folder and write BASE/NAME/VERSION/ whose `search` "
        "signature returns the top-k documents for raw query texts; a new document set is a new version.",
        (Section("index", IndexConfig),)),
    "serve": Command(
        "serve every model under a base folder over gRPC and REST (TF Serving API)",
        "Serve NAME/VERSION/ exports over TF Serving's gRPC and REST APIs, loading new versions as they appear.",
        (Section("serve", ServeConfig),)),
    "distill": Command(
        "distil a trained model folder into a shallower student model folder",
        "Knowledge distillation: a student with fewer encoder layers learns the teacher's soft targets. "
        "Without data options the teacher's recorded training data is used.",
        (Section("distill", DistillConfig, skip=NO_TASK),)),
    "continual": Command(
        "fine-tune a trained classifier on a new task without forgetting the old one",
        "Continue training a classifier model folder on a new task (rehearsal and/or EWC against forgetting). "
        "The result has one head over the old + new labels; the table shows old-task accuracy before/after "
        "(task-aware and open-set) and new-task accuracy.",
        (Section("run", ContinualRunOptions),
         Section("data", DataOptions, "new task data (limits and columns also apply to the old task)",
                 skip=NO_TASK),
         Section("old", OldTaskOptions, "old task data (default: the dataset recorded in the model folder)"),
         Section("continual", ContinualConfig, "continual learning"))),
    "compress": Command(
        "TFLite export (float32 / dynamic / int8), optionally after pruning",
        "Export a model folder to TFLite, optionally magnitude-pruned first, and score the result. "
        "Without data options the model's recorded training data is used.",
        (Section("compress", CompressConfig, skip=NO_TASK),)),
    "zeroshot": Command(
        "zero-/few-shot classification: masked-LM cloze prompt or prompt similarity",
        "Classify with candidate labels and no (or few) labelled examples; evaluate on a dataset or save the "
        "classifier as a model folder.",
        (Section("zeroshot", ZeroShotConfig), Section("texts", TextsOptions, "input and output")),
        arguments=(_texts("texts to classify (and/or --file)"),)),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfpipeline", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, title="commands")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        if command.config_file:
            p.add_argument("--config", metavar="FILE", help=command.config_file)
        for flags, kwargs in command.arguments:
            p.add_argument(*flags, **kwargs)
        for section in command.sections:
            add_options(p.add_argument_group(section.title) if section.title else p, section.cls, section.skip)
    return parser


def build_config(name: str, args: argparse.Namespace):
    """The command's validated config: one dataclass, or a namespace of them (by section name) if several.

    A ``--config`` file's top level fills the sections without a ``file_key``; a
    section with one reads that sub-mapping (``tune:``). Flags override the file.
    """
    command = COMMANDS[name]
    if not command.sections:
        return None
    path = getattr(args, "config", None)
    file_values = load_config_file(path) if path else {}
    source = path or "command line"
    nested = {s.file_key for s in command.sections if s.file_key}
    built = {}
    for section in command.sections:
        if section.file_key:
            values = file_values.get(section.file_key) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: `{section.file_key}:` must be a mapping of option: value")
            where = f"{source} ({section.file_key})"
        else:
            values, where = {k: v for k, v in file_values.items() if k not in nested}, source
        built[section.name] = make_config(section.cls, {**values, **values_from(args, section.cls, section.skip)},
                                          source=where)
    return built[command.sections[0].name] if len(built) == 1 else SimpleNamespace(**built)
