"""Continual learning: fine-tune an existing model folder on a new task without forgetting the old one.

Design: one model, one head over the *union* label space. The old labels keep
their ids (the old head's rows are copied); labels new to the model are
appended with freshly initialised rows. This covers both

* domain-incremental learning (same labels, new data: rotten_tomatoes ->
  tweet_sentiment shares negative/positive and adds neutral), and
* class-incremental learning (a new label set: the old head survives
  inside the bigger one),

and the result is still a plain task-model ``ModelBundle`` (a model folder
when saved) that evaluates, exports and serves like any other. The old task is scored *task-aware* (argmax over
its own labels, which a caller of the old task knows) and also open-set
(argmax over every label) -- both are reported.

Against forgetting:

* rehearsal: ``replay_fraction * len(new train)`` old-task training examples
  are mixed into the new task's training set.
* EWC (Kirkpatrick et al. 2017): the diagonal empirical Fisher ``F`` of the
  old model on old-task examples anchors each weight; training minimises
  ``task loss + ewc_lambda * sum F * (w - w_old)^2`` (custom ``train_step``).
  ``F`` is divided by its mean, so ``ewc_lambda`` reads like an L2 strength
  that is larger where the old task is sensitive. Weights the old model did
  not have (new head rows) are free.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from tfpipeline.bundle import ModelBundle, read_metadata
from tfpipeline.config import ContinualConfig, DataOptions, with_overrides
from tfpipeline.data.examples import CLASSIFICATION, TaskData, TextExample
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import batches_per_epoch, make_dataset
from tfpipeline.data.sources import data_from_options
from tfpipeline.data.tokenization import FEATURES, TextEncoder
from tfpipeline.errors import CheckpointError, ConfigError, DataError
from tfpipeline.evaluation.reports import classification_report
from tfpipeline.inference import Predictor
from tfpipeline.models.checkpoint_recipes import recipe_for
from tfpipeline.models.task_model import TaskModel, build_task_model
from tfpipeline.models.weights import weight_key
from tfpipeline.staging import staged_output
from tfpipeline.training.trainer import write_report

REPORT_FILE = "continual_report.json"


# ---------------------------------------------------------------- label space and head
def union_labels(old: LabelMap, new_names: Sequence[str]) -> LabelMap:
    """Old labels first, in their old order (same ids), then labels the model has not seen."""
    return LabelMap(list(old.names) + [n for n in new_names if n not in old])


def expand_head(old_model: TaskModel, checkpoint_dir: str, old_labels: LabelMap, labels: LabelMap) -> TaskModel:
    """A copy of the model folder with a head over ``labels`` whose old rows are the old head's."""
    if labels == old_labels:
        return old_model
    model = build_task_model(checkpoint_dir, old_model.task, labels)
    old_weights = {weight_key(w): w.numpy() for w in old_model.weights}
    for w in model.weights:
        old = old_weights.get(weight_key(w))
        if old is None:
            continue
        if old.shape == tuple(w.shape):
            w.assign(old)
        else:  # the head: [hidden, old classes] inside [hidden, all classes]
            value = w.numpy()
            value[..., :old.shape[-1]] = old
            w.assign(value)
    return model


# ---------------------------------------------------------------- EWC
def fisher_diagonal(model: TaskModel, encoder: TextEncoder, labels: LabelMap, examples: Sequence[TextExample],
                    *, max_examples: int = 200, seed: int = 13) -> Dict[str, np.ndarray]:
    """Empirical Fisher diagonal: mean over examples of the squared per-example gradient of -log p(y|x).

    One example per gradient (batch 1) so it is the true per-example
    average, not the square of a batch mean.
    """
    if not examples:
        raise DataError("EWC needs old-task examples to estimate the Fisher information")
    sample = list(examples)
    random.Random(seed).shuffle(sample)
    sample = sample[:max_examples]
    variables = model.trainable_variables
    spec = ({k: tf.TensorSpec([1, None], tf.int32) for k in FEATURES}, tf.TensorSpec([1], tf.int32))

    @tf.function(input_signature=spec)
    def squared_gradients(features, label):
        with tf.GradientTape() as tape:
            logits = model(features, training=False)
            loss = tf_keras.losses.sparse_categorical_crossentropy(label, logits, from_logits=True)
        return [tf.square(g) if g is not None else tf.zeros_like(v)
                for g, v in zip(tape.gradient(loss, variables), variables)]

    totals = [np.zeros(v.shape, np.float64) for v in variables]
    for features, label in make_dataset(sample, encoder, labels, model.task, batch_size=1, bucket=False):
        for total, g in zip(totals, squared_gradients(features, label)):
            total += g.numpy()
    return {weight_key(v): (t / len(sample)).astype(np.float32) for v, t in zip(variables, totals)}


