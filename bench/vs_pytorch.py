"""tfpipeline vs a plain Hugging Face PyTorch loop (and ONNX Runtime), side by side in one process.

Same data (a Rotten Tomatoes slice), same MiniLM-L6 safetensors, same batch
size, epochs, learning-rate schedule and thread count; tfpipeline = 1.0.

(a) training: examples/s of tfpipeline's Keras ``fit`` on its bucketed
    tf.data pipeline vs a PyTorch loop with ``DataCollatorWithPadding``;
    epochs alternate between the two (ABBA order) so machine load hits both;
    then test accuracy of both fine-tuned models on the same examples.
(b) inference at batch 1 and 32: the tfpipeline SavedModel (``predict_ids``
    and raw-text ``serving_default``) vs PyTorch eager vs ONNX Runtime (the
    fine-tuned PyTorch model exported with ``torch.onnx.export``); calls are
    interleaved in small blocks. Text-level rows include each side's own
    tokenizer (in-graph tf-text vs HF fast tokenizer).

    python bench/vs_pytorch.py [--train-examples 2000] [--epochs 2] [--eval-examples 500]
    python bench/vs_pytorch.py --threads 1      # on a busy machine: torch's OpenMP pool stalls
                                                # when another job holds one of its cores
    python bench/vs_pytorch.py --skip-training --optimize none compact compact+xla   # (b) only, untrained heads
    python bench/vs_pytorch.py --readme README.md --from-json t1.json t2.json   # README engine table from runs

The SavedModel rows come once per ``--optimize`` setting (default: all three;
``none`` is the 1.0 baseline). Without PyTorch installed, (a) and the
PyTorch/ONNX rows are skipped and only the TensorFlow engines are timed.

Accuracy after a few dozen steps (run_all's sizes) is noise; compare it at
the defaults or larger.

Writes bench/results/vs_pytorch.json and vs_pytorch.png. The comparison needs
torch, onnx, onnxruntime, matplotlib (see docs/benchmarks.md for the pins).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfpipeline  # noqa: E402,F401  (environment for TF/transformers before they load)

import numpy as np  # noqa: E402

import benchlib  # noqa: E402

TF_TRAIN = "tfpipeline (Keras fit, bucketed)"
PT_TRAIN = "PyTorch (HF loop, dynamic pad)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="rotten_tomatoes")
    p.add_argument("--model", default="minilm", help="alias or local HF folder (safetensors or tf_model.h5)")
    p.add_argument("--train-examples", type=int, default=2000)
    p.add_argument("--eval-examples", type=int, default=500, help="test-split examples scored by both models")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--threads", type=int, default=0, help="threads for TF, torch and ORT (0 = all cores)")
    p.add_argument("--requests", type=int, default=100, help="timed batch-1 calls per engine")
    p.add_argument("--batches", type=int, default=10, help="timed batch-32 calls per engine")
    p.add_argument("--skip-onnx", action="store_true")
    p.add_argument("--skip-training", action="store_true",
                   help="inference only (part b) on the checkpoint with an untrained head; implied without torch")
    p.add_argument("--optimize", nargs="+", default=["none", "compact", "compact+xla"],
                   choices=["none", "compact", "compact+xla", "compact+bf16", "compact+tflite"],
                   help="SavedModel export optimisations to time (none = the baseline, always included)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--out", default="bench/results/vs_pytorch.json")
    p.add_argument("--readme", help="with --from-json: replace this README's serving-engines block")
    p.add_argument("--from-json", nargs="+", help="result files of earlier runs (one per --threads) for --readme")
    return p.parse_args(argv)


README_START, README_END = "<!-- serving-engines:start -->", "<!-- serving-engines:end -->"


def engine_label(name: str, versions: dict) -> str:
    """README row name of a raw-text engine of part (b)."""
    from tf_engines import SAVED_MODEL

    if name == f"{SAVED_MODEL} text":
        return "SavedModel, `--optimize none` (the Keras graph)"
    if name.startswith("SavedModel "):
        optimize = name.split()[1]
        if optimize == "compact+tflite":
            return "`compact+tflite`, its model.tflite (`--prefer-tflite-model`)"
        return f"SavedModel, `{optimize}`" + (" (**the default**)" if optimize == "compact" else "")
    for engine, package in (("PyTorch", "torch"), ("ONNX Runtime", "onnxruntime")):
        if engine in name:
            return f"{name.replace(' eager', '')} {(versions.get(package) or '').split('+')[0]}".strip()
    return name


def readme_engine_table(results: list) -> list:
    """Markdown lines: raw-text batch-1 p50 and batch-32 throughput per engine, one column pair per run."""
    from inference_compare import PREDICTOR

    results = sorted(results, key=lambda r: r["threads"])
    names = [n for n in results[0]["inference"]["text_batch1"] if n != PREDICTOR]
    head = [f"batch 1 p50 ms, {r['threads']} thread{'s' if r['threads'] > 1 else ''}" for r in results] + \
           [f"batch 32 ex/s, {r['threads']} thread{'s' if r['threads'] > 1 else ''}" for r in results]
    lines = ["| engine | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for name in names:
        cells = [f"{r['inference']['text_batch1'][name]['wall']['p50_ms']:.2f}" for r in results]
        cells += [f"{32000.0 / r['inference']['text_batch32'][name]['wall']['p50_ms']:.1f}" for r in results]
        lines.append(f"| {engine_label(name, results[0].get('versions', {}))} | " + " | ".join(cells) + " |")
    return lines


def write_readme(readme: str, paths: list) -> int:
    import datetime
    import json
    import textwrap

    results = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            results.append(json.load(f))
    config = results[0]["config"]
    when = datetime.datetime.fromtimestamp(os.path.getmtime(paths[0])).strftime("%Y-%m-%d")
    loads = ", ".join(f"{r['machine'].get('loadavg_1_5_15', ['?'])[0]:.1f}" for r in results)
    header = (f"`python bench/vs_pytorch.py --skip-training --threads T --requests {config['requests']} --batches "
              f"{config['batches']} --optimize {' '.join(config['optimize'])}` for T = "
              f"{' and '.join(str(r['threads']) for r in sorted(results, key=lambda r: r['threads']))}, one after the "
              f"other, {when} (1-minute load average at start: {loads}); MiniLM-L6 (random head), "
              f"{config['dataset']} test sentences, max length {config['max_length']}; raw text in (each engine with "
              f"its own tokenizer: tf-text in the graph, HF fast tokenizer for PyTorch / ONNX Runtime). Every row of "
              f"a column comes from the same process, interleaved:")
    benchlib.replace_readme_block(readme, README_START, README_END,
                                  [textwrap.fill(header, 115), "", *readme_engine_table(results)])
    print(f"{readme}: serving-engines table written from {', '.join(paths)}")
    return 0


def parity(tf_model, pt_model, encoder, tokenizer, texts, max_length: int) -> dict:
    """Same starting point? Backbone outputs on identical ids, and how often the two tokenizers agree."""
    import tensorflow as tf
    import torch

    features = encoder.pad(encoder.encode(tf.constant(list(texts[:8]))))
    tf_hidden = tf_model.backbone.bert(features, training=False).last_hidden_state.numpy()
    with torch.inference_mode():
        pt_hidden = pt_model.bert(**{k: torch.from_numpy(v.numpy()).long() for k, v in features.items()}
                                  ).last_hidden_state.numpy()
    ours = encoder.encode(tf.constant(list(texts)))["input_ids"].to_list()
    theirs = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    same = sum(list(a) == list(b) for a, b in zip(ours, theirs))
    return {"backbone_max_abs_diff": float(np.abs(tf_hidden - pt_hidden).max()),
            "tokenizer_identical_share": same / max(len(texts), 1)}


def run_training(args, tf_model, train_ds, pt_model, loader, optimizer, scheduler, n_train: int) -> dict:
    """Alternate epochs A B B A ...; returns per-epoch wall/CPU seconds, loss and padding per engine."""
    from torch_baseline import train_epoch

    from tfpipeline.data.pipeline import padding_fraction

    epochs = {TF_TRAIN: [], PT_TRAIN: []}
    tf_padding = padding_fraction(train_ds)

    def tf_epoch(e):
        with benchlib.Stopwatch() as sw:
            history = tf_model.fit(train_ds, epochs=e + 1, initial_epoch=e, verbose=0)
        return {"wall_s": sw.wall, "cpu_s": sw.cpu, "loss": float(history.history["loss"][-1]),
                "padding_fraction": tf_padding}

    def pt_epoch(e):
        with benchlib.Stopwatch() as sw:
            stats = train_epoch(pt_model, loader, optimizer, scheduler)
        return {"wall_s": sw.wall, "cpu_s": sw.cpu, "loss": stats["loss"],
                "padding_fraction": stats["padding_fraction"]}

    for e in range(args.epochs):
        order = [(TF_TRAIN, tf_epoch), (PT_TRAIN, pt_epoch)]
        for name, run in (order if e % 2 == 0 else order[::-1]):
            result = run(e)
            epochs[name].append(result)
            print(f"  epoch {e + 1} {name:<34} {n_train / result['wall_s']:7.1f} ex/s  loss {result['loss']:.4f}",
                  flush=True)
    summary = {}
    for name, rows in epochs.items():
        wall, cpu = sum(r["wall_s"] for r in rows), sum(r["cpu_s"] for r in rows)
        summary[name] = {"epochs": rows, "examples_per_s": n_train * len(rows) / wall,
                         "last_epoch_examples_per_s": n_train / rows[-1]["wall_s"],
                         "cpu_ms_per_example": 1000.0 * cpu / (n_train * len(rows)),
                         "padding_fraction": rows[-1]["padding_fraction"]}
    return summary


def training_ratios(summary: dict, accuracy: dict, epochs: int) -> list:
    rows = []
    pick = lambda key: {name: s[key] for name, s in summary.items()}  # noqa: E731
    rows += benchlib.ratio_rows("training", "examples/s (all epochs)", pick("examples_per_s"), TF_TRAIN,
                                higher_is_better=True)
    if epochs > 1:
        rows += benchlib.ratio_rows("training", "examples/s (last epoch)", pick("last_epoch_examples_per_s"),
                                    TF_TRAIN, higher_is_better=True)
    rows += benchlib.ratio_rows("training", "CPU ms / example", pick("cpu_ms_per_example"), TF_TRAIN,
                                higher_is_better=False)
    rows += benchlib.ratio_rows("training", "test accuracy", accuracy, TF_TRAIN, higher_is_better=True)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        if not args.readme:
            raise SystemExit("--from-json needs --readme")
        return write_readme(args.readme, args.from_json)
    threads = args.threads or benchlib.cpu_count()
    benchlib.configure_tf_threads(threads)
    try:
        import torch
    except ImportError:
        torch = None
        args.skip_training = True
        print("PyTorch is not installed: timing the TensorFlow engines only, no training (for the comparison: "
              "pip install torch==2.13.0 onnx onnxruntime matplotlib, CPU wheel; see docs/benchmarks.md)",
              file=sys.stderr)
    if torch is not None:
        torch.set_num_threads(threads)

    import tensorflow as tf
    import tf_keras

    import torch_baseline as tb
    from tfpipeline.data.catalog import load_dataset
    from tfpipeline.data.labels import LabelMap
    from tfpipeline.data.pipeline import make_dataset
    from tfpipeline.data.tokenization import TextEncoder
    from tfpipeline.inference import Predictor
    from tfpipeline.models.checkpoint import resolve_checkpoint
    from tfpipeline.models.task_model import build_task_model
    from tfpipeline.bundle import ModelBundle

    data = load_dataset(args.dataset, seed=args.seed)
    if data.task != "classification":
        raise SystemExit(f"{args.dataset} is a {data.task} dataset; vs_pytorch compares sentence classifiers")
    train, test = data.train[:args.train_examples], data.test[:args.eval_examples]
    labels = LabelMap(data.labels)
    label_ids = [labels.id(ex.label) for ex in train]
    checkpoint = resolve_checkpoint(args.model)
    if args.skip_training:
        return inference_only(args, data, test, labels, checkpoint, threads, torch is not None)
    print(f"{args.dataset}: train {len(train)}, test {len(test)}; {args.epochs} epoch(s), batch {args.batch_size}, "
          f"max_length {args.max_length}, {threads} threads (TF intra/inter, torch, ORT); "
          f"load average {benchlib.machine_info().get('loadavg_1_5_15')}", flush=True)

    # ---- both models from the same checkpoint, same recipe
    encoder = TextEncoder.from_directory(checkpoint, max_length=args.max_length)
    tf_keras.utils.set_random_seed(args.seed)
    train_ds = make_dataset(train, encoder, labels, data.task, batch_size=args.batch_size, training=True,
                            seed=args.seed)
    tf_steps = sum(1 for _ in train_ds)                        # also fills the tokenized cache
    tf_model = ModelBundle(build_task_model(checkpoint, data.task, labels), encoder, labels, data.task).compile(
        learning_rate=args.learning_rate, total_steps=args.epochs * tf_steps).model

    tokenizer = tb.load_tokenizer(checkpoint, args.max_length)
    loader = tb.training_loader(tokenizer, [ex.text for ex in train], label_ids, batch_size=args.batch_size,
                                max_length=args.max_length, seed=args.seed)
    pt_model = tb.load_model(checkpoint, labels.names, seed=args.seed)
    optimizer, scheduler = tb.make_optimizer(pt_model, learning_rate=args.learning_rate,
                                             total_steps=args.epochs * len(loader))
    check = parity(tf_model, pt_model, encoder, tokenizer, [ex.text for ex in test], args.max_length)
    print(f"parity: backbone max |diff| {check['backbone_max_abs_diff']:.2e} on identical ids; "
          f"tokenizers agree on {check['tokenizer_identical_share']:.1%} of test texts", flush=True)

    # ---- (a) training + accuracy
    print("training (epochs alternate between the two):", flush=True)
    training = run_training(args, tf_model, train_ds, pt_model, loader, optimizer, scheduler, len(train))
    gold = np.array([labels.id(ex.label) for ex in test])
    texts = [ex.text for ex in test]
    predictor = Predictor(tf_model, encoder, labels, data.task, batch_size=64)
    accuracy = {
        TF_TRAIN: float((predictor.class_probabilities(texts).argmax(1) == gold).mean()),
        PT_TRAIN: float((tb.predict_labels(pt_model, tokenizer, texts, max_length=args.max_length) == gold).mean()),
    }
    rows = training_ratios(training, accuracy, args.epochs)
    result = {"benchmark": "vs_pytorch", "config": vars(args), "threads": threads,
              "machine": benchlib.machine_info(), "versions": versions(), "parity": check,
              "training": training, "accuracy": accuracy, "tf_steps_per_epoch": tf_steps,
              "torch_steps_per_epoch": len(loader), "ratios": rows, "complete": False}
    benchlib.write_json(args.out, result)                    # training results survive a timeout in (b)

    # ---- (b) inference
    from inference_compare import compare_inference

    with tempfile.TemporaryDirectory(prefix="vs_pytorch_") as tmp:
        inference, inference_rows = compare_inference(
            args, tf_model=tf_model, encoder=encoder, labels=labels, task=data.task, predictor=predictor,
            pt_model=pt_model, tokenizer=tokenizer, texts=texts, threads=threads, tmp=tmp)
    rows += inference_rows

    print()
    table = benchlib.print_ratio_table(rows, title=f"tfpipeline = 1.0 baseline ({threads} threads, shared "
                                                     f"machine: read ratios, not absolute numbers)")
    result.update(machine_end=benchlib.machine_info(), inference=inference, ratios=rows, table=table, complete=True)
    benchlib.write_json(args.out, result)
    plot = benchlib.plot_ratios(rows, os.path.splitext(args.out)[0] + ".png",
                                f"tfpipeline vs PyTorch / ONNX Runtime ({args.dataset}, {threads} CPU threads)")
    print(f"results written to {args.out}" + (f" and {plot}" if plot else ""))
    return 0


def inference_only(args, data, test, labels, checkpoint: str, threads: int, with_torch: bool) -> int:
    """Part (b) alone on the checkpoint with an untrained head (timings do not depend on the head's values)."""
    import torch_baseline as tb
    from inference_compare import compare_inference
    from tfpipeline.data.tokenization import TextEncoder
    from tfpipeline.inference import Predictor
    from tfpipeline.models.task_model import build_task_model

    encoder = TextEncoder.from_directory(checkpoint, max_length=args.max_length)
    tf_model = build_task_model(checkpoint, data.task, labels)
    pt_model = tb.load_model(checkpoint, labels.names, seed=args.seed) if with_torch else None
    tokenizer = tb.load_tokenizer(checkpoint, args.max_length) if with_torch else None
    texts = [ex.text for ex in test]
    predictor = Predictor(tf_model, encoder, labels, data.task, batch_size=64)
    print(f"{args.dataset}: inference only on {len(texts)} test texts, max_length {args.max_length}, {threads} "
          f"threads; SavedModel exports: {', '.join(args.optimize)}" + ("" if with_torch else "; TensorFlow only"),
          flush=True)
    with tempfile.TemporaryDirectory(prefix="vs_pytorch_") as tmp:
        inference, rows = compare_inference(args, tf_model=tf_model, encoder=encoder, labels=labels, task=data.task,
                                            predictor=predictor, pt_model=pt_model, tokenizer=tokenizer,
                                            texts=texts, threads=threads, tmp=tmp)
    print()
    table = benchlib.print_ratio_table(rows, title=f"tfpipeline SavedModel = 1.0 baseline ({threads} threads)")
    benchlib.write_json(args.out, {"benchmark": "vs_pytorch", "config": vars(args), "threads": threads,
                                   "inference_only": True, "machine": benchlib.machine_info(),
                                   "versions": versions(), "inference": inference, "ratios": rows, "table": table,
                                   "complete": True})
    print(f"results written to {args.out}")
    return 0


def versions() -> dict:
    out = {}
    for name in ("tensorflow", "tf_keras", "tensorflow_text", "transformers", "torch", "onnx", "onnxruntime"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
