"""Parameter-efficient fine-tuning for HF TF BERT and ViT: LoRA and bottleneck adapters.

Both work by wrapping existing ``Dense`` layers of the built backbone:

* LoRA (Hu et al. 2021) on attention query/value: ``W x + (alpha/r) * B(A(dropout(x)))``
  with ``B`` zero-initialised, so training starts from the pretrained function.
  ``merge_lora`` folds ``A @ B`` into ``W`` and removes the wrappers: the
  result is a plain BERT, so export and serving cost are unchanged.
* Adapters (Houlsby et al. 2019) after the attention-output and FFN-output
  projections: ``h + up(gelu(down(h)))`` with ``up`` zero-initialised.

``freeze_for_peft`` leaves only the new parameters plus the task head
(classifier and, for sequence classification, the pooler) trainable.

The options are ``tfpipeline.config.PeftOptions`` (the same fields as the
``--peft`` flags). Which method a model carries is read off its layers
(``applied_method``), not stored on the model, so a model cannot disagree with
its own PEFT state. ``peft_metadata`` / ``options_from_metadata`` are the
``"peft"`` entry of a model folder's ``tfpipeline.json``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from tfpipeline.config import PeftOptions
from tfpipeline.errors import CheckpointError, ConfigError
from tfpipeline.models.task_model import count_params

PEFT_WEIGHTS = "peft_weights.npz"
LORA_TARGETS = ("query", "value")   # attention projections LoRA wraps (Hu et al.: q and v suffice)


def peft_metadata(options: PeftOptions, *, merged: bool = False) -> Dict[str, Any]:
    """The ``"peft"`` entry of ``tfpipeline.json`` (the format model folders have always used)."""
    meta = {"method": options.peft, "lora_rank": options.lora_rank, "lora_alpha": options.lora_alpha,
            "lora_dropout": options.lora_dropout, "lora_targets": list(LORA_TARGETS),
            "adapter_size": options.adapter_size}
    if merged:
        meta["merged"] = True
    return meta


def options_from_metadata(meta: Dict[str, Any]) -> PeftOptions:
    """Inverse of ``peft_metadata``."""
    try:
        return PeftOptions(peft=meta["method"], lora_rank=int(meta["lora_rank"]),
                           lora_alpha=float(meta["lora_alpha"]), lora_dropout=float(meta["lora_dropout"]),
                           adapter_size=int(meta["adapter_size"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"malformed peft entry in tfpipeline.json ({e}): {meta}") from None


class LoraDense(tf_keras.layers.Layer):
    """A frozen ``Dense`` plus a trainable low-rank update."""

    def __init__(self, base: tf_keras.layers.Dense, rank: int, alpha: float, dropout: float, **kwargs):
        super().__init__(name=f"{base.name}_lora", **kwargs)
        self.base = base
        self.rank, self.scale = int(rank), float(alpha) / int(rank)
        fan_in, units = int(base.kernel.shape[0]), int(base.kernel.shape[1])
        self.lora_a = self.add_weight("lora_a", shape=(fan_in, self.rank), trainable=True,
                                      initializer=tf_keras.initializers.HeUniform())
        self.lora_b = self.add_weight("lora_b", shape=(self.rank, units), trainable=True,
                                      initializer="zeros")
        self.dropout = tf_keras.layers.Dropout(dropout)

    def call(self, inputs, training=False):
        update = tf.matmul(tf.matmul(self.dropout(inputs, training=training), self.lora_a), self.lora_b)
        return self.base(inputs) + tf.cast(self.scale, update.dtype) * update

    def merged_kernel(self) -> tf.Tensor:
        return self.base.kernel + self.scale * tf.matmul(self.lora_a, self.lora_b)


class AdapterDense(tf_keras.layers.Layer):
    """A ``Dense`` followed by a residual bottleneck adapter."""

    def __init__(self, base: tf_keras.layers.Dense, size: int, **kwargs):
        super().__init__(name=f"{base.name}_adapter", **kwargs)
        self.base = base
        units = int(base.kernel.shape[1])
        self.down = tf_keras.layers.Dense(size, activation="gelu", name="adapter_down",
                                          kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=1e-3))
        self.up = tf_keras.layers.Dense(units, name="adapter_up", kernel_initializer="zeros")
        self.down.build((None, units))
        self.up.build((None, size))

    def call(self, inputs, training=False):
        hidden = self.base(inputs)
        return hidden + self.up(self.down(hidden))


FFN_OUTPUTS = ("bert_output", "vit_output")   # the FFN output block's attribute in BERT / ViT layers


def _encoder_layers(model) -> List:
    backbone = getattr(model, "backbone", model)
    prefix = getattr(backbone, "base_model_prefix", None)
    if prefix is None or not hasattr(getattr(backbone, prefix, None), "encoder"):
        raise ConfigError(f"PEFT (LoRA, adapters) wraps transformer attention layers (BERT, ViT); "
                          f"{type(getattr(model, 'backbone', model)).__name__} has none: train it fully "
                          "(no --peft)")
    return list(getattr(backbone, prefix).encoder.layer)


def _ffn_output(layer):
    for name in FFN_OUTPUTS:
        if hasattr(layer, name):
            return getattr(layer, name)
    raise ConfigError(f"adapters do not know the layer {type(layer).__name__} (known: BERT, ViT)")


def _targets(model, method: str) -> Iterator[Tuple[str, object, str]]:
    """(path, owner layer, attribute) of every Dense that the method wraps."""
    for i, layer in enumerate(_encoder_layers(model)):
        if method == "lora":
            for name in LORA_TARGETS:
                yield f"layer_{i}/{name}", layer.attention.self_attention, name
        else:
            yield f"layer_{i}/attention_output", layer.attention.dense_output, "dense"
            yield f"layer_{i}/output", _ffn_output(layer), "dense"


def apply_peft(model, options: PeftOptions) -> Dict[str, int]:
    """Wrap the target layers and freeze the rest; returns trainable/total parameter counts."""
    options.validate_peft()
    if not options.peft:
        raise ConfigError("apply_peft needs a PEFT method (lora or adapter)")
    if applied_method(model):
        raise ConfigError("PEFT is already applied to this model")
    for _, owner, attr in _targets(model, options.peft):
        base = getattr(owner, attr)
        wrapper = (LoraDense(base, options.lora_rank, options.lora_alpha, options.lora_dropout)
                   if options.peft == "lora" else AdapterDense(base, options.adapter_size))
        setattr(owner, attr, wrapper)
    freeze_for_peft(model)
    return count_params(model)


def applied_method(model) -> Optional[str]:
    """"lora" or "adapter" if the model's layers carry that PEFT method now, else None.

    Architectures whose layers PEFT does not know (it wraps BERT's) carry none.
    """
    backbone = getattr(model, "backbone", model)
    for method, wrapper in (("lora", LoraDense), ("adapter", AdapterDense)):
        if any(isinstance(m, wrapper) for m in backbone.submodules):
            return method
    return None


def freeze_for_peft(model) -> None:
    """Only PEFT weights and the task head stay trainable.

    Keras gathers trainable weights through containers whose ``trainable`` is
    True, so every layer is frozen first and then the path from the model to
    each PEFT/head layer is switched back on (layers that own weights directly,
    like the embeddings, stay frozen).
    """
    backbone = getattr(model, "backbone", model)
    for layer in backbone._flatten_layers(include_self=True):
        layer._trainable = False

    def is_target(layer) -> bool:
        return isinstance(layer, (LoraDense, AdapterDense)) or layer.name in ("classifier", "pooler")

    def enable(layer) -> bool:
        if is_target(layer):
            for sub in layer._flatten_layers(include_self=True):
                sub._trainable = True
            if isinstance(layer, (LoraDense, AdapterDense)):
                for sub in layer.base._flatten_layers(include_self=True):
                    sub._trainable = False
            return True
        found = False
        for child in layer._flatten_layers(include_self=False, recursive=False):
            found = enable(child) or found
        if found and not layer._trainable_weights and not layer._non_trainable_weights:
            layer._trainable = True
        return found

    enable(backbone)
    if backbone is not model:
        model._trainable = True


def merge_lora(model) -> None:
    """Fold every LoRA update into its Dense kernel and unwrap (predictions unchanged)."""
    for _, owner, attr in _targets(model, "lora"):
        wrapper = getattr(owner, attr)
        if isinstance(wrapper, LoraDense):
            wrapper.base.kernel.assign(wrapper.merged_kernel())
            wrapper.base.trainable = True
            setattr(owner, attr, wrapper.base)
    getattr(model, "backbone", model).trainable = True


def _peft_weight_items(model) -> Dict[str, tf.Variable]:
    method = applied_method(model)
    if method is None:
        raise ConfigError("model has no PEFT layers (apply_peft first)")
    items: Dict[str, tf.Variable] = {}
    for path, owner, attr in _targets(model, method):
        wrapper = getattr(owner, attr)
        if isinstance(wrapper, LoraDense):
            items[f"{path}/lora_a"], items[f"{path}/lora_b"] = wrapper.lora_a, wrapper.lora_b
        else:
            for part in (wrapper.down, wrapper.up):
                items[f"{path}/{part.name}/kernel"], items[f"{path}/{part.name}/bias"] = part.kernel, part.bias
    backbone = getattr(model, "backbone", model)
    for module in backbone.submodules:
        if isinstance(module, tf_keras.layers.Layer) and module.name in ("classifier", "pooler"):
            for w in module.weights:
                items[f"head/{module.name}/{w.name.split('/')[-1].split(':')[0]}"] = w
    return items


def save_peft_weights(model, directory: str) -> str:
    """Write only the PEFT weights + head (a few MB instead of the whole model)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, PEFT_WEIGHTS)
    np.savez(path, **{k: v.numpy() for k, v in _peft_weight_items(model).items()})
    return path


def load_peft_weights(model, path: str) -> None:
    """Load weights written by ``save_peft_weights`` into a model with the same PEFT config applied."""
    if os.path.isdir(path):
        path = os.path.join(path, PEFT_WEIGHTS)
    stored = np.load(path)
    items = _peft_weight_items(model)
    missing = sorted(set(items) - set(stored.files))
    if missing:
        raise CheckpointError(f"{path}: lacks PEFT weights {missing[:3]} (different PEFT config?)")
    for key, var in items.items():
        var.assign(stored[key])


@contextlib.contextmanager
def detached(model):
    """Temporarily put the original Dense layers back (e.g. to save a plain HF checkpoint)."""
    method = applied_method(model)
    swapped = []
    if method is not None:
        for _, owner, attr in _targets(model, method):
            wrapper = getattr(owner, attr)
            if isinstance(wrapper, (LoraDense, AdapterDense)):
                setattr(owner, attr, wrapper.base)
                swapped.append((owner, attr, wrapper))
    try:
        yield model
    finally:
        for owner, attr, wrapper in swapped:
            setattr(owner, attr, wrapper)
