"""Input-pipeline benchmark: padding waste with/without bucketing, pipeline vs model-step throughput.

All numbers come from one process run on the same data and machine, and are
printed as ratios against the baseline in that run:

* padding: share of padded positions for static padding to max_length
  (the TPU mode, baseline), pad-to-batch-max, and length bucketing;
* throughput: examples/s of the tf.data pipeline alone vs one training step
  of the model; the pipeline must be far faster than the model (ratio >> 1);
* fit epoch overhead: idle seconds between a Keras ``fit`` epoch's last step and
  ``fit`` returning, with tf.data's autotuner on (TF's default) vs make_dataset
  (autotuner off; see ``tfpipeline.data.pipeline.without_autotune``).

Prints the ratio table and writes bench/results/input_pipeline.json (with a
``ratios`` list) and input_pipeline.png next to it (the plot needs matplotlib).

    python bench/input_pipeline.py [--dataset rotten_tomatoes] [--model minilm] [--steps 10]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

import tfpipeline  # noqa: E402,F401

import tensorflow as tf  # noqa: E402

from tfpipeline.data.catalog import load_dataset
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import make_dataset, padding_fraction
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.models.checkpoint import resolve_checkpoint
from tfpipeline.models.task_model import build_task_model
from tfpipeline.bundle import ModelBundle


def examples_per_second(dataset, max_batches=None) -> float:
    count, started = 0, time.perf_counter()
    for i, (features, _) in enumerate(dataset):
        count += int(features["input_ids"].shape[0])
        if max_batches and i + 1 >= max_batches:
            break
    return count / (time.perf_counter() - started)


def fit_epoch_overhead(dataset, *, fits: int, step_s: float) -> float:
    """Median seconds between the end of a Keras ``fit`` epoch and ``fit`` returning.

    A tiny model plus a ``step_s`` pause per batch stands in for a BERT step, so this measures the
    pipeline's teardown (the iterator and what tf.data runs beside it), not the model.
    """
    import tf_keras

    inputs = {k: tf_keras.Input((None,), dtype=tf.int32, name=k) for k in dataset.element_spec[0]}
    pooled = tf_keras.layers.GlobalAveragePooling1D()(tf_keras.layers.Embedding(30522, 8)(inputs["input_ids"]))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(pooled))
    model.compile("sgd", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class EpochEnd(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(step_s)

        def on_epoch_end(self, epoch, logs=None):
            self.at = time.perf_counter()

    marker, gaps = EpochEnd(), []
    for _ in range(fits):
        model.fit(dataset, epochs=1, verbose=0, callbacks=[marker])
        gaps.append(time.perf_counter() - marker.at)
    return sorted(gaps)[len(gaps) // 2]


def ratio_rows(padding: dict, pipeline_eps: float, model_eps: float, overhead: dict = None) -> list:
    """Useful (non-pad) share of each batching mode vs static padding (the first mode), and the
    bucketed tf.data pipeline's examples/s vs one model training step."""
    static = next(iter(padding))
    rows = benchlib.ratio_rows("padding", "useful (non-pad) share", {n: 1.0 - f for n, f in padding.items()},
                               static, higher_is_better=True)
    rows += benchlib.ratio_rows("throughput", "examples/s", {"model train step": model_eps,
                                                              "tf.data pipeline (bucketed)": pipeline_eps},
                                "model train step", higher_is_better=True)
    if overhead:
        rows += benchlib.ratio_rows("fit epoch overhead", "s after the last step", overhead,
                                    "tf.data autotune on", higher_is_better=False)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="rotten_tomatoes")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="training steps timed for the model")
    parser.add_argument("--overhead-fits", type=int, default=3,
                        help="Keras fit calls per setting for the epoch-overhead check (0 = skip it)")
    parser.add_argument("--out", default="bench/results/input_pipeline.json")
    args = parser.parse_args(argv)

    data = load_dataset(args.dataset)
    labels = LabelMap.from_examples(data.train, data.task)
    encoder = TextEncoder.from_directory(resolve_checkpoint(args.model), max_length=args.max_length)

    def build(**kw):
        return make_dataset(data.train, encoder, labels, data.task, batch_size=args.batch_size, **kw)

    modes = {"static (pad to max_length)": build(static_shapes=True),
             "pad to batch max": build(bucket=False),
             "length bucketing": build(training=True)}
    padding = {name: padding_fraction(ds) for name, ds in modes.items()}   # first pass also fills the caches
    print(f"\n{args.dataset}: {len(data.train)} training examples, max_length {args.max_length}")
    print(f"{'batching':<30}{'padding':>10}")
    for name, frac in padding.items():
        print(f"{name:<30}{frac:>10.1%}")

    bucketed = modes["length bucketing"]
    pipeline_eps = examples_per_second(bucketed)
    model = ModelBundle(build_task_model(args.model, data.task, labels), encoder, labels, data.task).compile(
        learning_rate=5e-5, total_steps=1000).model
    batches = list(bucketed.take(args.steps + 1))
    model.train_on_batch(*batches[0])                                       # trace once
    started = time.perf_counter()
    seen = 0
    for features, y in batches[1:]:
        model.train_on_batch(features, y)
        seen += int(features["input_ids"].shape[0])
    model_eps = seen / (time.perf_counter() - started)
    overhead = {}
    if args.overhead_fits:
        # 1,000 examples at 0.2 s a step: an epoch like the benchmarks' small runs. make_dataset turns
        # the autotuner off; "on" is the same pipeline with TF's default options.
        small = make_dataset(data.train[:1000], encoder, labels, data.task, batch_size=args.batch_size,
                             training=True)
        autotune_on = tf.data.Options()
        autotune_on.autotune.enabled = True
        for name, ds in (("tf.data autotune on", small.with_options(autotune_on)), ("make_dataset", small)):
            overhead[name] = fit_epoch_overhead(ds, fits=args.overhead_fits, step_s=0.2)
        print("Keras fit, seconds from the last step's end to fit returning: "
              + ", ".join(f"{k} {v:.2f}" for k, v in overhead.items()))
    rows = ratio_rows(padding, pipeline_eps, model_eps, overhead)
    print()
    table = benchlib.print_ratio_table(rows, title=f"input pipeline ({args.dataset}, {args.model}, "
                                                   f"max_length {args.max_length})")
    verdict = "OK: the input pipeline is not the bottleneck" if pipeline_eps > 5 * model_eps else \
        "WARNING: the input pipeline is close to the model's speed"
    print(verdict)

    benchlib.write_json(args.out, {
        "benchmark": "input_pipeline", "dataset": args.dataset, "model": args.model, "max_length": args.max_length,
        "padding_fraction": padding, "pipeline_examples_per_s": pipeline_eps,
        "model_train_examples_per_s": model_eps, "fit_epoch_overhead_s": overhead,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "machine": benchlib.machine_info(), "ratios": rows, "table": table})
    plot = benchlib.plot_ratios(rows, os.path.splitext(args.out)[0] + ".png",
                                f"input pipeline ({args.dataset}, max_length {args.max_length})")
    print(f"results written to {args.out}" + (f" and {plot}" if plot else ""))


if __name__ == "__main__":
    main()
