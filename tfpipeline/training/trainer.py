"""``train``: data -> tf.data -> Keras ``fit`` -> best weights -> evaluation -> model folder.

Each step is also a public function so a plain Keras script can use the
pieces directly (see README "Use from Python").
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Union

from tfpipeline import _env  # noqa: F401

import tensorflow as tf
import tf_keras

from tfpipeline.config import TrainConfig, make_config
from tfpipeline.data.examples import DataError, TaskData
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import bucket_boundaries, make_dataset
from tfpipeline.data.sources import load_task_data
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.evaluation.evaluate import evaluate_examples
from tfpipeline.evaluation.reports import format_report
from tfpipeline.inference import Predictor
from tfpipeline.models.checkpoint import resolve_checkpoint
from tfpipeline.models.peft import apply_peft, merge_lora, save_peft_weights
from tfpipeline.models.task_model import TaskModel, build_task_model, count_params, save_task_model
from tfpipeline.training.callbacks import BEST_WEIGHTS, default_callbacks
from tfpipeline.training.losses import loss_and_metrics
from tfpipeline.training.optimization import create_optimizer
from tfpipeline.training.strategy import get_strategy, is_tpu

REPORT_FILE = "eval_report.json"
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: TaskModel
    encoder: TextEncoder
    labels: LabelMap
    output_dir: str
    report: Dict[str, Any]
    history: Dict[str, list] = field(default_factory=dict)
    params: Dict[str, int] = field(default_factory=dict)
    train_seconds: float = 0.0

    def predictor(self, batch_size: int = 64) -> Predictor:
        return Predictor(self.model, self.encoder, self.labels, self.model.task, batch_size)


def compile_task_model(model: TaskModel, *, learning_rate: float, total_steps: int, warmup_ratio: float = 0.1,
                       weight_decay: float = 0.01, clip_norm: Optional[float] = 1.0,
                       steps_per_execution: int = 1) -> TaskModel:
    """Compile with AdamW + warmup/decay and the task's loss/metric (call inside ``strategy.scope()``)."""
    loss, metrics = loss_and_metrics(model.task)
    optimizer = create_optimizer(learning_rate, total_steps, warmup_ratio=warmup_ratio,
                                 weight_decay=weight_decay, clip_norm=clip_norm)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=steps_per_execution)
    return model


def steps_per_epoch(num_examples: int, batch_size: int, *, static_shapes: bool, max_length: int) -> int:
    """Batches per epoch; with bucketing each bucket may end on one partial batch."""
    if static_shapes:
        return max(num_examples // batch_size, 1)
    return math.ceil(num_examples / batch_size) + len(bucket_boundaries(max_length))


def _as_config(config: Union[TrainConfig, Dict[str, Any], None], overrides: Dict[str, Any]) -> TrainConfig:
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = make_config(TrainConfig, config)
    if overrides:
        config = make_config(TrainConfig, {**config.to_dict(), **overrides})
    return config.validate()


def prepare_output(path: str, overwrite: bool) -> str:
    """Refuse to clobber a finished run; return a fresh staging folder beside ``path``.

    Call it before the expensive work, so a clash fails fast; finish with ``publish_run``.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"{path}: output_dir exists and is a file, not a folder")
    if os.path.exists(path) and os.listdir(path) and not overwrite:
        raise DataError(f"{path}: output folder exists and is not empty (pass overwrite=True / --overwrite)")
    staging = path.rstrip("/\\") + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    return staging


def label_map_for(data: TaskData) -> LabelMap:
    """The dataset's declared label set (built-in datasets), else the labels seen in training."""
    return LabelMap(data.labels) if data.labels else LabelMap.from_examples(data.train, data.task)


def data_for(cfg: TrainConfig) -> TaskData:
    """The run's data as the config describes it (built-in dataset or files, limits applied)."""
    return load_task_data(dataset=cfg.dataset, task=cfg.task, train_file=cfg.train_file,
                          validation_file=cfg.validation_file, test_file=cfg.test_file,
                          limit_train=cfg.limit_train, limit_eval=cfg.limit_eval, seed=cfg.seed,
                          text_column=cfg.text_column, label_column=cfg.label_column,
                          pair_column=cfg.pair_column)


@dataclass
class FitResult:
    model: TaskModel
    encoder: TextEncoder
    labels: LabelMap
    history: Dict[str, list]
    params: Dict[str, int]
    train_seconds: float
    global_batch: int


def fit_model(cfg: TrainConfig, data: TaskData, run_dir: str, *,
              strategy: Optional[tf.distribute.Strategy] = None,
              callbacks: Sequence[tf_keras.callbacks.Callback] = (),
              labels: Optional[LabelMap] = None, say=print) -> FitResult:
    """Build, compile and ``fit`` on ``data``; returns the model holding its best-validation weights.

    ``run_dir`` receives checkpoints, TensorBoard logs and history.csv. Used by
    ``train`` and by the tuner (which needs no model folder per trial).
    """
    task = data.task
    labels = labels or label_map_for(data)
    checkpoint = resolve_checkpoint(cfg.model)
    encoder = TextEncoder.from_directory(checkpoint, max_length=cfg.max_length)
    strategy = strategy or get_strategy(cfg.strategy, cfg.tpu)
    static = cfg.static_shapes or is_tpu(strategy)
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    tf_keras.utils.set_random_seed(cfg.seed)

    train_ds = make_dataset(data.train, encoder, labels, task, batch_size=global_batch, training=True,
                            static_shapes=static, bucket=cfg.bucket, seed=cfg.seed)
    val_ds = make_dataset(data.validation, encoder, labels, task, batch_size=global_batch,
                          static_shapes=static, bucket=cfg.bucket)
    previous_policy = tf_keras.mixed_precision.global_policy()
    try:
        tf_keras.mixed_precision.set_global_policy(cfg.precision)
        total_steps = cfg.epochs * steps_per_epoch(len(data.train), global_batch, static_shapes=static,
                                                   max_length=cfg.max_length)
        with strategy.scope():
            model = build_task_model(checkpoint, task, labels, dropout=cfg.dropout)
            if cfg.peft:
                apply_peft(model, cfg.peft_config())
            compile_task_model(model, learning_rate=cfg.learning_rate, total_steps=total_steps,
                               warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                               clip_norm=cfg.clip_norm, steps_per_execution=cfg.steps_per_execution)
        params = count_params(model)
        say(f"[tfpipeline] {data.name}: {task}, {len(labels)} labels, train {len(data.train)} / "
            f"validation {len(data.validation)} / test {len(data.test)}; model {cfg.model} "
            f"({params['trainable']:,} trainable params); {strategy.num_replicas_in_sync} replica(s), "
            f"global batch {global_batch}, {'static' if static else 'bucketed'} shapes")
        started = time.perf_counter()
        history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs,
                            callbacks=default_callbacks(run_dir, patience=cfg.early_stopping_patience)
                            + list(callbacks),
                            verbose=cfg.verbose if sys.stdout.isatty() else (2 if cfg.verbose else 0))
        train_seconds = time.perf_counter() - started
        model.load_weights(os.path.join(run_dir, BEST_WEIGHTS))
        shutil.rmtree(os.path.join(run_dir, os.path.dirname(BEST_WEIGHTS)), ignore_errors=True)
    finally:
        tf_keras.mixed_precision.set_global_policy(previous_policy)
    return FitResult(model, encoder, labels, dict(history.history), params, train_seconds, global_batch)