def ewc_anchors(model: TaskModel, fisher: Dict[str, np.ndarray], old_weights: Dict[str, np.ndarray],
                *, normalise: bool = True) -> List[Tuple[tf.Variable, tf.Tensor, tf.Tensor]]:
    """(variable, Fisher, old value) for every trainable weight the old model had.

    A grown head gets zero Fisher (no anchor) on its new columns.
    """
    scale = 1.0
    if normalise:
        total = sum(float(f.sum()) for f in fisher.values())
        count = sum(f.size for f in fisher.values())
        scale = count / total if total > 0 else 1.0
    anchors = []
    for v in model.trainable_variables:
        key = weight_key(v)
        if key not in fisher or key not in old_weights:
            continue
        f, old = fisher[key] * scale, old_weights[key]
        if f.shape != tuple(v.shape):
            f_full, old_full = np.zeros(v.shape, np.float32), v.numpy()
            f_full[..., :f.shape[-1]], old_full[..., :old.shape[-1]] = f, old
            f, old = f_full, old_full
        anchors.append((v, tf.constant(f, tf.float32), tf.constant(old, tf.float32)))
    return anchors


def ewc_penalty(anchors, strength: float) -> tf.Tensor:
    """``strength * sum F * (w - w_old)^2`` over the anchored weights."""
    if not anchors:
        return tf.constant(0.0)
    return float(strength) * tf.add_n([tf.reduce_sum(f * tf.square(tf.cast(v, tf.float32) - old))
                                       for v, f, old in anchors])


class _Untracked:
    """A plain holder Keras attribute tracking does not look into."""

    def __init__(self, value):
        self.value = value


class EWCModel(tf_keras.Model):
    """Trains a compiled task model on its compiled loss plus the EWC penalty (custom ``train_step``).

    Compile the task model first (``ModelBundle.compile``: the same loss,
    metrics and optimizer as ``train``), then this wrapper with that optimizer:
    ``EWCModel(model, anchors, strength).compile(optimizer=model.optimizer)``.
    The task model keeps its loss, metrics and optimizer, so afterwards it is
    compiled like any trained model.
    """

    def __init__(self, model: TaskModel, anchors, strength: float, **kwargs):
        super().__init__(**kwargs)
        self.model, self.strength = model, float(strength)
        self.task = model.task
        self.penalty_tracker = tf_keras.metrics.Mean(name="ewc_penalty")
        # Keras would track the anchored variables a second time if they were a plain attribute.
        self._anchor_holder = _Untracked(anchors)

    @property
    def anchors(self):
        return self._anchor_holder.value

    @property
    def metrics(self):
        return [*self.model.metrics, self.penalty_tracker]   # loss, accuracy, ewc_penalty (reset every epoch)

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            penalty = ewc_penalty(self.anchors, self.strength)  # a graph constant 0 without anchors
            loss = self.model.compiled_loss(y, logits, regularization_losses=self.model.losses) + penalty
        self.optimizer.minimize(loss, self.model.trainable_variables, tape=tape)
        self.model.compiled_metrics.update_state(y, logits)
        self.penalty_tracker.update_state(penalty)
        return {m.name: m.result() for m in self.metrics}


# ---------------------------------------------------------------- rehearsal
def rehearsal_mix(new_train: Sequence, old_train: Sequence, fraction: float, seed: int = 13) -> Tuple[List, int]:
    """New training examples plus ``fraction * len(new_train)`` old ones (sampled, seeded), shuffled."""
    count = min(len(old_train), int(round(fraction * len(new_train))))
    rng = random.Random(seed)
    replay = rng.sample(list(old_train), count) if count else []
    mixed = list(new_train) + replay
    rng.shuffle(mixed)
    return mixed, count


