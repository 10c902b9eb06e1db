"""The fine-tuning menu: full fine-tuning vs LoRA vs adapters vs a distilled student vs int8 TFLite
(and prompt-based zero/few-shot where a prompt is defined), on real built-in datasets.

For each dataset (train/validation/test slices, flags below) it reports, per method:
accuracy and macro-F1 on the same test slice, trainable parameters, training
time, size on disk (and the per-task artefact: PEFT weights for LoRA/adapters),
and inference latency per example at batch 1.

* full / lora / adapter: ``train(..., peft=...)`` from the MiniLM checkpoint.
* distilled: the full model as teacher -> ``--student-layers`` student started
  from ``--student-init`` teacher layers (train time excludes the teacher's
  own training).
* tflite_int8: dynamic-range int8 TFLite of the full model; "train" time is
  the conversion; its latency is at the fixed ``--max-length`` (the Keras
  rows run each text at its own length, which favours them).
* zeroshot / fewshot: MiniLM sentence-embedding similarity to label prompts
  (0 trainable parameters), and prompt fine-tuning on ``--shots`` per class.

Latencies are medians at batch 1 over ``--latency-examples`` test texts with
``--threads`` TF/TFLite threads; the machine is shared, so compare rows of one
run, not runs. Prints each method's ratios against ``full`` (accuracy, macro-F1,
train_s, latency_ms, trainable_params, size_mb, task_artifact_mb; > 1 = better than full) and writes
bench/results/fine_tuning_menu.{json,md} (the JSON with a ``ratios`` list) and
fine_tuning_menu.png (the ratio plot; needs matplotlib).

    python bench/fine_tuning_menu.py                      # defaults: ~15 min on 2 shared CPU cores
    python bench/fine_tuning_menu.py --train 64 --eval 32 --test 32 --epochs 1 --latency-examples 8  # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from typing import Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

import tfpipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfpipeline.data.catalog import load_dataset  # noqa: E402
from tfpipeline.data.examples import TaskData  # noqa: E402

# Label prompts for the zero/few-shot rows (datasets without one skip those rows).
PROMPTS = {
    "rotten_tomatoes": ("This review is {}.", {"positive": ["positive", "good", "great"],
                                               "negative": ["negative", "bad", "terrible"]}),
    "tweet_sentiment": ("This tweet is {}.", {"positive": ["positive", "happy"], "negative": ["negative", "sad"],
                                              "neutral": ["neutral", "factual"]}),
    "bbc_topics": ("This article is about {}.", {"business": ["business", "economy"],
                                                 "entertainment": ["entertainment", "film and music"],
                                                 "politics": ["politics"], "sport": ["sport"],
                                                 "tech": ["technology"]}),
}
METHODS = ("full", "lora", "adapter", "distilled", "tflite_int8", "zeroshot", "fewshot")
# Per-dataset settings where the shared defaults underfit (measured), used unless given on the command line:
# at lr 1e-4 / 2 epochs full fine-tuning on 1,000 ATIS queries predicted little but the majority intent
# (macro-F1 0.11).
DATASET_SETTINGS = {"atis_intent": {"lr": 2e-4, "epochs": 5}}
DEFAULTS = {"lr": 1e-4, "epochs": 2}
# (metric, higher is better) of the ratio rows, every method against ``full``.
RATIO_METRICS = (("accuracy", True), ("macro_f1", True), ("train_s", False), ("latency_ms", False),
                 ("trainable_params", False), ("size_mb", False), ("task_artifact_mb", False))


def slice_data(name: str, n_train: int, n_eval: int, n_test: int, seed: int) -> TaskData:
    """Seeded random slices (the test slice is sampled, not the head of the file)."""
    data = load_dataset(name, seed=seed)
    rng = random.Random(seed)
    test = data.test or data.validation
    return TaskData(data.name, data.task, data.train[:n_train], data.validation[:n_eval],
                    rng.sample(list(test), min(n_test, len(test))), list(data.labels), data.description)


def folder_mb(path: str, names=("tf_model.h5", "peft_weights.npz", "model.tflite")) -> float:
    return sum(os.path.getsize(os.path.join(path, n)) for n in names if os.path.isfile(os.path.join(path, n))) / 1e6


def keras_latency_ms(model, encoder, texts: List[str]) -> float:
    """Median ms per example at batch 1, each text at its own length (as a Keras server would)."""
    spec = {k: tf.TensorSpec([1, None], tf.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    run = tf.function(lambda f: model(f, training=False), input_signature=[spec])
    inputs = [encoder.pad(encoder.encode(tf.constant([t]))) for t in texts]
    for f in inputs[:3]:
        run(f)
    times = []
    for f in inputs:
        started = time.perf_counter()
        run(f).numpy()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def row(method: str, report: Dict, **extra) -> Dict:
    return {"method": method, "accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4),
            **extra}


def run_dataset(name: str, args, say: Callable) -> List[Dict]:
    from tfpipeline.config import DistillConfig
    from tfpipeline.evaluation.tflite import evaluate_tflite
    from tfpipeline.export.tflite import TFLiteClassifier, export_tflite
    from tfpipeline.training.distill import distill
    from tfpipeline.training.trainer import train

    data = slice_data(name, args.train, args.eval, args.test, args.seed)
    work = os.path.join(args.work_dir, name)
    shutil.rmtree(work, ignore_errors=True)
    latency_texts = [ex.text for ex in data.test[:args.latency_examples]]
    common = dict(data=data, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                  max_length=args.max_length, verbose=0, overwrite=True, early_stopping_patience=0, seed=args.seed)
    say(f"== {name}: train {len(data.train)} / validation {len(data.validation)} / test {len(data.test)}, "
        f"{len(data.labels)} labels")
    rows, full = [], None
    for method in [m for m in args.methods if m in ("full", "lora", "adapter")]:
        peft = None if method == "full" else method
        lr = args.lr if method == "full" else args.peft_lr
        started = time.perf_counter()
        result = train(output_dir=os.path.join(work, method), peft=peft, learning_rate=lr, **common)
        out = result.output_dir
        rows.append(row(method, result.report, trainable_params=result.params["trainable"],
                        train_s=round(result.train_seconds, 1),
                        size_mb=round(folder_mb(out), 1),
                        task_artifact_mb=round(folder_mb(out, ("peft_weights.npz",)) if peft else folder_mb(out), 2),
                        latency_ms=round(keras_latency_ms(result.bundle.model, result.bundle.encoder,
                                                          latency_texts), 2)))
        say(f"   {method}: {rows[-1]} ({time.perf_counter() - started:.0f}s)")
        if method == "full":
            full = result
    if full is None and any(m in args.methods for m in ("distilled", "tflite_int8")):
        raise SystemExit("distilled and tflite_int8 need the full model: keep 'full' in --methods")

    if "distilled" in args.methods:
        started = time.perf_counter()
        student = distill(DistillConfig(teacher_dir=full.output_dir, output_dir=os.path.join(work, "distilled"),
                                        student_layers=args.student_layers, student_init=args.student_init,
                                        epochs=args.epochs, learning_rate=args.distill_lr,
                                        batch_size=args.batch_size, seed=args.seed, overwrite=True, quiet=True),
                          data=data)
        rows.append(row(f"distilled_{args.student_layers}l", student.report,
                        trainable_params=student.params["trainable"], train_s=round(student.train_seconds, 1),
                        size_mb=round(folder_mb(student.output_dir), 1),
                        task_artifact_mb=round(folder_mb(student.output_dir), 2),
                        latency_ms=round(keras_latency_ms(student.bundle.model, student.bundle.encoder,
                                                          latency_texts), 2)))
        say(f"   distilled: {rows[-1]} ({time.perf_counter() - started:.0f}s)")

    if "tflite_int8" in args.methods:
        started = time.perf_counter()
        path = export_tflite(full.bundle.model, full.bundle.encoder, full.bundle.labels,
                             os.path.join(work, "tflite_int8"), quantize="dynamic", max_length=args.max_length)
        convert_s = time.perf_counter() - started
        classifier = TFLiteClassifier.from_directory(path, num_threads=args.threads)
        result = evaluate_tflite(classifier, data.test, reference=full.bundle.predictor())
        classifier.class_probabilities(latency_texts)
        rows.append({"method": "tflite_int8_dynamic", "accuracy": round(result["accuracy"], 4),
                     "macro_f1": round(result["macro_f1"], 4), "trainable_params": 0,
                     "train_s": round(convert_s, 1), "size_mb": round(result["size_bytes"] / 1e6, 1),
                     "task_artifact_mb": round(result["size_bytes"] / 1e6, 2),
                     "latency_ms": round(float(np.median(classifier.last_latencies_ms)), 2),
                     "agreement_with_float": round(result["agreement"], 4)})
        say(f"   tflite: {rows[-1]} ({time.perf_counter() - started:.0f}s)")

    if name in PROMPTS and any(m in args.methods for m in ("zeroshot", "fewshot")):
        rows += zero_few_shot_rows(name, data, args, latency_texts, say)
    if args.continual_to and full is not None:
        args.continual_results[f"{name}->{args.continual_to}"] = continual_rows(full.output_dir, data, args, say)
    return rows


def continual_rows(model_dir: str, old: TaskData, args, say) -> Dict:
    """Fine-tune the full model on ``--continual-to``: old-task accuracy with/without rehearsal and EWC."""
    from tfpipeline.training.continual import compare_methods

    new = slice_data(args.continual_to, args.train, args.eval, args.test, args.seed)
    started = time.perf_counter()
    result = compare_methods(model_dir, new, old, methods=("none", "rehearsal", "ewc"), epochs=args.epochs,
                             learning_rate=args.lr, batch_size=args.batch_size, replay_fraction=0.2,
                             ewc_lambda=args.ewc_lambda, seed=args.seed)
    say(f"   continual -> {args.continual_to}: {result} ({time.perf_counter() - started:.0f}s)")
    return result


def zero_few_shot_rows(name: str, data: TaskData, args, latency_texts, say) -> List[Dict]:
    from tfpipeline.training.prompting import ZeroShotClassifier, sample_shots

    template, verbalizer = PROMPTS[name]
    clf = ZeroShotClassifier.from_checkpoint(data.labels, args.model, max_length=args.max_length,
                                             template=template, verbalizer=verbalizer)

    inputs = [clf.encoder.features([t]) for t in latency_texts]  # tokenized up front, as for the other rows

    def latency() -> float:
        times = []
        for f in inputs[:3] + inputs:
            started = time.perf_counter()
            (clf.encoder._embed(f).numpy() @ clf.label_vectors.T).argmax()
            times.append((time.perf_counter() - started) * 1000)
        return round(float(np.median(times[3:])), 2)

    rows = []
    if "zeroshot" in args.methods:
        rows.append(row("zeroshot_prompt", clf.evaluate(data.test), trainable_params=0, train_s=0.0,
                        size_mb=None, task_artifact_mb=0.0, latency_ms=latency()))
        say(f"   zeroshot: {rows[-1]}")
    if "fewshot" in args.methods:
        shots = sample_shots(data.train, args.shots, seed=args.seed)
        started = time.perf_counter()
        clf.fit_prototypes(shots, prompt_weight=0.5)
        rows.append(row(f"fewshot_{args.shots}_prototypes", clf.evaluate(data.test), trainable_params=0,
                        train_s=round(time.perf_counter() - started, 1), size_mb=None, task_artifact_mb=0.0,
                        latency_ms=latency()))
        say(f"   fewshot prototypes: {rows[-1]}")
        clf.fit_prototypes([], prompt_weight=1.0)
        clf.finetune(shots, epochs=args.fewshot_epochs, learning_rate=args.fewshot_lr, seed=args.seed)
        params = int(sum(int(np.prod(w.shape)) for w in clf.encoder.main.trainable_weights))
        rows.append(row(f"fewshot_{args.shots}_prompt_finetuned", clf.evaluate(data.test), trainable_params=params,
                        train_s=round(clf.train_seconds, 1), size_mb=None, task_artifact_mb=None,
                        latency_ms=latency()))
        say(f"   fewshot fine-tuned: {rows[-1]}")
    return rows


def ratio_rows(datasets: Dict[str, List[Dict]]) -> List[Dict]:
    """Per dataset and metric, every method against ``full`` (the first method if full was not run).

    Values that have no finite ratio are left out: None (no size on disk for the prompt rows) and 0
    where lower is better (0 s training, 0 trainable parameters); a metric whose baseline value is
    missing or 0 is left out entirely.
    """
    rows: List[Dict] = []
    for name, table in datasets.items():
        if not table:
            continue
        base = "full" if any(r["method"] == "full" for r in table) else table[0]["method"]
        for metric, higher in RATIO_METRICS:
            values = {r["method"]: r[metric] for r in table
                      if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)
                      and np.isfinite(r[metric]) and (higher or r[metric] > 0)}
            if values.get(base) and len(values) > 1:
                rows += benchlib.ratio_rows(name, metric, values, base, higher_is_better=higher)
    return rows


def markdown(results: Dict) -> str:
    cols = ["method", "accuracy", "macro_f1", "trainable_params", "train_s", "size_mb", "task_artifact_mb",
            "latency_ms"]
    lines = [f"# Fine-tuning menu ({results['settings']['model']})", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in results["settings"].items()), ""]
    for name, rows in results["datasets"].items():
        lines += [f"## {name}", ""]
        if results.get("dataset_settings", {}).get(name):
            lines += ["Settings for this dataset: " + ", ".join(f"{k}={v}" for k, v in
                                                              results["dataset_settings"][name].items()), ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = []
            for c in cols:
                v = r.get(c)
                cells.append("-" if v is None else f"{v:,}" if isinstance(v, int) else str(v))
            lines.append("| " + " | ".join(cells) + " |")
        extra = [r for r in rows if "agreement_with_float" in r]
        if extra:
            lines += ["", f"TFLite int8 (dynamic range) agrees with the float model on "
                          f"{extra[0]['agreement_with_float']:.1%} of test examples; its latency is at the fixed "
                          f"max_length, Keras rows at each text's own length."]
        lines.append("")
    for pair, methods in results.get("continual", {}).items():
        lines += [f"## Continual learning {pair}", "",
                  "| method | old task before | old task after | old after (open set) | new task after | train_s |",
                  "|---|---|---|---|---|---|"]
        for method, r in methods.items():
            lines.append(f"| {method} | {r['old_before']:.4f} | {r['old_after']:.4f} | {r['old_after_open_set']:.4f} "
                         f"| {r['new_after']:.4f} | {r['train_seconds']} |")
        lines += ["", "Old task scored task-aware (argmax over its own labels) and open-set (over all labels).", ""]
    lines += ["Train time of the distilled student excludes the teacher's training; TFLite 'train' time is the "
              "conversion. size_mb = deployable weights on disk, task_artifact_mb = what each extra task stores "
              "(PEFT weights only for LoRA/adapters). Latency: median ms per example, batch 1, "
              f"{results['settings']['threads']} thread(s), shared machine: compare rows within a run."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="rotten_tomatoes,atis_intent")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train", type=int, default=1000, help="training examples per dataset")
    parser.add_argument("--eval", type=int, default=200, help="validation examples")
    parser.add_argument("--test", type=int, default=300, help="test examples (seeded sample)")
    parser.add_argument("--epochs", type=int, help=f"default {DEFAULTS['epochs']} (see DATASET_SETTINGS)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, help=f"full fine-tuning learning rate (default {DEFAULTS['lr']:g}; "
                        "see DATASET_SETTINGS)")
    parser.add_argument("--peft-lr", type=float, default=1e-3, help="LoRA / adapter learning rate")
    parser.add_argument("--distill-lr", type=float, default=1e-4)
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--student-init", choices=["alternate", "bottom"], default="alternate",
                        help="teacher layers the student starts from (see tfpipeline.training.distill)")
    parser.add_argument("--shots", type=int, default=16, help="few-shot examples per class")
    parser.add_argument("--fewshot-epochs", type=int, default=8)
    parser.add_argument("--fewshot-lr", type=float, default=5e-5)
    parser.add_argument("--continual-to", help="also fine-tune each full model on this dataset (continual "
                        "learning: none vs rehearsal vs EWC), e.g. tweet_sentiment")
    parser.add_argument("--ewc-lambda", type=float, default=1.0)
    parser.add_argument("--latency-examples", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="TF intra/inter-op and TFLite threads")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--work-dir", default="runs/fine_tuning_menu", help="model folders are written here")
    parser.add_argument("--out", default="bench/results/fine_tuning_menu", help="writes OUT.json, OUT.md and OUT.png")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    def say(*a):
        print(*a, flush=True)

    explicit = {k for k in DEFAULTS if getattr(args, k) is not None}
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    started = time.perf_counter()
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work_dir", "continual_results")}
    results = {"settings": settings, "machine": {"python": sys.version.split()[0], "tensorflow": tf.__version__,
                                                 "platform": platform.platform(), "cpus": os.cpu_count()},
               "datasets": {}}
    args.continual_results = {}
    results["dataset_settings"] = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        overrides = {k: v for k, v in DATASET_SETTINGS.get(name, {}).items() if k not in explicit}
        if overrides:
            results["dataset_settings"][name] = overrides
        results["datasets"][name] = run_dataset(name, argparse.Namespace(**{**vars(args), **overrides}), say)
    if args.continual_results:
        results["continual"] = args.continual_results
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    rows = ratio_rows(results["datasets"])
    results["ratios"] = rows
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    table = markdown(results)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(table)
    print(table)
    benchlib.print_ratio_table(rows, title=f"fine-tuning menu ({args.model}): every method vs full "
                                           f"(lower is better for train_s, latency_ms, trainable_params, size_mb)")
    plot = benchlib.plot_ratios(rows, args.out + ".png", f"fine-tuning menu ({args.model}, "
                                f"{args.train} train examples, {args.epochs} epoch(s)): vs full fine-tuning")
    say(f"[bench] {results['total_seconds']:.0f}s in all; wrote {args.out}.json and {args.out}.md"
        + (f" and {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