def publish_run(staging: str, output_dir: str, report: Optional[Dict[str, Any]] = None, *,
                report_file: str = REPORT_FILE) -> None:
    """Write ``report`` (if any) into ``staging`` as ``report_file`` and move it to ``output_dir`` in one rename.

    ``staging`` comes from ``prepare_output(output_dir, ...)``; an existing
    ``output_dir`` (allowed there by ``overwrite``) is replaced.
    """
    if report is not None:
        with open(os.path.join(staging, report_file), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(staging, output_dir)


def train(config: Union[TrainConfig, Dict[str, Any], None] = None, *, data: Optional[TaskData] = None,
          strategy: Optional[tf.distribute.Strategy] = None,
          callbacks: Sequence[tf_keras.callbacks.Callback] = (), **overrides) -> TrainResult:
    """Fine-tune, keep the best epoch, evaluate, and write the model folder.

    The folder appears only when everything succeeded: work happens in
    ``<output_dir>.partial`` and is renamed at the end.
    """
    cfg = _as_config(config, overrides)
    say = print if cfg.verbose else (lambda *a, **k: None)
    data = data or data_for(cfg)
    labels = label_map_for(data)
    # Check evaluation labels before any training: an unknown one names its file and line.
    eval_split = data.test or data.validation
    for ex in list(data.validation) + list(eval_split):
        for name in ([ex.label] if data.task == "classification" else list(ex.tags or [])):
            labels.id(name, ex.origin)

    staging = prepare_output(cfg.output_dir, cfg.overwrite)
    try:
        fit = fit_model(cfg, data, staging, strategy=strategy, callbacks=callbacks, labels=labels, say=say)
        peft_meta = {}
        if cfg.peft:
            save_peft_weights(fit.model, staging)     # the small artefact: PEFT weights + head only
            peft_meta = {"peft": dataclasses.asdict(cfg.peft_config())}
            if cfg.peft == "lora":
                merge_lora(fit.model)                 # saved/exported model is a plain BERT again
                peft_meta["peft"]["merged"] = True
        predictor = Predictor(fit.model, fit.encoder, labels, data.task, batch_size=max(fit.global_batch, 64))
        report = evaluate_examples(predictor, eval_split)
        report.update(split="test" if data.test else "validation", dataset=data.name,
                      train_seconds=round(fit.train_seconds, 1), trainable_params=fit.params["trainable"])
        save_task_model(fit.model, fit.encoder, labels, staging, source_checkpoint=cfg.model,
                        dataset=data.name, config=cfg.to_dict(), **peft_meta)
        publish_run(staging, cfg.output_dir, report)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"[tfpipeline] evaluation on {report['split']} ({data.name}):")
    say(format_report(report))
    say(f"[tfpipeline] model written to {cfg.output_dir}")
    return TrainResult(fit.model, fit.encoder, labels, cfg.output_dir, report, fit.history, fit.params,
                       fit.train_seconds)
