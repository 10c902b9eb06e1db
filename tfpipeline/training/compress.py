"""Compression: magnitude pruning during a short fine-tune, and the prune -> save -> TFLite -> evaluate workflow.

Pruning uses tensorflow-model-optimization (optional dependency, imported only
here and only when pruning) on the encoder's ``Dense`` kernels with a
``PolynomialDecay`` sparsity schedule during a short fine-tune; the pruning
wrappers are removed afterwards so the model folder is a plain (sparse) BERT
again. Sparse kernels do not make dense TFLite/CPU kernels faster; they make
the weights compress (``zipped_size``) for storage and download.

``compress`` is what ``tfpipeline compress`` runs: optional pruning (saved as
``<output>/pruned_model``), TFLite export (``tfpipeline.export.tflite``) and
scoring of the .tflite against the float model
(``tfpipeline.evaluation.tflite``), summarised in ``compression_report.json``.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tf_keras

from tfpipeline.bundle import ModelBundle, read_metadata
from tfpipeline.config import CompressConfig
from tfpipeline.data.examples import CLASSIFICATION, TaskData
from tfpipeline.data.pipeline import batches_per_epoch, make_dataset
from tfpipeline.data.sources import data_from_options
from tfpipeline.errors import CheckpointError, ConfigError, DataError, ExportError, MissingPackageError
from tfpipeline.evaluation.tflite import evaluate_tflite
from tfpipeline.export.tflite import TFLiteClassifier, export_tflite, tflite_location, zipped_size
from tfpipeline.models.peft import AdapterDense, LoraDense
from tfpipeline.training.trainer import write_report

TFMOT_PIP = "tensorflow-model-optimization==0.8.1"
REPORT_FILE = "compression_report.json"
PRUNED_MODEL = "pruned_model"


def _tfmot():
    try:
        import tensorflow_model_optimization as tfmot   # optional heavy dependency
    except ImportError:
        raise MissingPackageError(f"pruning needs `pip install {TFMOT_PIP}`") from None
    return tfmot


def _is_pruning_wrapper(layer) -> bool:
    return type(layer).__name__ == "PruneLowMagnitude"   # by name: tfmot may not be installed


def encoder_dense_slots(model) -> List[Tuple[object, str]]:
    """(owner layer, attribute) of every ``Dense`` inside the encoder layers (q/k/v, outputs, FFN)."""
    backbone = getattr(model, "backbone", model)
    main = getattr(backbone, backbone.base_model_prefix)
    slots = []
    for block in main.encoder.layer:
        for owner in block._flatten_layers(include_self=True):
            if _is_pruning_wrapper(owner):
                continue  # its inner Dense is reached through the wrapper's owner
            for attr, value in list(vars(owner).items()):
                if attr.startswith("_") or not isinstance(value, tf_keras.layers.Layer):
                    continue
                if isinstance(value, (LoraDense, AdapterDense)):
                    raise CheckpointError("prune a plain model: merge LoRA / do not use adapters before pruning")
                if isinstance(value, tf_keras.layers.Dense) or _is_pruning_wrapper(value):
                    slots.append((owner, attr))
    if not slots:
        raise CheckpointError(f"{type(backbone).__name__}: no Dense layers found in the encoder")
    return slots


def kernel_sparsity(model) -> Dict[str, float]:
    """Fraction of exactly-zero weights over the encoder Dense kernels (overall, min and max per layer)."""
    zeros = total = 0
    per_layer = []
    for owner, attr in encoder_dense_slots(model):
        layer = getattr(owner, attr)
        kernel = getattr(layer, "layer", layer).kernel.numpy()
        z = int((kernel == 0).sum())
        zeros, total = zeros + z, total + kernel.size
        per_layer.append(z / kernel.size)
    return {"sparsity": zeros / total, "min_layer_sparsity": min(per_layer),
            "max_layer_sparsity": max(per_layer), "pruned_weights": total}


def _schedule(target: float, total_steps: int, end_fraction: float):
    """PolynomialDecay 0 -> target, reached at a mask-update step before training ends."""
    tfmot = _tfmot()
    end = max(1, int(total_steps * end_fraction))
    frequency = max(1, end // 10)
    end = max(frequency, (end // frequency) * frequency)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(target),
                                                begin_step=0, end_step=end, frequency=frequency)


def _pruning_step_callback():
    tfmot = _tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # optional dependency

    class UpdatePruningStep(tfmot.sparsity.keras.UpdatePruningStep):
        """tfmot's callback finds wrappers through ``model.layers`` only; HF models nest them deeper."""

        def on_train_begin(self, logs=None):
            self.prunable_layers = [m for m in self.model._flatten_layers(include_self=False)
                                    if isinstance(m, pruning_wrapper.PruneLowMagnitude)]
            if self.prunable_layers and int(self.prunable_layers[0].pruning_step) == -1:
                for layer in self.prunable_layers:
                    layer.pruning_step.assign(0)

    return UpdatePruningStep()


def apply_pruning(model, target_sparsity: float, total_steps: int, *, end_fraction: float = 0.7) -> int:
    """Wrap the encoder Dense layers in tfmot ``PruneLowMagnitude``; returns how many were wrapped."""
    if not 0.0 < target_sparsity < 1.0:
        raise ConfigError(f"target sparsity must be in (0, 1), got {target_sparsity}")
    tfmot = _tfmot()
    slots = encoder_dense_slots(model)
    for owner, attr in slots:
        layer = getattr(owner, attr)
        wrapped = tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=_schedule(target_sparsity, total_steps, end_fraction))
        wrapped.build((None, int(layer.kernel.shape[0])))  # the Dense is built: this adds the masks
        setattr(owner, attr, wrapped)
    return len(slots)


