"""``train``: data -> tf.data -> Keras ``fit`` -> best weights -> evaluation -> model folder.

Text and image tasks share everything but ``task_inputs`` (encoder, the two
tf.data pipelines, the model builder): the recipe, schedule, callbacks,
epoch choice, evaluation and model folder are the same code.

Each step is also a public function so a plain Keras script can use the
pieces directly (see README "Use from Python"): ``fit_model`` builds,
compiles and fits a ``ModelBundle``; ``train`` adds evaluation and writes the
model folder (``ModelBundle.save`` format) with its report and logs.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Union

import tensorflow as tf
import tf_keras

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import TrainConfig, make_config, with_overrides
from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, REGRESSION, TaskData
from tfpipeline.data.image_pipeline import make_image_dataset
from tfpipeline.data.images import ImageEncoder
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pair_pipeline import make_pair_dataset
from tfpipeline.data.pipeline import TargetScaling, make_dataset
from tfpipeline.data.readers import summarize_bad_rows
from tfpipeline.data.sources import data_from_options
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.evaluation.evaluate import evaluate_examples
from tfpipeline.evaluation.html_report import write_html_report
from tfpipeline.evaluation.reports import format_report
from tfpipeline.models.checkpoint import resolve_checkpoint
from tfpipeline.models.embedding_model import build_embedding_model, similarity_labels
from tfpipeline.models.image_model import build_image_model, checkpoint_encoder
from tfpipeline.models.peft import apply_peft, merge_lora, peft_metadata, save_peft_weights
from tfpipeline.models.task_model import build_task_model
from tfpipeline.staging import check_output, partial_path, scratch_output, staged_output
from tfpipeline.training.backup import (Backup, keep_for_resume, merged_history, resume_decision, skip_epochs,
                                        write_run_options)
from tfpipeline.training.callbacks import (BEST_WEIGHTS, ENTITY_F1, METRIC_NAMES, SELECTION_METRIC,
                                           AnnealOnPlateau, ValidationEntityF1, default_callbacks, scored_items)
from tfpipeline.training.effective_recipe import EffectiveRecipe, resolve_recipe
from tfpipeline.training.strategy import (broadcast_from_chief, get_strategy, is_chief, is_multi_worker, is_tpu,
                                         shard_by_element, sync_workers)

REPORT_FILE = "eval_report.json"
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run (``train``, ``distill``) produced: the bundle plus its numbers."""

    bundle: ModelBundle
    output_dir: Optional[str]
    report: Dict[str, Any]
    history: Dict[str, list] = field(default_factory=dict)
    params: Dict[str, int] = field(default_factory=dict)
    train_seconds: float = 0.0


def as_train_config(config: Union[TrainConfig, Dict[str, Any], None], overrides: Dict[str, Any]) -> TrainConfig:
    """A validated ``TrainConfig`` from a config, a dict or nothing (defaults), plus keyword overrides."""
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = make_config(TrainConfig, config)
    return with_overrides(config, **overrides) if overrides else config.validate()


def label_map_for(data: TaskData) -> LabelMap:
    """The dataset's declared label set (built-in datasets), else the labels seen in training
    (embedding models have one output, the similarity)."""
    if data.task == EMBEDDING:
        return similarity_labels()
    return LabelMap(data.labels) if data.labels else LabelMap.from_examples(data.train, data.task)


def data_for(cfg: TrainConfig) -> TaskData:
    """The run's data as the config describes it (built-in dataset or files, limits applied)."""
    return data_from_options(cfg, seed=cfg.seed)


def fit_verbosity(verbose: int) -> int:
    """Keras progress bars only on a terminal; one line per epoch in logs and pipes."""
    return verbose if sys.stdout.isatty() else (2 if verbose else 0)


@dataclass
class FitResult:
    bundle: ModelBundle
    history: Dict[str, list]
    params: Dict[str, int]
    train_seconds: float
    global_batch: int
    recipe: EffectiveRecipe
    epochs: Dict[str, Any]


