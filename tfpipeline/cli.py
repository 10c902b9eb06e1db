"""``tfpipeline`` command line: a thin layer over the library functions.

Every ``train`` option is a ``TrainConfig`` field; ``--config file.yaml``
supplies them from a file and flags override the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Dict, List, Optional

from tfpipeline import _env  # noqa: F401
from tfpipeline.config import TrainConfig, load_config_file, make_config
from tfpipeline.data.examples import DataError

def _int_list(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _str_list(text: str) -> List[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


_TYPES = {"int": int, "float": float, "str": str, "List[int]": _int_list, "List[str]": _str_list}


def _field_type(field: dataclasses.Field):
    annotation = str(field.type)
    if annotation.startswith("Optional["):
        annotation = annotation[len("Optional["):-1]
    return _TYPES.get(annotation)


def add_dataclass_options(parser: argparse.ArgumentParser, cls, skip=("extra",)) -> None:
    """One ``--kebab-name`` flag per dataclass field; defaults stay None so files can fill them."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif _field_type(f):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            parser.add_argument(flag, dest=f.name, type=_field_type(f), default=None,
                                help=f"(default: {default})")


def options_from(args: argparse.Namespace, cls) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return values


def cmd_train(args) -> int:
    from tfpipeline.training.trainer import train

    source = args.config or "command line"
    config = make_config(TrainConfig, options_from(args, TrainConfig), source=source)
    train(config)
    return 0


def cmd_tune(args) -> int:
    from tfpipeline.training.trainer import train
    from tfpipeline.training.tuner import TuneConfig, tune

    values = options_from(args, TrainConfig)
    file_values = load_config_file(args.config) if args.config else {}
    tune_values = dict(file_values.get("tune") or {})
    values.pop("tune", None)
    names = {f.name for f in dataclasses.fields(TuneConfig)}
    tune_values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    source = args.config or "command line"
    base = make_config(TrainConfig, values, source=source)
    result = tune(base, make_config(TuneConfig, tune_values, source=f"{source} (tune)"))
    if args.retrain_best:
        train(result.best_config, overwrite=True)
    return 0


def cmd_evaluate(args) -> int:
    from tfpipeline.evaluation.evaluate import evaluate_model
    from tfpipeline.evaluation.reports import format_report

    report = evaluate_model(args.model_dir, dataset=args.dataset, split=args.split, file=args.file,
                            limit=args.limit, **_reader_options(args))
    print(format_report(report))
    if args.output:
        _write_json(args.output, report)
    return 0


def cmd_predict(args) -> int:
    from tfpipeline.inference import Predictor

    texts = list(args.texts)
    if args.file:
        from tfpipeline.data.readers import read_text

        texts += [line.strip() for line in read_text(args.file).splitlines() if line.strip()]
    if not texts and not sys.stdin.isatty():
        texts = [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise DataError("nothing to predict: pass texts as arguments, --file, or on stdin")
    predictor = Predictor.from_directory(args.model_dir)
    results = predictor.classify(texts) if predictor.task == "classification" else predictor.extract(texts)
    for text, result in zip(texts, results):
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        elif predictor.task == "classification":
            print(f"{result['label']}\t{result['score']:.3f}\t{text}")
        else:
            spans = ", ".join(f"{e['text']} [{e['type']}]" for e in result["entities"]) or "-"
            print(f"{spans}\t{text}")
    return 0


def cmd_datasets(args) -> int:
    from tfpipeline.data.catalog import is_available, list_datasets

    print(f"{'name':<18}{'task':<16}{'package':<28}description")
    for info in list_datasets():
        mark = "" if is_available(info.name) else "  (not installed)"
        print(f"{info.name:<18}{info.task:<16}{info.package:<28}{info.description}{mark}")
    return 0


def _reader_options(args) -> Dict[str, Any]:
    return {k: v for k, v in (("text_column", args.text_column), ("label_column", args.label_column),
                                ("pair_column", args.pair_column)) if v is not None}


def _write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfpipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a model and evaluate it")
    p.add_argument("--config", help="YAML or JSON file of train options (flags override it)")
    add_dataclass_options(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    from tfpipeline.training.tuner import TuneConfig

    p = sub.add_parser("tune", help="KerasTuner search over learning rate, batch size, ...")
    p.add_argument("--config", help="YAML/JSON of train options, with search options under `tune:`")
    add_dataclass_options(p, TrainConfig, skip=("extra", "seed", "overwrite"))
    add_dataclass_options(p, TuneConfig)
    p.add_argument("--retrain-best", action="store_true", help="train the best config into its output_dir")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="score a trained model folder")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--dataset", help="built-in dataset name")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--file", help="labelled CSV/TSV/JSONL (classification) or CoNLL (ner) file")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--pair-column")
    p.add_argument("--limit", type=int)
    p.add_argument("--output", help="write the report as JSON here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict raw texts (arguments, --file with one per line, or stdin)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("texts", nargs="*")
    p.add_argument("--file")
    p.add_argument("--json", action="store_true", help="one JSON result per line")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("datasets", help="list the built-in datasets")
    p.set_defaults(func=cmd_datasets)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from tfpipeline.models.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (DataError, CheckpointError) as e:
        print(f"tfpipeline: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