def strip_pruning(model) -> None:
    """Replace each pruning wrapper by its (already masked) Dense layer: a plain model again."""
    for owner, attr in encoder_dense_slots(model):
        layer = getattr(owner, attr)
        if _is_pruning_wrapper(layer):
            layer.pruning_obj.weight_mask_op()
            setattr(owner, attr, layer.layer)


def prune_model(bundle: ModelBundle, train_examples: Sequence, validation_examples: Sequence = (), *,
                target_sparsity: float = 0.5, epochs: int = 2, learning_rate: float = 3e-5, batch_size: int = 32,
                seed: int = 13, verbose: int = 0) -> Dict[str, Any]:
    """Magnitude-prune the bundle's encoder Dense kernels to ``target_sparsity`` during a short fine-tune.

    The model is changed in place and ends without wrappers (and compiled, as
    after ``train``); returns the sparsity reached plus the training history.
    """
    if not train_examples:
        raise DataError("pruning needs training examples for its fine-tune")
    encoder, labels, task = bundle.encoder, bundle.labels, bundle.task
    tf_keras.utils.set_random_seed(seed)
    train_ds = make_dataset(train_examples, encoder, labels, task, batch_size=batch_size, training=True, seed=seed)
    val_ds = make_dataset(validation_examples, encoder, labels, task, batch_size=batch_size) \
        if validation_examples else None
    total_steps = epochs * batches_per_epoch(train_examples, encoder, task, batch_size)
    wrapped = apply_pruning(bundle.model, target_sparsity, total_steps)
    bundle.compile(learning_rate=learning_rate, total_steps=total_steps)
    started = time.perf_counter()
    history = bundle.model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose,
                               callbacks=[_pruning_step_callback()])
    seconds = time.perf_counter() - started
    strip_pruning(bundle.model)
    return {"target_sparsity": target_sparsity, "pruned_layers": wrapped, "train_seconds": round(seconds, 1),
            "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            **kernel_sparsity(bundle.model)}


def compress(config: CompressConfig, *, data: Optional[TaskData] = None) -> Dict[str, Any]:
    """Prune (optionally), export to TFLite and score it; returns the summary written beside the .tflite.

    ``data`` defaults to what ``config``'s data options name, else the dataset
    the model folder records. Pruning and int8 calibration need it; if only the
    evaluation would use it and none can be found, a note goes to stderr and
    the model is exported without evaluation. The pruned model is saved as the
    model folder ``<output>/pruned_model`` (its metadata gains ``pruning``).
    """
    cfg = config.validate()
    meta = read_metadata(cfg.model_dir)
    if meta["task"] != CLASSIFICATION:   # before any data is read or model trained
        raise ExportError(f"{cfg.model_dir}: TFLite export supports classification models, not {meta['task']}")
    if data is None and (cfg.needs_data or cfg.evaluate):
        try:
            data = data_from_options(cfg, task=meta["task"], seed=cfg.seed, recorded=meta, recorded_in=cfg.model_dir)
        except DataError as e:
            if cfg.needs_data:
                raise DataError(f"{e} (pruning and int8 calibration need data: --dataset or --train-file)") from None
            print(f"[tfpipeline] no evaluation data ({e}); exporting without evaluation", file=sys.stderr)
    bundle = ModelBundle.load(cfg.model_dir)
    folder, _ = tflite_location(cfg.output)
    summary: Dict[str, Any] = {"model_dir": cfg.model_dir, "quantize": cfg.quantize}
    source_dir = cfg.model_dir
    if cfg.prune_sparsity:
        summary["pruning"] = prune_model(bundle, data.train, data.validation, target_sparsity=cfg.prune_sparsity,
                                         epochs=cfg.prune_epochs, learning_rate=cfg.learning_rate,
                                         batch_size=cfg.batch_size, seed=cfg.seed)
        pruning = {k: v for k, v in summary["pruning"].items() if k != "history"}
        pruned = ModelBundle(bundle.model, bundle.encoder, bundle.labels, bundle.task,
                             {**bundle.meta, "pruning": pruning})
        source_dir = pruned.save(os.path.join(folder, PRUNED_MODEL), overwrite=True)   # re-runs replace it
        summary["pruning"]["zipped_bytes"] = zipped_size(os.path.join(source_dir, "tf_model.h5"))
        summary["pruning"]["zipped_bytes_before"] = zipped_size(os.path.join(cfg.model_dir, "tf_model.h5"))
    texts = [ex.text for ex in data.train] if data else []
    path = export_tflite(bundle.model, bundle.encoder, bundle.labels, cfg.output, task=bundle.task,
                         quantize=cfg.quantize, max_length=cfg.max_length, representative_texts=texts,
                         calibration_examples=cfg.calibration_examples, source_model=source_dir)
    summary["tflite"] = path
    if data and cfg.evaluate:
        summary["evaluation"] = evaluate_tflite(TFLiteClassifier.from_directory(path), data.test or data.validation,
                                                reference=bundle.predictor())
    write_report(os.path.dirname(path), summary, REPORT_FILE)
    return summary
