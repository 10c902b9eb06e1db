"""The values a run actually uses, and where each came from: the user, the checkpoint's recipe or the data.

Every recipe option a user leaves out (``None`` / ``auto`` in ``TrainConfig``)
is filled here, before any model is built:

- learning rate, batch size, warmup, weight decay: the checkpoint's recipe
  (``models.checkpoint_recipes``); the learning rate per task, or the PEFT
  rate with LoRA / adapters.
- model: MiniLM for text tasks, MobileNetV2 for image classification.
- image size (image classification): a ViT's own; for CNNs the median side of
  (up to 500 of) the training images, rounded up to a multiple of 32, within
  the recipe's range.
- max length: the ``length_percentile`` of the training texts' token lengths
  (special tokens included), rounded up to a multiple of 8, never above the
  recipe's cap or the checkpoint's position table. Short-text data stops
  paying for a fixed 128; long texts keep up to the cap.
- epochs ``auto``: the run trains until the task's validation score has not
  improved for ``early_stopping_patience`` epochs, under a cap that plans a
  number of optimizer steps growing with the number of classes (entity types
  for NER) -- ``updates_per_label`` each, within ``[min_updates,
  max_updates]`` -- so small or many-class data gets more passes and large
  data fewer. The learning rate decays linearly to 0 over that cap; a run
  that stops early first spends one more epoch annealing from its best
  weights to 0 (``training.callbacks.AnnealOnPlateau``), so every run ends
  annealed, and keeps that epoch unless an earlier one beats it on
  validation by more than one standard error. Warmup is at most one epoch,
  so it does not stretch with the cap.
  On small data an ``auto`` epoch is several passes over the training set
  (``passes_per_epoch``), so that patience and the cap count enough steps.

An explicit value always wins and is labelled ``set``. ``describe()`` is the
header line a run prints; ``as_dict()`` goes into the run's report.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfpipeline.config import (CLASSIFICATION, DEFAULT_CHECKPOINT, DEFAULT_IMAGE_CHECKPOINT, EMBEDDING,
                               IMAGE_CLASSIFICATION, NER, REGRESSION, TrainConfig)
from tfpipeline.config.train import IMAGE_AUGMENTATIONS, check_augmentation
from tfpipeline.data.examples import TaskData, TextExample
from tfpipeline.data.image_files import image_sizes
from tfpipeline.data.image_pipeline import image_batches_per_epoch
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pair_pipeline import pair_batches_per_epoch, pair_texts
from tfpipeline.data.pipeline import batches_per_epoch, sequence_lengths
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.models.checkpoint import resolve_checkpoint
from tfpipeline.models.checkpoint_recipes import Recipe, position_limit, recipe_for
from tfpipeline.models.image_model import native_image_size

USER = "set"
LENGTH_MULTIPLE = 8
MIN_AUTO_LENGTH = 16
IMAGE_SIZE_MULTIPLE = 32     # CNN strides: 32 is MobileNetV2's output stride
IMAGE_SIZE_SAMPLE = 500      # images whose headers are read to choose the size


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str


@dataclass
class EffectiveRecipe:
    """A ``TrainConfig`` with every ``auto`` field filled, plus the source of each recipe value."""

    config: TrainConfig
    settings: Dict[str, Setting]
    auto_epochs: bool
    steps_per_epoch: int        # optimizer steps in one Keras epoch (passes_per_epoch passes over the data)
    recipe: Recipe
    train_lengths: Optional[List[int]] = field(default=None, repr=False)   # token lengths at <= max_length
    passes_per_epoch: int = 1   # > 1 only for small data with epochs auto (see ``passes_per_epoch``)

    def describe(self) -> str:
        s = self.settings
        epochs = s["epochs"]
        epochs_text = (f"epochs auto (at most {epochs.value}: {epochs.source}; "
                       f"{anneal_rule(self.config.early_stopping_patience)})" if self.auto_epochs
                       else f"epochs {epochs.value} ({epochs.source})")
        size = (f"image size {s['image_size'].value} ({s['image_size'].source})" if "image_size" in s
                else f"max length {s['max_length'].value} ({s['max_length'].source})")
        model = f"model {s['model'].value} ({s['model'].source}), " if "model" in s else ""
        augmentation = s.get("augmentation")
        text_augmentation = (f", augmentation {augmentation.value} at rate {self.config.augmentation_rate:g} "
                             f"({augmentation.source})" if augmentation and "image_size" not in s
                             and augmentation.value != "none" else "")
        return (f"{model}lr {short_number(s['learning_rate'].value)} ({s['learning_rate'].source}), "
                f"batch {s['batch_size'].value} ({s['batch_size'].source}), {size}, "
                f"{epochs_text}, warmup {s['warmup_ratio'].value:.3g} ({s['warmup_ratio'].source}), "
                f"weight decay {s['weight_decay'].value:g} ({s['weight_decay'].source}){text_augmentation}")

    def as_dict(self) -> Dict[str, Dict[str, Any]]:
        return settings_dict(self.settings)


def settings_dict(settings: Dict[str, Setting]) -> Dict[str, Dict[str, Any]]:
    """``{name: {"value", "source"}}``: how reports (JSON, report.html) record a recipe."""
    return {name: {"value": setting.value, "source": setting.source} for name, setting in settings.items()}


def fill_settings(config: Any, defaults: Dict[str, Any], source: str) -> Dict[str, Setting]:
    """``config``'s value for each name in ``defaults`` (labelled ``set``), or the default (labelled ``source``)
    where the config leaves it ``None``."""
    return {name: Setting(getattr(config, name), USER) if getattr(config, name) is not None
            else Setting(default, source) for name, default in defaults.items()}


def anneal_rule(patience: int) -> str:
    """How ``AnnealOnPlateau`` reads ``early_stopping_patience``, in words."""
    if patience <= 0:
        return "no early stop"
    return f"patience {patience}, then one epoch annealing from the best weights"


def short_number(value: float) -> str:
    """1e-4 rather than 0.0001: how learning rates are written in papers and configs."""
    return np.format_float_scientific(value, trim="-", exp_digits=1) if 0 < abs(value) < 1e-3 else f"{value:g}"


def label_units(labels: LabelMap, task: str) -> int:
    """Classes, or entity types for NER (B-/I- tags of one type count once; O does not count)."""
    if task != NER:
        return len(labels)
    return max(len({name.split("-", 1)[-1] for name in labels.names if name != "O"}), 1)


def auto_max_length(lengths: Sequence[int], recipe: Recipe, limit: int) -> int:
    """The recipe's percentile of ``lengths``, rounded up to a multiple of 8, within [16, limit]."""
    if not lengths:
        return min(limit, MIN_AUTO_LENGTH)
    wanted = float(np.percentile(np.asarray(lengths), recipe.length_percentile))
    rounded = int(math.ceil(wanted / LENGTH_MULTIPLE) * LENGTH_MULTIPLE)
    return max(MIN_AUTO_LENGTH, min(rounded, limit))