# ---------------------------------------------------------------- evaluation
def task_scores(predictor: Predictor, examples: Sequence[TextExample], task_labels: Sequence[str]) -> Dict:
    """Task-aware scores (argmax over ``task_labels`` only) and the open-set accuracy (all labels)."""
    probs = predictor.class_probabilities([ex.text for ex in examples],
                                          [ex.text_pair for ex in examples] if examples[0].text_pair else None)
    ids = [predictor.labels.id(n) for n in task_labels]
    aware = [task_labels[i] for i in probs[:, ids].argmax(axis=1)]
    open_set = [predictor.labels.name(i) for i in probs.argmax(axis=1)]
    gold = [ex.label for ex in examples]
    report = classification_report(gold, aware, list(task_labels))
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "open_set_accuracy": float(np.mean([g == p for g, p in zip(gold, open_set)])),
            "examples": len(examples)}


# ---------------------------------------------------------------- end to end
def old_task_data(model_dir: str, options: DataOptions, *, seed: int = 13) -> TaskData:
    """The old task's examples: those ``options`` name, else the data the model folder records.

    What a model folder records is its dataset name, or the training files
    ``train`` read (kept in its config); an in-memory dataset cannot be found again.
    """
    recorded = read_metadata(model_dir)
    try:
        return data_from_options(options, task=CLASSIFICATION, seed=seed, recorded=recorded, recorded_in=model_dir)
    except DataError as e:
        if options.dataset or options.train_file:
            raise
        raise DataError(f"old task: {e} (--old-dataset / --old-train-file)") from None


@dataclass
class ContinualResult:
    bundle: ModelBundle
    output_dir: Optional[str]
    report: Dict[str, Any]
    history: Dict[str, list] = field(default_factory=dict)


def continual_finetune(model_dir: str, new_data: TaskData, old_data: TaskData, output_dir: Optional[str] = None,
                       config: Optional[ContinualConfig] = None, *, overwrite: bool = False,
                       verbose: int = 0, **overrides) -> ContinualResult:
    """Fine-tune the model folder ``model_dir`` (trained on ``old_data``) on ``new_data``.

    ``overrides`` change single ``ContinualConfig`` fields. Reports old-task
    scores before and after and new-task scores after; with ``output_dir`` the
    model is saved as a normal model folder (+ ``continual_report.json``).
    Like ``train``, the folder appears only when everything succeeded, and the
    returned bundle is compiled with the optimizer that trained it.
    """
    cfg = with_overrides(config or ContinualConfig(), **overrides)
    if new_data.task != CLASSIFICATION or old_data.task != CLASSIFICATION:
        raise DataError("continual learning supports classification tasks")
    old_eval = old_data.test or old_data.validation
    new_eval = new_data.test or new_data.validation
    if not old_eval or not new_eval or not new_data.train:
        raise DataError("continual learning needs new-task train data and evaluation splits for both tasks")
    meta = read_metadata(model_dir)
    if meta["task"] != CLASSIFICATION:
        raise CheckpointError(f"{model_dir}: continual learning supports classification models, not {meta['task']}")
    if meta.get("head") or (meta.get("peft") and not meta["peft"].get("merged")):
        # The union-label head is rebuilt from the folder's plain BERT weights: adapters or a
        # zero-shot head would be silently dropped.
        kind = f"a {meta['head']} head" if meta.get("head") else "adapters"
        raise CheckpointError(f"{model_dir}: continual learning needs a fully fine-tuned (or merged LoRA) model "
                              f"folder; this one has {kind}")
    recipe = recipe_for(model_dir)
    cfg = dataclasses.replace(cfg, learning_rate=cfg.learning_rate or recipe.learning_rate(CLASSIFICATION),
                              batch_size=cfg.batch_size or recipe.batch_size)
    staging_context = staged_output(output_dir, overwrite=overwrite) if output_dir else contextlib.nullcontext()
    with staging_context as staging:   # entered before training: a clash fails fast
        old = ModelBundle.load(model_dir)
        encoder, old_labels = old.encoder, old.labels
        old_task_labels = list(old_labels.names)
        old_before = task_scores(old.predictor(), old_eval, old_task_labels)

        new_names = new_data.labels or sorted({ex.label for ex in new_data.train})
        labels = union_labels(old_labels, new_names)
        tf_keras.utils.set_random_seed(cfg.seed)
        fisher = fisher_diagonal(old.model, encoder, old_labels, old_data.train, max_examples=cfg.fisher_examples,
                                 seed=cfg.seed) if cfg.uses_ewc else {}
        old_weights = {weight_key(w): w.numpy() for w in old.model.weights}
        bundle = ModelBundle(expand_head(old.model, model_dir, old_labels, labels), encoder, labels, CLASSIFICATION,
                             {"source_checkpoint": meta.get("source_checkpoint"), "dataset": new_data.name,
                              "continual": {"from": os.path.abspath(model_dir), "old_task": old_data.name,
                                            "method": cfg.method}})

        train_examples, replayed = (rehearsal_mix(new_data.train, old_data.train, cfg.replay_fraction, cfg.seed)
                                    if cfg.uses_rehearsal else (list(new_data.train), 0))
        train_ds = make_dataset(train_examples, encoder, labels, CLASSIFICATION, batch_size=cfg.batch_size,
                                training=True, seed=cfg.seed)
        steps = cfg.epochs * batches_per_epoch(train_examples, encoder, CLASSIFICATION, cfg.batch_size)
        anchors = ewc_anchors(bundle.model, fisher, old_weights) if cfg.uses_ewc else []
        bundle.compile(learning_rate=cfg.learning_rate, total_steps=steps, warmup_ratio=cfg.warmup_ratio)
        trainer = EWCModel(bundle.model, anchors, cfg.ewc_lambda if cfg.uses_ewc else 0.0)
        trainer.compile(optimizer=bundle.model.optimizer)
        started = time.perf_counter()
        history = trainer.fit(train_ds, epochs=cfg.epochs, verbose=verbose)
        seconds = time.perf_counter() - started

        predictor = bundle.predictor()
        new_task_labels = [n for n in labels.names if n in set(new_names)]
        report = {"method": cfg.method, "config": asdict(cfg), "labels": labels.names,
                  "old_task": old_data.name, "new_task": new_data.name, "replayed_examples": replayed,
                  "train_examples": len(train_examples), "train_seconds": round(seconds, 1),
                  "ewc_anchored_weights": int(sum(int(np.prod(v.shape)) for v, _, _ in anchors)),
                  "old_before": old_before, "old_after": task_scores(predictor, old_eval, old_task_labels),
                  "new_after": task_scores(predictor, new_eval, new_task_labels)}
        report["old_forgetting"] = round(old_before["accuracy"] - report["old_after"]["accuracy"], 4)
        if staging:
            bundle.write(staging)
            write_report(staging, report, REPORT_FILE)
    if output_dir:
        bundle.directory = output_dir
    return ContinualResult(bundle, output_dir, report, dict(history.history))


