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
    """One ``--kebab-name`` flag per dataclass field; defaults stay None so files can fill them.

    A field's ``metadata["help"]``, if any, becomes the flag's help text.
    """
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif _field_type(f):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            about = f.metadata.get("help")
            parser.add_argument(flag, dest=f.name, type=_field_type(f), default=None,
                                help=f"{about} (default: {default})" if about else f"(default: {default})")


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


def cmd_export(args) -> int:
    from tfpipeline.export import export_model

    warmup = None
    if args.warmup_file:
        from tfpipeline.data.readers import read_text

        warmup = [line.strip() for line in read_text(args.warmup_file).splitlines() if line.strip()]
    path = export_model(args.model_dir, args.base_dir, args.name, version=args.version, warmup_texts=warmup)
    print(f"[tfpipeline] exported {args.model_dir} to {path}")
    return 0


def cmd_serve(args) -> int:
    import logging
    import signal

    from serving.runner import Limits
    from serving.server import ModelServer

    logging.basicConfig(level=logging.INFO, format="[serving] %(message)s")
    from tfpipeline.training.strategy import set_tf_threads

    try:
        threads = set_tf_threads(args.intra_op_threads, args.inter_op_threads)
    except ValueError as e:
        raise DataError(str(e)) from None
    try:
        server = ModelServer(args.model_base, host=args.host,
                             grpc_port=None if args.grpc_port < 0 else args.grpc_port,
                             rest_port=None if args.rest_port < 0 else args.rest_port,
                             limits=Limits(args.max_batch_size, args.max_text_bytes),
                             poll_seconds=args.poll_seconds, keep_versions=args.keep_versions)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from None

    def interrupt(signum, frame):  # docker stop / kubectl delete send SIGTERM: shut down like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    server.start()
    print(f"[tfpipeline] TF threads: intra-op {threads[0] or 'default'}, inter-op {threads[1] or 'default'}")
    print(f"[tfpipeline] serving {args.model_base}: gRPC {server.grpc_target or 'off'}, REST {server.rest_url or 'off'}"
          " (Ctrl-C stops)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _reader_options(args) -> Dict[str, Any]:
    return {k: v for k, v in (("text_column", args.text_column), ("label_column", args.label_column),
                                ("pair_column", args.pair_column)) if v is not None}


def _write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def _add_data_options(p) -> None:
    """Data flags shared by distill and compress: a built-in dataset or your own files."""
    p.add_argument("--dataset", help="built-in dataset name")
    p.add_argument("--train-file", help="labelled CSV/TSV/JSONL (classification) or CoNLL (ner) file")
    p.add_argument("--validation-file")
    p.add_argument("--test-file")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--pair-column")
    p.add_argument("--limit-train", type=int, help="cap training examples (quick runs)")
    p.add_argument("--limit-eval", type=int, help="cap validation/test examples")
    p.add_argument("--seed", type=int, default=13)


def _data_from_args(args, task: str, fallback_dataset: Optional[str] = None):
    from tfpipeline.data.sources import load_task_data

    dataset = args.dataset or (None if args.train_file else fallback_dataset)
    return load_task_data(dataset=dataset, task=task, train_file=args.train_file,
                          validation_file=args.validation_file, test_file=args.test_file,
                          limit_train=args.limit_train, limit_eval=args.limit_eval, seed=args.seed,
                          **_reader_options(args))


def _model_meta(model_dir: str) -> Dict[str, Any]:
    import os

    from tfpipeline.models.task_model import META_FILE

    path = os.path.join(model_dir, META_FILE)
    if not os.path.isfile(path):
        raise DataError(f"{model_dir}: not a tfpipeline model folder (no {META_FILE})")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cmd_distill(args) -> int:
    from tfpipeline.evaluation.reports import format_report
    from tfpipeline.models.distillation import distill

    meta = _model_meta(args.teacher_dir)
    data = _data_from_args(args, meta["task"], meta.get("dataset"))
    result = distill(args.teacher_dir, data, args.output_dir, num_layers=args.student_layers,
                     layers=args.student_init, temperature=args.temperature, alpha=args.alpha, epochs=args.epochs,
                     learning_rate=args.learning_rate, batch_size=args.batch_size, max_length=args.max_length,
                     seed=args.seed, overwrite=args.overwrite, verbose=0 if args.quiet else 1)
    if not args.quiet:
        print(format_report(result.report))
    return 0


def _old_data_from_args(args, model_dir: str, meta: Dict[str, Any]):
    """The old task's data: --old-dataset / --old-*-file, else what the model folder was trained on."""
    from tfpipeline.data.catalog import list_datasets
    from tfpipeline.data.sources import load_task_data

    limits = dict(limit_train=args.limit_train, limit_eval=args.limit_eval, seed=args.seed)
    if args.old_dataset or args.old_train_file:
        return load_task_data(dataset=args.old_dataset, task="classification", train_file=args.old_train_file,
                              validation_file=args.old_validation_file, test_file=args.old_test_file,
                              **limits, **_reader_options(args))
    recorded, config = meta.get("dataset"), meta.get("config") or {}
    if recorded and recorded in {info.name for info in list_datasets()}:
        return load_task_data(dataset=recorded, task="classification", **limits)
    if recorded and config.get("train_file") == recorded:  # trained on files: the same files again
        columns = {k: config[k] for k in ("text_column", "label_column", "pair_column") if config.get(k)}
        return load_task_data(task="classification", train_file=recorded,
                              validation_file=config.get("validation_file"), test_file=config.get("test_file"),
                              **limits, **columns)
    raise DataError(f"{model_dir}: the model folder does not record its training data"
                    f"{f' (dataset: {recorded!r})' if recorded else ''}; give the old task's data with "
                    "--old-dataset or --old-train-file/--old-test-file")


def cmd_continual(args) -> int:
    from tfpipeline.training.continual import (ContinualConfig, compare_methods, continual_finetune,
                                               format_comparison, summarize)

    config = make_config(ContinualConfig, options_from(args, ContinualConfig), source="command line").validate()
    for method in args.compare or []:
        ContinualConfig(method=method).validate()
    if args.compare and args.output_dir:
        raise DataError("--compare trains one throwaway model per method and saves none; drop --output-dir "
                        "(or run without --compare to save the chosen method)")
    if not args.compare and not args.output_dir:
        raise DataError("give --output-dir for the continual model (or --compare m1,m2 to only compare methods)")
    meta = _model_meta(args.model_dir)
    if meta.get("task") != "classification":
        raise DataError(f"{args.model_dir}: continual learning supports classification models, "
                        f"not {meta.get('task')}")
    if not args.dataset and not args.train_file:
        raise DataError("give the new task's data: --dataset NAME or --train-file (+ --test-file)")
    new_data = _data_from_args(args, "classification")
    old_data = _old_data_from_args(args, args.model_dir, meta)
    verbose = 0 if args.quiet or args.json else (1 if sys.stdout.isatty() else 2)
    if args.compare:
        settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "method"}
        rows = compare_methods(args.model_dir, new_data, old_data, methods=args.compare, verbose=verbose,
                               **settings)
        print(json.dumps(rows, indent=2) if args.json else format_comparison(rows, old_data.name, new_data.name))
        return 0
    result = continual_finetune(args.model_dir, new_data, old_data, args.output_dir, config,
                                overwrite=args.overwrite, verbose=verbose)
    if args.json:
        print(json.dumps(result.report, indent=2))
    else:
        print(format_comparison({config.method: summarize(result.report)}, old_data.name, new_data.name))
        print(f"[tfpipeline] model ({len(result.labels)} labels: {', '.join(result.labels.names)}) "
              f"written to {args.output_dir}")
    return 0


