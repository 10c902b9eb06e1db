"""The standard callback set (early stopping, best checkpoint, TensorBoard, CSV log) and the
per-task validation score that keeps the best epoch and decides when to stop."""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence

import tf_keras

from tfpipeline.data.examples import CLASSIFICATION, IMAGE_CLASSIFICATION, NER, REGRESSION
from tfpipeline.evaluation.evaluate import evaluate_examples
from tfpipeline.evaluation.reports import entity_count
from tfpipeline.inference import Predictor
from tfpipeline.models.optimization import AnnealableWarmupLinearDecay, schedule_of

BEST_WEIGHTS = os.path.join("checkpoints", "best")
ENTITY_F1 = "val_entity_f1"
# The validation score each task keeps its best epoch by (and stops on): what its report leads with.
# NER token accuracy is ~0.9 for a model that tags everything O, so NER uses seqeval entity F1.
SELECTION_METRIC: Dict[str, str] = {CLASSIFICATION: "val_accuracy", IMAGE_CLASSIFICATION: "val_accuracy",
                                    NER: ENTITY_F1, REGRESSION: "val_pearson"}
METRIC_NAMES = {"val_accuracy": "validation accuracy", ENTITY_F1: "validation entity F1",
                "val_pearson": "validation Pearson r"}


def scored_items(examples: Sequence, task: str) -> int:
    """How many items a validation score is measured on: gold entities for NER, else examples."""
    if task == NER:
        return entity_count([ex.tags or () for ex in examples])
    return len(examples)