def epoch_summary(history: Dict[str, list], monitor: str, cap: int, patience: int, *, auto: bool = False,
                  annealed: Optional[int] = None, restored_from: Optional[int] = None,
                  kept: Optional[int] = None, tolerance: Optional[float] = None) -> Dict[str, Any]:
    """Which epoch was kept (1-based), how many ran, and why training stopped.

    The kept epoch is the best ``monitor`` score unless ``kept`` says otherwise; ``best`` is the kept
    epoch's score (what the saved model scored on validation). ``annealed`` /
    ``restored_from`` / ``kept`` (0-based) and ``tolerance`` come from ``AnnealOnPlateau`` in an
    ``epochs: auto`` run, which keeps the annealed epoch within one standard error of the best.
    """
    scores = history.get(monitor) or []
    run = len(scores)
    best = int(max(range(run), key=lambda i: (scores[i], -i))) if run else None
    chosen = kept if kept is not None and 0 <= kept < run else best
    metric = METRIC_NAMES.get(monitor, monitor)
    if run < cap or annealed is not None:
        stopped = f"no {metric} improvement for {patience} epoch{'s' * (patience != 1)}"
        if annealed is not None and annealed < run:
            start = f"from epoch {restored_from + 1}'s weights" if restored_from is not None else "on"
            stopped += f"; epoch {annealed + 1} annealed the learning rate to 0 {start}"
            if chosen == annealed != best and (tolerance is not None or scores[annealed] == scores[best]):
                stopped += " and was kept: " + (
                    f"it ties epoch {best + 1}'s {scores[best]:.4f}" if scores[annealed] == scores[best] else
                    f"its {scores[annealed]:.4f} is within one standard error ({tolerance:.4f}) of epoch "
                    f"{best + 1}'s {scores[best]:.4f}")
    else:
        stopped = f"reached the {cap}-epoch cap" if auto else f"ran every epoch (epochs {cap})"
    return {"kept": chosen + 1 if run else 0, "run": run, "cap": cap, "monitor": monitor,
            "best": float(scores[chosen]) if run else None, "stopped": stopped,
            "annealed": annealed + 1 if annealed is not None and annealed < run else None}


@dataclass
class TaskInputs:
    """What differs between tasks (text, pairs, images): the encoder, the two datasets and the model builder."""

    encoder: Union[TextEncoder, ImageEncoder]
    train: tf.data.Dataset
    validation: tf.data.Dataset
    build_model: Callable[[], tf_keras.Model]   # called inside the strategy scope
    meta: Dict[str, Any] = field(default_factory=dict)   # what the model folder must record (regression scaling)


def task_inputs(cfg: TrainConfig, data: TaskData, labels: LabelMap, recipe: EffectiveRecipe, global_batch: int,
                static: bool) -> TaskInputs:
    """Encoder, tf.data pipelines and model builder for ``data.task`` (``cfg`` fully resolved)."""
    if data.task == IMAGE_CLASSIFICATION:
        encoder = checkpoint_encoder(cfg.model, cfg.image_size)
        common = dict(batch_size=global_batch, static_shapes=static, seed=cfg.seed)
        return TaskInputs(
            encoder,
            make_image_dataset(data.train, encoder, labels, training=True, augmentation=cfg.augmentation, **common),
            make_image_dataset(data.validation, encoder, labels, **common),
            lambda: build_image_model(cfg.model, labels, cfg.image_size, dropout=cfg.dropout,
                                      pretrained=not cfg.from_scratch))
    checkpoint = resolve_checkpoint(cfg.model)
    encoder = TextEncoder.from_directory(checkpoint, max_length=cfg.max_length)
    if data.task == EMBEDDING:
        common = dict(batch_size=global_batch, static_shapes=static, seed=cfg.seed)
        return TaskInputs(encoder, make_pair_dataset(data.train, encoder, training=True, **common),
                          make_pair_dataset(data.validation, encoder, **common),
                          lambda: build_embedding_model(checkpoint, dropout=cfg.dropout,
                                                        pretrained=not cfg.from_scratch))
    scaling = TargetScaling.fit(data.train) if data.task == REGRESSION else None
    return TaskInputs(
        encoder,
        make_dataset(data.train, encoder, labels, data.task, batch_size=global_batch, training=True,
                     static_shapes=static, bucket=cfg.bucket, seed=cfg.seed, lengths=recipe.train_lengths,
                     target_scaling=scaling, augmentation=cfg.augmentation,
                     augmentation_rate=cfg.augmentation_rate),
        make_dataset(data.validation, encoder, labels, data.task, batch_size=global_batch, static_shapes=static,
                     bucket=cfg.bucket, target_scaling=scaling),
        lambda: build_task_model(checkpoint, data.task, labels, dropout=cfg.dropout,
                                 pretrained=not cfg.from_scratch),
        {"target_scaling": scaling.as_dict()} if scaling else {})