def cmd_compress(args) -> int:
    import os

    from tfpipeline.inference import Predictor
    from tfpipeline.models.compression import (TFLiteClassifier, evaluate_tflite, export_tflite, prune_model,
                                               zipped_size)
    from tfpipeline.models.task_model import load_task_model, save_task_model

    model, encoder, labels, meta = load_task_model(args.model_dir)
    needs_data = args.prune_sparsity or args.quantize == "int8" or args.evaluate
    data = None
    if needs_data:
        try:
            data = _data_from_args(args, meta["task"], meta.get("dataset"))
        except DataError as e:
            if args.prune_sparsity or args.quantize == "int8":
                raise DataError(f"{e} (pruning and int8 calibration need data: --dataset or --train-file)") from None
            print(f"[tfpipeline] no evaluation data ({e}); exporting without evaluation", file=sys.stderr)
    summary: Dict[str, Any] = {"model_dir": args.model_dir, "quantize": args.quantize}
    source_dir = args.model_dir
    if args.prune_sparsity:
        summary["pruning"] = prune_model(model, encoder, labels, data.train, data.validation,
                                         target_sparsity=args.prune_sparsity, epochs=args.prune_epochs,
                                         learning_rate=args.learning_rate, batch_size=args.batch_size,
                                         seed=args.seed, verbose=0)
        source_dir = save_task_model(model, encoder, labels, os.path.join(args.output, "pruned_model"),
                                     **{k: v for k, v in meta.items() if k not in ("task", "max_length")},
                                     pruning={k: v for k, v in summary["pruning"].items() if k != "history"})
        summary["pruning"]["zipped_bytes"] = zipped_size(os.path.join(source_dir, "tf_model.h5"))
        summary["pruning"]["zipped_bytes_before"] = zipped_size(os.path.join(args.model_dir, "tf_model.h5"))
    texts = [ex.text for ex in data.train] if data else []
    path = export_tflite(model, encoder, labels, args.output, quantize=args.quantize, max_length=args.max_length,
                         representative_texts=texts, calibration_examples=args.calibration_examples,
                         source_model=source_dir)
    summary["tflite"] = path
    if data and args.evaluate:
        examples = data.test or data.validation
        reference = Predictor(model, encoder, labels, meta["task"])
        summary["evaluation"] = evaluate_tflite(TFLiteClassifier.from_directory(path), examples,
                                                reference=reference)
    _write_json(os.path.join(os.path.dirname(path), "compression_report.json"), summary)
    shown = json.loads(json.dumps(summary))
    shown.get("pruning", {}).pop("history", None)
    print(json.dumps(shown, indent=2))
    return 0


