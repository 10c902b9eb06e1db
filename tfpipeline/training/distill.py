"""Knowledge distillation: a fine-tuned teacher model folder -> a shallower student model folder.

The student is the teacher's architecture with fewer encoder layers,
initialised from the teacher's embeddings, ``num_layers`` of its encoder
layers and its pooler/head, so it starts close to the teacher. Which layers:
``make_student`` copies the *bottom* N by default; ``distill`` defaults to
``alternate`` (evenly spaced, ending with the top layer, as DistilBERT does)
because with the bottom N of MiniLM the head reads a middle-layer [CLS]
state that is the same for every input: measured on rotten_tomatoes (teacher
85.3%, 6 -> 3 layers, 1,000 examples, 1 epoch) the bottom-3 student stayed at
51% (chance, hard loss ln 2) even at lr 3e-4, the alternate one reached 75.3%.

``Distiller`` trains it on ``alpha * CE(labels) + (1 - alpha) * T^2 *
KL(softmax(teacher / T) || softmax(student / T))`` (Hinton et al. 2015; the
``T^2`` keeps soft-target gradients on the same scale as the hard ones).
The result is a ``ModelBundle`` saved as an ordinary model folder that loads,
evaluates, exports and serves like any trained model.

Works for classification and NER (token-level losses skip the ``-100``
positions); BERT-family backbones whose config has ``num_hidden_layers``.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tf_keras

from tfpipeline.bundle import ModelBundle, read_metadata
from tfpipeline.config import TEXT_TASKS, DistillConfig
from tfpipeline.data.examples import TaskData
from tfpipeline.data.pipeline import batches_per_epoch, make_dataset
from tfpipeline.data.sources import data_from_options
from tfpipeline.data.tokenization import IGNORE_INDEX
from tfpipeline.errors import CheckpointError, ConfigError, DataError
from tfpipeline.evaluation.evaluate import evaluate_examples
from tfpipeline.evaluation.html_report import write_html_report
from tfpipeline.models.checkpoint_recipes import recipe_for
from tfpipeline.models.losses import MaskedAccuracy
from tfpipeline.models.peft import applied_method
from tfpipeline.models.task_model import TaskModel, count_params
from tfpipeline.models.weights import weight_key
from tfpipeline.staging import staged_output
from tfpipeline.training.effective_recipe import fill_settings, settings_dict
from tfpipeline.training.trainer import TrainResult, fit_verbosity, write_report

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- student initialisation
def encoder_depth(model: TaskModel) -> int:
    config = model.backbone.config
    if not hasattr(config, "num_hidden_layers"):
        raise CheckpointError(f"{type(model.backbone).__name__}: config has no num_hidden_layers; "
                              "distillation supports BERT-family encoders")
    return int(config.num_hidden_layers)


LAYER_CHOICES = ("bottom", "alternate")
_LAYER_RE = re.compile(r"(/layer_\._)(\d+)(/)")


def student_layers(depth: int, num_layers: int, choice: str = "bottom") -> List[int]:
    """Teacher layer indices a student copies: the bottom ``num_layers`` or evenly spaced up to the top.

    ``alternate`` (DistilBERT-style; 6 -> 3 gives [1, 3, 5]) keeps the top
    layer, whose [CLS] state the pooler/head was trained on. With ``bottom``
    the head sees a middle layer's [CLS], which in MiniLM is nearly the same
    vector for every input, so the student starts from constant predictions
    and may not recover in a short run (numbers in the module docstring).
    """
    if not 1 <= num_layers < depth:
        raise ConfigError(f"num_layers must be in [1, {depth - 1}] for a {depth}-layer teacher, got {num_layers}")
    if choice == "bottom":
        return list(range(num_layers))
    if choice == "alternate":
        return [round((i + 1) * depth / num_layers) - 1 for i in range(num_layers)]
    raise ConfigError(f"layer choice must be one of {', '.join(LAYER_CHOICES)}, not {choice!r}")


def make_student(teacher: TaskModel, num_layers: int,
                 layers: Union[str, Sequence[int]] = "bottom") -> Tuple[TaskModel, List[int]]:
    """A ``num_layers``-deep copy of ``teacher`` and the teacher layers it was initialised from.

    Embeddings, the chosen encoder layers, pooler and head are copied.
    ``layers``: "bottom" (the teacher's first ``num_layers``), "alternate",
    or explicit teacher layer indices. Every student weight must exist in the
    teacher under the same name (layer index mapped), so a mismatch is an
    error rather than a silently random weight.
    """
    depth = encoder_depth(teacher)
    chosen = student_layers(depth, num_layers, layers) if isinstance(layers, str) else [int(i) for i in layers]
    if len(chosen) != num_layers or not all(0 <= i < depth for i in chosen):
        raise ConfigError(f"layers {chosen}: need {num_layers} indices in [0, {depth - 1}]")
    if applied_method(teacher):
        log.warning("teacher has unmerged PEFT adapters: the student copies the base weights only")
    config = copy.deepcopy(teacher.backbone.config)
    config.num_hidden_layers = int(num_layers)
    backbone = type(teacher.backbone)(config)
    backbone(backbone.dummy_inputs, training=False)
    student = TaskModel(backbone, teacher.task).build_with_dummy()

    def teacher_name(student_weight) -> str:
        return _LAYER_RE.sub(lambda m: f"{m.group(1)}{chosen[int(m.group(2))]}{m.group(3)}",
                             weight_key(student_weight), count=1)

    source = {weight_key(w): w for w in teacher.weights}
    missing = [w.name for w in student.weights if teacher_name(w) not in source]
    if missing:
        raise CheckpointError(f"student weights not found in the teacher: {missing[:3]}")
    for w in student.weights:
        w.assign(source[teacher_name(w)])
    return student, chosen


# ---------------------------------------------------------------- loss and trainer
def distillation_loss(labels: tf.Tensor, student_logits: tf.Tensor, teacher_logits: tf.Tensor, *,
                      temperature: float, alpha: float):
    """(total, hard, soft) losses, averaged over examples (or over labelled tokens for NER)."""
    labels = tf.cast(labels, tf.int32)
    weights = tf.cast(tf.not_equal(labels, IGNORE_INDEX), tf.float32)
    safe = tf.where(labels == IGNORE_INDEX, 0, labels)
    hard = tf_keras.losses.sparse_categorical_crossentropy(safe, student_logits, from_logits=True)
    t = tf.cast(temperature, tf.float32)
    teacher_logp = tf.nn.log_softmax(teacher_logits / t, axis=-1)
    student_logp = tf.nn.log_softmax(student_logits / t, axis=-1)
    kl = tf.reduce_sum(tf.exp(teacher_logp) * (teacher_logp - student_logp), axis=-1)
    count = tf.maximum(tf.reduce_sum(weights), 1.0)
    hard = tf.reduce_sum(hard * weights) / count
    soft = tf.reduce_sum(kl * weights) / count * t * t
    return alpha * hard + (1.0 - alpha) * soft, hard, soft


class Distiller(tf_keras.Model):
    """Trains ``student`` to match ``teacher`` (frozen) and the gold labels; ``call`` is the student.

    Compile it with the optimizer only (``compile(optimizer=...)``): the loss is
    ``distillation_loss`` and the metrics are its parts plus accuracy over
    labelled positions.
    """

    def __init__(self, student: TaskModel, teacher: TaskModel, *, temperature: float = 2.0,
                 alpha: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.loss_tracker = tf_keras.metrics.Mean(name="loss")
        self.hard_tracker = tf_keras.metrics.Mean(name="hard_loss")
        self.soft_tracker = tf_keras.metrics.Mean(name="soft_loss")
        self.accuracy = MaskedAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.hard_tracker, self.soft_tracker, self.accuracy]

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _kd_losses(self, y, student_logits, teacher_logits):
        return distillation_loss(y, student_logits, teacher_logits, temperature=self.temperature,
                                 alpha=self.alpha)

    def _record(self, y, logits, total, hard, soft):
        self.loss_tracker.update_state(total)
        self.hard_tracker.update_state(hard)
        self.soft_tracker.update_state(soft)
        self.accuracy.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data
        teacher_logits = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            total, hard, soft = self._kd_losses(y, logits, teacher_logits)
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return self._record(y, logits, total, hard, soft)

    def test_step(self, data):
        x, y = data
        logits = self.student(x, training=False)
        return self._record(y, logits, *self._kd_losses(y, logits, self.teacher(x, training=False)))


class KeepBestWeights(tf_keras.callbacks.Callback):
    """Remember the weights of the best epoch (by ``monitor``) in memory and restore them at the end."""

    def __init__(self, target: tf_keras.Model, monitor: str = "val_accuracy"):
        super().__init__()
        self.target, self.monitor = target, monitor
        self.best, self.best_weights, self.best_epoch = -float("inf"), None, -1

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_weights, self.best_epoch = float(value), self.target.get_weights(), epoch

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.target.set_weights(self.best_weights)


# ---------------------------------------------------------------- end to end
def _headline(report: Dict[str, Any]) -> Dict[str, Any]:
    keys = ("accuracy", "macro_f1", "f1", "precision", "recall")
    return {k: report[k] for k in keys if k in report}


def distill(config: DistillConfig, *, data: Optional[TaskData] = None) -> TrainResult:
    """Distil the model folder ``config.teacher_dir`` into a ``config.student_layers`` student.

    ``data`` defaults to what ``config``'s data options name, else the dataset
    the teacher folder records. ``student_init`` picks the teacher layers the
    student starts from (see ``student_layers``). The best epoch by validation
    accuracy is kept; the report (``eval_report.json``) includes the teacher's
    scores on the same split. The student bundle comes back compiled with the
    optimizer that trained it (its ``iterations`` = the schedule's steps).
    """
    cfg = config.validate()
    say = (lambda *a, **k: None) if cfg.quiet else print
    meta = read_metadata(cfg.teacher_dir)
    if meta["task"] not in TEXT_TASKS:
        raise CheckpointError(f"{cfg.teacher_dir}: distillation drops BERT encoder layers; this is a "
                              f"{meta['task']} model")
    recipe = recipe_for(cfg.teacher_dir)   # the student has the teacher's width, so the same kind of recipe
    chosen_recipe = fill_settings(cfg, {"learning_rate": recipe.learning_rate(meta["task"]),
                                        "batch_size": recipe.batch_size}, f"{recipe.name} recipe")
    cfg = dataclasses.replace(cfg, **{name: setting.value for name, setting in chosen_recipe.items()})
    if meta.get("head"):
        raise CheckpointError(f"{cfg.teacher_dir}: the teacher must be a fine-tuned task model; this is a "
                              f"{meta['head']} (prompt-based) classifier")
    with staged_output(cfg.output_dir, overwrite=cfg.overwrite) as staging:   # a clash fails before any work
        data = data or data_from_options(cfg, task=meta["task"], seed=cfg.seed, recorded=meta,
                                         recorded_in=cfg.teacher_dir)
        if data.task != meta["task"]:
            raise DataError(f"{data.name} is a {data.task} dataset but the teacher at {cfg.teacher_dir} "
                            f"is {meta['task']}")
        if not data.train or not data.validation:
            raise DataError(f"{data.name}: distillation needs train and validation examples")
        eval_split = data.test or data.validation
        teacher = ModelBundle.load(cfg.teacher_dir, max_length=cfg.max_length)
        encoder, labels, task = teacher.encoder, teacher.labels, teacher.task
        tf_keras.utils.set_random_seed(cfg.seed)
        student, chosen = make_student(teacher.model, cfg.student_layers, cfg.student_init)
        train_ds = make_dataset(data.train, encoder, labels, task, batch_size=cfg.batch_size, training=True,
                                seed=cfg.seed)
        val_ds = make_dataset(data.validation, encoder, labels, task, batch_size=cfg.batch_size)
        steps = cfg.epochs * batches_per_epoch(data.train, encoder, task, cfg.batch_size)
        settings = {"teacher_dir": os.path.abspath(cfg.teacher_dir), "teacher_layers": encoder_depth(teacher.model),
                    "student_layers": cfg.student_layers, "initialised_from_teacher_layers": chosen,
                    "temperature": cfg.temperature, "alpha": cfg.alpha, "epochs": cfg.epochs,
                    "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size}
        bundle = ModelBundle(student, encoder, labels, task, {"source_checkpoint": meta.get("source_checkpoint"),
                                                              "dataset": data.name, "distillation": settings})
        # The student is compiled like any trained model; the Distiller steps its optimizer.
        bundle.compile(learning_rate=cfg.learning_rate, total_steps=steps, warmup_ratio=cfg.warmup_ratio)
        distiller = Distiller(student, teacher.model, temperature=cfg.temperature, alpha=cfg.alpha)
        distiller.compile(optimizer=student.optimizer)
        params = count_params(student)
        say(f"[tfpipeline] distilling {settings['teacher_layers']}-layer teacher -> {cfg.student_layers}-layer "
            f"student ({params['total']:,} params) on {data.name}: train {len(data.train)}, T={cfg.temperature}, "
            f"alpha={cfg.alpha}")
        best = KeepBestWeights(student)
        started = time.perf_counter()
        history = distiller.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=[best],
                                verbose=0 if cfg.quiet else fit_verbosity(1))
        train_seconds = time.perf_counter() - started
        settings["best_epoch"] = best.best_epoch + 1

        report = evaluate_examples(bundle.predictor(batch_size=max(cfg.batch_size, 64)), eval_split)
        teacher_report = evaluate_examples(teacher.predictor(), eval_split)
        report.update(split="test" if data.test else "validation", dataset=data.name,
                      train_seconds=round(train_seconds, 1), trainable_params=params["trainable"],
                      total_params=params["total"], teacher=_headline(teacher_report), distillation=settings)
        bundle.write(staging)
        write_report(staging, report)
        write_html_report(staging, report, history=dict(history.history), recipe=settings_dict(chosen_recipe))
    bundle.directory = cfg.output_dir
    say(f"[tfpipeline] student {_headline(report)} vs teacher {report['teacher']} "
        f"on {report['split']} ({data.name}); written to {cfg.output_dir}")
    return TrainResult(bundle, cfg.output_dir, report, dict(history.history), params, train_seconds)