def epoch_cap(steps_per_epoch: int, units: int, recipe: Recipe) -> int:
    """Most epochs an ``auto`` run may take: the planned optimizer steps over the steps per epoch."""
    planned = min(max(recipe.updates_per_label * units, recipe.min_updates), recipe.max_updates)
    return min(max(math.ceil(planned / max(steps_per_epoch, 1)), recipe.min_epochs), recipe.max_epochs)


def passes_per_epoch(steps_per_pass: int, recipe: Recipe) -> int:
    """Passes over the training data that make one ``auto`` epoch: at least ``min_updates / max_epochs`` steps.

    Early stopping, patience and the epoch cap count epochs. On a small
    training set one pass is a handful of optimizer steps (50 examples at
    batch 32: two), so "no better for two epochs" would stop a run after a few
    steps of warmup, and the ``max_epochs`` cap would allow a few dozen steps
    where the recipe plans at least ``min_updates``. Repeating the data within
    an epoch keeps every validation check ``min_updates / max_epochs`` steps
    apart, so the cap can reach the planned updates. Large data: one pass.
    """
    wanted = math.ceil(recipe.min_updates / recipe.max_epochs)
    return max(1, math.ceil(wanted / max(steps_per_pass, 1)))


def auto_image_size(sizes: Sequence[Tuple[int, int]], recipe: Recipe) -> int:
    """Median side of the sampled images (width and height pooled), rounded up to a multiple of 32,
    within the recipe's range."""
    low, high = recipe.image_sizes
    if not sizes:
        return high
    median = float(np.median([side for size in sizes for side in size]))
    rounded = int(math.ceil(median / IMAGE_SIZE_MULTIPLE) * IMAGE_SIZE_MULTIPLE)
    return max(low, min(rounded, high))


def default_model(task: str) -> str:
    return DEFAULT_IMAGE_CHECKPOINT if task == IMAGE_CLASSIFICATION else DEFAULT_CHECKPOINT