def cmd_zeroshot(args) -> int:
    from tfpipeline.models.zeroshot import ZeroShotClassifier, parse_verbalizer, sample_shots

    shots = []
    if args.shots_file:
        from tfpipeline.data.readers import read_task_file

        shots = read_task_file(args.shots_file, "classification", **_reader_options(args))
    data = None
    if args.dataset:
        from tfpipeline.data.catalog import load_dataset

        data = load_dataset(args.dataset, seed=args.seed)
        if data.task != "classification":
            raise DataError(f"zero-shot needs a classification dataset; {args.dataset} is {data.task}")
        if args.shots:
            shots += sample_shots(data.train, args.shots, seed=args.seed)
    labels = (args.labels or (list(data.labels) if data else None)
              or sorted({ex.label for ex in shots}))
    if not labels:
        raise DataError("give the candidate labels: --labels 'positive,negative' (or a --shots-file / --dataset)")
    verbalizer = parse_verbalizer(args.verbalizer) if args.verbalizer else None
    method = args.method
    if method == "auto":  # cloze when the checkpoint has an MLM head (and the template is not a similarity one)
        from tfpipeline.models.cloze import has_mlm_head

        cloze_template = args.template is None or "[MASK]" in args.template
        method = "cloze" if cloze_template and has_mlm_head(args.model) else "similarity"
    print(f"[tfpipeline] zero-shot method: {method}", file=sys.stderr)
    if method == "cloze":  # masked-LM prompt + verbalizer (tfpipeline.models.cloze)
        from tfpipeline.models.cloze import DEFAULT_CLOZE_TEMPLATE, ClozeClassifier

        clf = ClozeClassifier.from_checkpoint(labels, args.model, max_length=args.max_length,
                                              template=args.template or DEFAULT_CLOZE_TEMPLATE, verbalizer=verbalizer)
        if shots and args.finetune_epochs:
            clf.finetune(shots, epochs=args.finetune_epochs, learning_rate=args.learning_rate, seed=args.seed)
        elif shots:
            print("[tfpipeline] cloze: shots are used only by prompt fine-tuning (--finetune-epochs N)",
                  file=sys.stderr)
    else:
        from tfpipeline.models.zeroshot import DEFAULT_TEMPLATE

        clf = ZeroShotClassifier.from_checkpoint(labels, args.model, max_length=args.max_length,
                                                 template=args.template or DEFAULT_TEMPLATE, verbalizer=verbalizer)
        if shots and args.finetune_epochs:
            clf.finetune(shots, epochs=args.finetune_epochs, learning_rate=args.learning_rate, seed=args.seed)
        if shots and args.prompt_weight < 1.0:
            clf.fit_prototypes(shots, prompt_weight=args.prompt_weight)
    if args.output_dir:  # a model folder: evaluate / predict / export / serve it like a fine-tuned one
        clf.save(args.output_dir, overwrite=args.overwrite, source_checkpoint=args.model, dataset=args.dataset)
        print(f"[tfpipeline] zero-shot classifier written to {args.output_dir}", file=sys.stderr)
    texts = list(args.texts)
    if args.file:
        from tfpipeline.data.readers import read_text

        texts += [line.strip() for line in read_text(args.file).splitlines() if line.strip()]
    if data:
        examples = data.test[:args.limit] if args.limit else data.test
        report = clf.evaluate(examples)
        mode = ("zero-shot" if not shots else
                f"{len(shots)} shots" + (f", prompt fine-tuned {args.finetune_epochs} epochs"
                                         if args.finetune_epochs else "")
                + (f", prototypes (prompt weight {args.prompt_weight})"
                   if args.prompt_weight < 1.0 and method == "similarity" else ""))
        mode = f"{method}, {mode}"
        print(f"[tfpipeline] {args.dataset} test ({len(examples)} examples), {mode}: "
              f"accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}")
    elif not texts and not args.output_dir:
        raise DataError("nothing to classify: pass texts as arguments, --file, --dataset to evaluate, "
                        "or --output-dir to save the classifier")
    for text, result in zip(texts, clf.classify(texts) if texts else []):
        if args.json:
            print(json.dumps({"text": text, **result}, ensure_ascii=False))
        else:
            print(f"{result['label']}\t{result['score']:.3f}\t{text}")
    return 0


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

    p = sub.add_parser("export", help="export a model folder as a versioned SavedModel for TF Serving")
    p.add_argument("--model-dir", required=True, help="a trained model folder (tfpipeline train output)")
    p.add_argument("--base-dir", required=True, help="model base folder: writes BASE/NAME/VERSION/")
    p.add_argument("--name", required=True, help="model name (the serving URL /v1/models/NAME)")
    p.add_argument("--version", type=int, help="integer version (default: highest existing + 1)")
    p.add_argument("--warmup-file", help="text file, one sample text per line, for the warmup requests")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve every model under a base folder over gRPC and REST (TF Serving API)")
    p.add_argument("--model-base", required=True, help="folder of NAME/VERSION/ exports")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 for all interfaces)")
    p.add_argument("--grpc-port", type=int, default=8500, help="0 = any free port, -1 = off")
    p.add_argument("--rest-port", type=int, default=8501, help="0 = any free port, -1 = off")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-text-bytes", type=int, default=10_000, help="longest accepted text (UTF-8 bytes)")
    p.add_argument("--poll-seconds", type=float, default=5.0, help="how often to look for new versions (0 = never)")
    p.add_argument("--keep-versions", type=int, help="serve only the newest N versions (default: all)")
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="threads one op may use (0 = all cores); 1 lowers batch-1 latency on small CPUs")
    p.add_argument("--inter-op-threads", type=int, default=0, help="ops run at the same time (0 = TF default)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("distill", help="distil a trained model folder into a shallower student model folder")
    p.add_argument("--teacher-dir", required=True, help="a trained model folder (the teacher)")
    p.add_argument("--output-dir", required=True)
    _add_data_options(p)
    p.add_argument("--student-layers", type=int, default=3, help="encoder layers in the student")
    p.add_argument("--student-init", choices=["bottom", "alternate"], default="alternate",
                   help="start from N evenly spaced teacher layers ending at the top (default), or the bottom N")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label loss (1 - alpha: soft)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_distill)

    from tfpipeline.training.continual import ContinualConfig

    p = sub.add_parser("continual", help="fine-tune a trained classifier on a new task without forgetting the old one",
                       description="Continue training a classifier model folder on a new task (rehearsal and/or "
                       "EWC against forgetting). The result has one head over the old + new labels; the table "
                       "shows old-task accuracy before/after (task-aware and open-set) and new-task accuracy.")
    p.add_argument("--model-dir", required=True, help="a trained classification model folder (the old task)")
    p.add_argument("--output-dir", help="where the continual model folder goes (not with --compare)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--compare", type=_str_list, metavar="M1,M2,...",
                   help="run each method from the same start and print one row per method (saves no model)")
    p.add_argument("--json", action="store_true", help="print the report (or comparison) as JSON")
    p.add_argument("--quiet", action="store_true", help="no training progress")
    _add_data_options(p.add_argument_group("new task data (limits, columns and --seed also apply to the old task)"))
    g = p.add_argument_group("old task data (default: the dataset recorded in the model folder)")
    g.add_argument("--old-dataset", help="built-in dataset the model was trained on")
    g.add_argument("--old-train-file", help="old task's labelled CSV/TSV/JSONL (replay and Fisher examples)")
    g.add_argument("--old-validation-file")
    g.add_argument("--old-test-file", help="old task's evaluation file (default: its validation split)")
    add_dataclass_options(p.add_argument_group("continual learning"), ContinualConfig, skip=("seed",))
    p.set_defaults(func=cmd_continual)

    p = sub.add_parser("compress", help="TFLite export (float32 / dynamic / int8), optionally after pruning")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output", required=True, help="output folder (or a path ending in .tflite)")
    p.add_argument("--quantize", choices=["dynamic", "int8", "float32"], default="dynamic")
    p.add_argument("--prune-sparsity", type=float, help="magnitude-prune encoder Dense kernels to this sparsity")
    p.add_argument("--prune-epochs", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=3e-5, help="for the pruning fine-tune")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, help="fixed TFLite sequence length (default: the model's)")
    p.add_argument("--calibration-examples", type=int, default=100, help="int8 representative examples")
    p.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                   help="score the TFLite model (accuracy, agreement with float, latency)")
    _add_data_options(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("zeroshot", help="zero-/few-shot classification: masked-LM cloze prompt or prompt similarity")
    p.add_argument("texts", nargs="*")
    p.add_argument("--labels", type=_str_list, help="candidate labels, comma-separated")
    p.add_argument("--method", choices=["auto", "similarity", "cloze"], default="auto",
                   help="cloze: masked-LM prompt + label words (needs a checkpoint with an MLM head); similarity: "
                        "sentence-embedding similarity to label prompts; auto: cloze if the checkpoint has an MLM head")
    p.add_argument("--template",
                   help="similarity: prompt with {} (or {label}) for the word (default 'This review is {}.'); "
                        "cloze: {text} and one [MASK] (default '{text} It was [MASK].')")
    p.add_argument("--verbalizer", help="label words: 'positive=good,great;negative=bad,awful'")
    p.add_argument("--model", default="minilm", help="checkpoint alias or folder")
    p.add_argument("--shots-file", help="labelled CSV/TSV/JSONL of few-shot examples")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--pair-column")
    p.add_argument("--prompt-weight", type=float, default=0.5,
                   help="similarity with shots: label vector = w * prompt + (1 - w) * prototype (1 = prompts only)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="with shots: prompt fine-tuning epochs")
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--dataset", help="evaluate on this built-in dataset's test split")
    p.add_argument("--shots", type=int, default=0, help="with --dataset: sample N shots per class from train")
    p.add_argument("--limit", type=int, help="with --dataset: first N test examples")
    p.add_argument("--file", help="texts to classify, one per line")
    p.add_argument("--json", action="store_true")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--output-dir", help="save the classifier as a model folder (then evaluate/predict/export it)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_zeroshot)
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