def fit_model(cfg: TrainConfig, data: TaskData, run_dir: str, *,
              strategy: Optional[tf.distribute.Strategy] = None,
              callbacks: Sequence[tf_keras.callbacks.Callback] = (),
              labels: Optional[LabelMap] = None, say: Callable[..., None] = print,
              backup: Optional[Backup] = None) -> FitResult:
    """Build, compile and ``fit`` on ``data``; returns the bundle holding its best-validation weights.

    Options left ``auto`` in ``cfg`` are filled first (``resolve_recipe``); the
    result's ``recipe`` says which values were used and why. ``run_dir``
    receives checkpoints, TensorBoard logs and history.csv. Used by ``train``
    and by the tuner (which needs no model folder per trial). ``backup``
    backs up the training state and, when resuming, continues from it
    (``training.backup``). On a cluster every worker calls this; the chief's
    ``run_dir`` is kept, the others' are scratch, and all end with the chief's
    best weights.
    """
    task = data.task
    labels = labels or label_map_for(data)
    strategy = strategy or get_strategy(cfg.strategy, cfg.tpu)
    static = cfg.static_shapes or is_tpu(strategy)
    recipe = resolve_recipe(cfg, data, labels, replicas=strategy.num_replicas_in_sync, static_shapes=static)
    cfg = recipe.config
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    tf_keras.utils.set_random_seed(cfg.seed)
    inputs = task_inputs(cfg, data, labels, recipe, global_batch, static)
    train_ds, val_ds = inputs.train, inputs.validation
    if recipe.passes_per_epoch > 1:   # small data, epochs auto: one Keras epoch = several reshuffled passes
        train_ds = train_ds.repeat(recipe.passes_per_epoch)
    multi_worker, chief = is_multi_worker(strategy), is_chief(strategy)
    if multi_worker:
        train_ds, val_ds = shard_by_element(train_ds), shard_by_element(val_ds)
    steps = recipe.steps_per_epoch
    past = backup.past(int(train_ds.cardinality()), chief=chief, say=say) if backup else None
    if past:   # every pass of the un-repeated dataset draws its own shuffle order
        skip_epochs(inputs.train, len(past) * recipe.passes_per_epoch)
    monitor = SELECTION_METRIC.get(task, "val_accuracy")
    previous_policy = tf_keras.mixed_precision.global_policy()
    try:
        tf_keras.mixed_precision.set_global_policy(cfg.precision)
        with strategy.scope():
            bundle = ModelBundle(inputs.build_model(), inputs.encoder, labels, task, dict(inputs.meta))
            if cfg.peft:
                apply_peft(bundle.model, cfg.peft_options())
            bundle.compile(learning_rate=cfg.learning_rate, total_steps=cfg.epochs * steps,
                           warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
                           steps_per_execution=cfg.steps_per_execution,
                           anneal_steps=steps if recipe.auto_epochs else None)
        params = bundle.params()
        what = "pairs" if task == EMBEDDING else f"{len(labels)} labels"
        say(f"[tfpipeline] {data.name}: {task}, {what}, train {len(data.train)} / "
            f"validation {len(data.validation)} / test {len(data.test)}; model {cfg.model} "
            f"({params['trainable']:,} trainable params); {strategy.num_replicas_in_sync} replica(s), "
            f"global batch {global_batch}, {shapes_note(task, cfg, static)}")
        say(f"[tfpipeline] recipe: {recipe.describe()}")
        scorer = [ValidationEntityF1(bundle.predictor(batch_size=max(global_batch, 64)), data.validation)] \
            if monitor == ENTITY_F1 else []
        annealer = AnnealOnPlateau(monitor, cfg.early_stopping_patience, cfg.epochs,
                                   validation_items=scored_items(data.validation, task),
                                   checkpoint_file=os.path.join(run_dir, BEST_WEIGHTS)) \
            if recipe.auto_epochs else None
        if annealer and past:
            annealer.resume_after([row.get(monitor, float("nan")) for row in past],
                                  os.path.join(backup.run_dir, BEST_WEIGHTS))
        started = time.perf_counter()
        history = bundle.model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs,
                                   callbacks=default_callbacks(run_dir, monitor=monitor, first=scorer,
                                                               patience=cfg.early_stopping_patience,
                                                               stopper=annealer, past=past)
                                   + list(callbacks) + ([backup.callback()] if backup else []),
                                   verbose=fit_verbosity(cfg.verbose))
        train_seconds = time.perf_counter() - started
        if chief:   # the other workers' best checkpoints were temporary (Keras's multi-worker rule)
            bundle.model.load_weights(os.path.join(run_dir, BEST_WEIGHTS))
        if multi_worker:
            broadcast_from_chief(strategy, bundle.model.weights)
        shutil.rmtree(os.path.join(run_dir, os.path.dirname(BEST_WEIGHTS)), ignore_errors=True)
        if backup and chief:
            backup.remove()   # a finished run needs no backup (Keras has emptied it); not part of the model folder
    finally:
        tf_keras.mixed_precision.set_global_policy(previous_policy)
    history = merged_history(past or [], history.history)
    epochs = epoch_summary(history, monitor, cfg.epochs, cfg.early_stopping_patience,
                           auto=recipe.auto_epochs, annealed=annealer.annealed if annealer else None,
                           restored_from=annealer.restored_from if annealer else None,
                           kept=annealer.kept if annealer else None,
                           tolerance=annealer.tolerance if annealer else None)
    if epochs["run"]:
        say(f"[tfpipeline] kept epoch {epochs['kept']} of {epochs['run']} ({METRIC_NAMES.get(monitor, monitor)} "
            f"{epochs['best']:.4f}); stopped: {epochs['stopped']}")
    return FitResult(bundle, history, params, train_seconds, global_batch, recipe, epochs)