def summarize(report: Dict[str, Any]) -> Dict[str, Any]:
    """The headline numbers of a ``continual_finetune`` report (one row of a comparison)."""
    return {"old_before": report["old_before"]["accuracy"], "old_after": report["old_after"]["accuracy"],
            "old_after_open_set": report["old_after"]["open_set_accuracy"],
            "new_after": report["new_after"]["accuracy"], "forgetting": report["old_forgetting"],
            "train_seconds": report["train_seconds"]}


def compare_methods(model_dir: str, new_data: TaskData, old_data: TaskData,
                    methods: Sequence[str] = ("none", "rehearsal", "ewc"), **settings) -> Dict[str, Dict]:
    """Run ``continual_finetune`` once per method from the same start; the with/without comparison.

    Nothing is saved (``output_dir`` is not accepted); returns ``{method: summarize(report)}``.
    """
    if "output_dir" in settings:
        raise ConfigError("compare_methods saves no model folders; run continual_finetune for the chosen method")
    for method in methods:  # an unknown method fails before any training
        ContinualConfig(method=method).validate()
    return {method: summarize(continual_finetune(model_dir, new_data, old_data, method=method, **settings).report)
            for method in methods}


_COLUMNS = (("old_before", "old before"), ("old_after", "old after"), ("old_after_open_set", "old open-set"),
            ("new_after", "new after"), ("forgetting", "forgetting"), ("train_seconds", "train s"))


def format_comparison(rows: Dict[str, Dict[str, Any]], old_task: str = "", new_task: str = "") -> str:
    """Plain-text table of ``summarize`` rows, one per method.

    Accuracies; "old after" is task-aware (argmax over the old labels),
    "old open-set" the argmax over every label; forgetting = before - after.
    """
    width = max([len("method")] + [len(m) for m in rows]) + 2
    lines = [f"old task {old_task} -> new task {new_task} (accuracy)"] if old_task or new_task else []
    lines.append(f"{'method':<{width}}" + "".join(f"{title:>13}" for _, title in _COLUMNS))
    for method, row in rows.items():
        cells = [f"{row[key]:>13.1f}" if key == "train_seconds" else f"{row[key]:>13.4f}" for key, _ in _COLUMNS]
        lines.append(f"{method:<{width}}" + "".join(cells))
    return "\n".join(lines)