def standard_error(monitor: str, score: Optional[float], items: int) -> float:
    """One standard error of a validation ``score`` measured on ``items`` items (0 when unknown).

    Accuracy and entity F1 are read as proportions of ``items`` (examples,
    gold entities): sqrt(p (1 - p) / n). Pearson r: (1 - r^2) / sqrt(n - 1).
    Rough for F1 (a ratio, not a proportion), but the right size: it says
    how far apart two epochs' scores must be before validation can tell them
    apart (212 articles at 97%: 1.2 points; 538 questions at 95%: 0.9).
    """
    if score is None or items <= 1 or not math.isfinite(score):
        return 0.0
    if monitor == "val_pearson":
        return (1.0 - min(score * score, 1.0)) / math.sqrt(items - 1)
    p = min(max(score, 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / items)


class ValidationEntityF1(tf_keras.callbacks.Callback):
    """Adds ``val_entity_f1`` (seqeval, strict spans, as in the final report) to each epoch's logs.

    Must run before the callbacks that read it (checkpoint, early stopping):
    ``default_callbacks`` puts it first.
    """

    def __init__(self, predictor: Predictor, examples: Sequence):
        super().__init__()
        self.predictor, self.examples = predictor, list(examples)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.examples:
            logs[ENTITY_F1] = evaluate_examples(self.predictor, self.examples)["f1"]


class StopWhenStalled(tf_keras.callbacks.Callback):
    """Early stopping on a validation score (higher is better) that does not give up before learning starts.

    Stops after ``patience`` epochs without a new best ``monitor``. An epoch
    whose score is still 0 does not count: an NER model tags everything ``O``
    (entity F1 exactly 0) for its first epochs on small or hard data while its
    loss falls, and stopping there kept an empty model. The epoch cap bounds
    such runs. ``stopped_early`` tells the summary why training ended.
    ``resume_after`` continues the count of an interrupted run.
    """

    def __init__(self, monitor: str, patience: int):
        super().__init__()
        self.monitor, self.patience = monitor, patience
        self.past: List[float] = []

    def resume_after(self, scores: Sequence[float]) -> None:
        """The ``monitor`` scores of the epochs an interrupted run already ran: counting continues from them."""
        self.past = list(scores)

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.stopped_early = float("-inf"), 0, False
        for score in self.past:
            self.count(score)

    def count(self, score: float) -> bool:
        """Record one epoch's score; True when patience has run out."""
        if score > self.best:
            self.best, self.wait = score, 0
        elif score > 0:
            self.wait += 1
            return self.wait >= self.patience
        return False

    def on_epoch_end(self, epoch, logs=None):
        score = (logs or {}).get(self.monitor)
        if score is not None and self.count(score):
            self.model.stop_training, self.stopped_early = True, True


class AnnealOnPlateau(StopWhenStalled):
    """``epochs: auto``: early stopping that ends on an annealed model.

    The learning rate decays over the epoch cap. When the validation score has
    not improved for ``patience`` epochs (zero scores do not count, see
    ``StopWhenStalled``), training does not just stop: one last epoch starts
    again from the best epoch's weights (kept in memory) and takes the planned
    rate linearly to 0 (``AnnealableWarmupLinearDecay.start_anneal``); then it
    stops. Runs that reach the cap are already annealed by the planned decay,
    so they are unchanged.

    Which epoch is kept: the annealed one, unless an earlier epoch beats it on
    validation by more than one standard error (``standard_error`` of the best
    score over ``validation_items``). Why not simply the highest score: the
    best epoch is the maximum of several noisy validation scores, so its lead
    over the single annealed score is partly luck (selection bias), while
    annealing to a rate of 0 is what the tuned fixed-length recipes end on.
    Measured on ``trec_questions`` (538 validation questions, two seeds): the
    best epoch led the annealed one by 4 and 3 questions on validation, and
    the annealed model scored 1.5 and 0.7 points higher on the test split.
    The annealed weights then replace this process's best checkpoint,
    ``checkpoint_file``. ``annealed``, ``restored_from`` and ``kept``
    (0-based epochs, or None) tell the summary what happened; ``tolerance``
    is the standard error the annealed epoch was kept within.
    After ``resume_after`` the best weights of the epochs before the
    interruption come from ``best_weights_file`` (the best checkpoint), with
    the current optimizer state kept as it would have been.
    """

    def __init__(self, monitor: str, patience: int, max_epochs: int, *, validation_items: int = 0,
                 checkpoint_file: Optional[str] = None):
        super().__init__(monitor, patience)
        self.max_epochs, self.validation_items, self.checkpoint_file = max_epochs, validation_items, checkpoint_file
        self.best_weights_file: Optional[str] = None   # read on resume: the chief's checkpoint, on every worker

    def resume_after(self, scores: Sequence[float], best_weights_file: Optional[str] = None) -> None:
        super().resume_after(scores)
        self.best_weights_file = best_weights_file

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.stopped_early = float("-inf"), 0, False
        self.best_weights, self.best_epoch, self.restored_from, self.annealed = None, None, None, None
        self.kept, self.tolerance = None, None
        for epoch, score in enumerate(self.past):
            self.record(epoch, score)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.annealed:
            return
        schedule = schedule_of(self.model.optimizer)
        if not isinstance(schedule, AnnealableWarmupLinearDecay):
            raise TypeError("AnnealOnPlateau needs a model compiled with anneal_steps (AnnealableWarmupLinearDecay)")
        if self.best_weights is None and self.best_epoch is not None and self.best_weights_file:
            self.best_weights = self.weights_from_file(self.best_weights_file)
        if self.best_weights is not None and self.best_epoch != epoch - 1:
            self.model.set_weights(self.best_weights)
            self.restored_from = self.best_epoch
        schedule.start_anneal(int(self.model.optimizer.iterations.numpy()))

    def on_epoch_end(self, epoch, logs=None):
        if self.annealed is not None:
            self.model.stop_training = self.stopped_early = True
            self.choose_kept(epoch, (logs or {}).get(self.monitor))
            return
        if self.record(epoch, (logs or {}).get(self.monitor)):
            self.best_weights = self.model.get_weights()

    def record(self, epoch: int, score: Optional[float]) -> bool:
        """Record one epoch's score (and whether to anneal next); True when it is a new best."""
        improved = score is not None and score > self.best
        if improved:
            self.best, self.wait, self.best_epoch = score, 0, epoch
        elif score is not None and score > 0:
            self.wait += 1
        if self.patience > 0 and self.wait >= self.patience and epoch + 1 < self.max_epochs:
            self.annealed = epoch + 1
        return improved

    def choose_kept(self, epoch: int, score: Optional[float]) -> None:
        """After the annealed ``epoch``: keep it unless the best epoch leads by more than one standard error."""
        self.kept = self.best_epoch
        if score is None or self.best_epoch is None:
            return
        if score > self.best:     # a new best: the checkpoint callback saves it
            self.kept = epoch
            return
        tolerance = standard_error(self.monitor, self.best, self.validation_items)
        if self.best - score <= tolerance:
            self.kept, self.tolerance = epoch, tolerance
            if self.checkpoint_file:
                self.model.save_weights(self.checkpoint_file)

    def weights_from_file(self, path: str) -> list:
        """The model weights saved in ``path``, leaving the model and its optimizer state as they are."""
        weights, optimizer_state = self.model.get_weights(), [v.numpy() for v in self.model.optimizer.variables]
        self.model.load_weights(path)
        saved = self.model.get_weights()
        self.model.set_weights(weights)
        for variable, value in zip(self.model.optimizer.variables, optimizer_state):
            variable.assign(value)
        return saved


def default_callbacks(run_dir: str, *, monitor: str = "val_accuracy", mode: str = "max", patience: int = 2,
                      first: Sequence[tf_keras.callbacks.Callback] = (),
                      stopper: Optional[tf_keras.callbacks.Callback] = None,
                      past: Optional[Sequence[Dict[str, float]]] = None) -> List[tf_keras.callbacks.Callback]:
    """Callbacks for ``fit``: the best weights (by ``monitor``) land in ``run_dir/checkpoints/best``.

    ``first`` are callbacks that add ``monitor`` to the logs (e.g. ``ValidationEntityF1``).
    ``stopper`` replaces the early stopping built from ``patience`` (e.g. ``AnnealOnPlateau``).
    ``past`` (a resumed run, ``training.backup``): the logs of the epochs already run; the best
    checkpoint must beat their best score, history.csv grows, early stopping counts them.
    """
    scores = [row[monitor] for row in past or () if not math.isnan(row.get(monitor, math.nan))]
    threshold = (max(scores) if mode == "max" else min(scores)) if scores else None
    callbacks = list(first) + [
        tf_keras.callbacks.ModelCheckpoint(os.path.join(run_dir, BEST_WEIGHTS), monitor=monitor, mode=mode,
                                           save_best_only=True, save_weights_only=True,
                                           initial_value_threshold=threshold),
        tf_keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "logs"), update_freq="epoch"),
        tf_keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=past is not None),
    ]
    if stopper is None and patience and patience > 0:
        stopper = StopWhenStalled(monitor, patience) if mode == "max" else \
            tf_keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    if stopper is not None:
        if past and isinstance(stopper, StopWhenStalled) and not stopper.past:
            stopper.resume_after([row.get(monitor, math.nan) for row in past])
        callbacks.insert(len(first), stopper)
    return callbacks