def shapes_note(task: str, cfg: TrainConfig, static: bool) -> str:
    """How batches are shaped, for the header line."""
    if task == IMAGE_CLASSIFICATION:
        return f"{cfg.image_size}x{cfg.image_size} images, augmentation {cfg.augmentation}"
    if task == EMBEDDING:
        return f"in-batch negatives, {'static' if static else 'padded'} shapes"
    return f"{'static' if static else 'bucketed'} shapes"


def check_labels(data: TaskData, labels: LabelMap) -> None:
    """Every validation/test label must be known: an unknown one names its file and line, before training."""
    if data.task in (EMBEDDING, REGRESSION):   # no label names to check (regression targets: the readers did)
        return
    for ex in list(data.validation) + list(data.test):
        for name in ([ex.label] if data.task in (CLASSIFICATION, IMAGE_CLASSIFICATION) else list(ex.tags or [])):
            labels.id(name, ex.origin)


def write_report(directory: str, report: Dict[str, Any], report_file: str = REPORT_FILE) -> None:
    with open(os.path.join(directory, report_file), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


def train(config: Union[TrainConfig, Dict[str, Any], None] = None, *, data: Optional[TaskData] = None,
          strategy: Optional[tf.distribute.Strategy] = None,
          callbacks: Sequence[tf_keras.callbacks.Callback] = (), **overrides) -> TrainResult:
    """Fine-tune, keep the best epoch, evaluate, and write the model folder.

    The folder appears only when everything succeeded: work happens in
    ``<output_dir>.partial`` and is renamed at the end. The training state is
    backed up there (``training.backup``): an interrupted run keeps it, and
    ``resume=True`` continues from it. On a cluster (``--strategy
    multiworker``) every worker runs this with the same options; only the
    chief writes ``<output_dir>`` (the others write to scratch folders, as
    TensorFlow's multi-worker guide prescribes) and the others return a
    result whose ``output_dir`` is None.
    """
    cfg = as_train_config(config, overrides)
    say = print if cfg.verbose else (lambda *a, **k: None)
    # first: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything else
    strategy = strategy or get_strategy(cfg.strategy, cfg.tpu)
    chief = is_chief(strategy)
    data = data or data_for(cfg)
    if data.skipped_rows:
        say(f"[tfpipeline] {summarize_bad_rows(data.skipped_rows)}")
    labels = label_map_for(data)
    check_labels(data, labels)
    eval_split = data.test or data.validation

    check_output(cfg.output_dir, cfg.overwrite)   # every worker: all fail alike, none waits for a failed chief
    partial = partial_path(cfg.output_dir)
    resume = resume_decision(partial, resume=cfg.resume, overwrite=cfg.overwrite, options=cfg.to_dict(), say=say)
    folder = staged_output(cfg.output_dir, overwrite=cfg.overwrite, resume=resume, keep_on_error=keep_for_resume) \
        if chief else scratch_output("tfpipeline-worker-")
    with folder as staging:
        if chief and not resume:
            write_run_options(staging, cfg.to_dict())
        if is_multi_worker(strategy):
            sync_workers(strategy)   # the chief's folder is ready (a stale backup is gone) before anyone reads it
        fit = fit_model(cfg, data, staging, strategy=strategy, callbacks=callbacks, labels=labels, say=say,
                        backup=Backup(partial, cfg.backup_every, resume))
        bundle = fit.bundle
        bundle.meta.update(source_checkpoint=cfg.model, dataset=data.name, config=fit.recipe.config.to_dict(),
                           recipe=fit.recipe.as_dict())
        if cfg.peft:
            save_peft_weights(bundle.model, staging)   # the small artefact: PEFT weights + head only
            bundle.meta["peft"] = peft_metadata(cfg.peft_options(), merged=cfg.peft == "lora")
            if cfg.peft == "lora":
                merge_lora(bundle.model)              # saved/exported model is a plain BERT again
        # embedding: each evaluation query is ranked against every known document (all splits' positives)
        pool = list(data.train) + list(data.validation) + list(data.test) if data.task == EMBEDDING else None
        report = evaluate_examples(bundle.predictor(batch_size=max(fit.global_batch, 64)), eval_split,
                                   candidates=pool)
        report.update(split="test" if data.test else "validation", dataset=data.name,
                      train_seconds=round(fit.train_seconds, 1), trainable_params=fit.params["trainable"],
                      epochs=fit.epochs, recipe=fit.recipe.as_dict())
        if data.skipped_rows:
            report.update(skipped_rows=len(data.skipped_rows), skipped_row_examples=data.skipped_rows[:5])
        bundle.write(staging)
        write_report(staging, report)
        write_html_report(staging, report, history=fit.history, recipe=fit.recipe.as_dict())
    if not chief:
        say(f"[tfpipeline] worker done; the chief writes {cfg.output_dir}")
        return TrainResult(bundle, None, report, fit.history, fit.params, fit.train_seconds)
    bundle.directory = cfg.output_dir
    say(f"[tfpipeline] evaluation on {report['split']} ({data.source(report['split'])}):")
    say(format_report(report))
    say(f"[tfpipeline] model written to {cfg.output_dir}")
    return TrainResult(bundle, cfg.output_dir, report, fit.history, fit.params, fit.train_seconds)