def resolve_recipe(cfg: TrainConfig, data: TaskData, labels: LabelMap, *, replicas: int = 1,
                   static_shapes: bool = False) -> EffectiveRecipe:
    """Fill ``cfg``'s ``auto`` fields for training on ``data`` (see the module docstring)."""
    settings: Dict[str, Setting] = {}

    def pick(name: str, default: Any, why: str) -> Any:
        given = getattr(cfg, name)
        settings[name] = Setting(given, USER) if given is not None else Setting(default, why)
        return settings[name].value

    model = pick("model", default_model(data.task), f"{data.task} default")
    recipe = recipe_for(model, data.task)
    source = f"{recipe.name} recipe"
    pick("learning_rate", recipe.learning_rate(data.task, cfg.peft), f"{source}, {cfg.peft or data.task}")
    batch_size = pick("batch_size", recipe.batch_size, source)
    pick("weight_decay", recipe.weight_decay, source)
    augmentation = pick("augmentation", IMAGE_AUGMENTATIONS[0] if data.task == IMAGE_CLASSIFICATION else "none",
                        f"{data.task} default")
    check_augmentation(augmentation, data.task)
    if data.task == IMAGE_CLASSIFICATION:
        native = native_image_size(model)
        if native is not None:
            pick("image_size", native, "the checkpoint's own")
        else:
            sizes = image_sizes(data.train, limit=IMAGE_SIZE_SAMPLE)
            pick("image_size", auto_image_size(sizes, recipe),
                 f"median side of {len(sizes):,} training images, range {recipe.image_sizes[0]}-"
                 f"{recipe.image_sizes[1]}")
        steps = image_batches_per_epoch(len(data.train), batch_size * replicas, static_shapes=static_shapes)
        lengths = None
    else:
        steps, lengths = _text_lengths_and_steps(cfg, data, recipe, source, model, batch_size * replicas,
                                                 static_shapes, pick)
    auto_epochs = cfg.epochs is None
    passes = passes_per_epoch(steps, recipe) if auto_epochs else 1
    units = label_units(labels, data.task)
    cap = epoch_cap(steps * passes, units, recipe)
    kind = {NER: "entity types", EMBEDDING: "similarity output", REGRESSION: "targets"}.get(data.task, "classes")
    per_epoch = f"{steps * passes} steps/epoch" + (f" ({passes} passes over the small training set)"
                                                   if passes > 1 else "")
    pick("epochs", cap, f"cap for {per_epoch} and {units} {kind}")
    warmup_why = f"{source}, at most one epoch" if auto_epochs else source
    pick("warmup_ratio", min(recipe.warmup_ratio, 1.0 / cap) if auto_epochs else recipe.warmup_ratio, warmup_why)

    filled = dataclasses.replace(cfg, **{name: s.value for name, s in settings.items()})
    return EffectiveRecipe(filled.validate(), settings, auto_epochs, steps * passes, recipe, lengths, passes)


def _text_lengths_and_steps(cfg: TrainConfig, data: TaskData, recipe: Recipe, source: str, model: str,
                            global_batch: int, static_shapes: bool,
                            pick: Callable[[str, Any, str], Any]) -> Tuple[int, Optional[List[int]]]:
    """Text tasks: the max length (picked), the steps per epoch and the training texts' token lengths."""
    checkpoint = resolve_checkpoint(model)
    limit = min(recipe.max_length_cap, position_limit(checkpoint))
    if data.task == EMBEDDING:   # queries and documents share the encoder: one length for all the pair texts
        if cfg.max_length is None:
            texts = [TextExample(text) for text in pair_texts(data.train)]
            lengths = sequence_lengths(texts, TextEncoder.from_directory(checkpoint, max_length=limit), CLASSIFICATION)
            pick("max_length", auto_max_length(lengths, recipe, limit),
                 f"p{recipe.length_percentile:g} of {len(texts):,} query/document lengths, cap {limit}")
        else:
            pick("max_length", None, source)
        return pair_batches_per_epoch(len(data.train), global_batch, static_shapes=static_shapes), None
    lengths = None
    if cfg.max_length is None:
        lengths = sequence_lengths(data.train, TextEncoder.from_directory(checkpoint, max_length=limit), data.task)
        max_length = pick("max_length", auto_max_length(lengths, recipe, limit),
                          f"p{recipe.length_percentile:g} of {len(lengths):,} training lengths, cap {limit}")
    else:
        max_length = pick("max_length", None, source)

    encoder = TextEncoder.from_directory(checkpoint, max_length=max_length)
    if lengths is None and cfg.bucket and not static_shapes:
        lengths = sequence_lengths(data.train, encoder, data.task)
    if lengths is not None:   # one tokenization pass serves the length choice, the step count and the dataset
        lengths = [min(n, max_length) for n in lengths]
    steps = batches_per_epoch(data.train, encoder, data.task, global_batch,
                              static_shapes=static_shapes, bucket=cfg.bucket, lengths=lengths)
    return steps, lengths

