"""Parameter-efficient fine-tuning for HF TF BERT: LoRA and bottleneck adapters.

Both work by wrapping existing ``Dense`` layers of the built backbone:

* LoRA (Hu et al. 2021) on attention query/value: ``W x + (alpha/r) * B(A(dropout(x)))``
  with ``B`` zero-initialised, so training starts from the pretrained function.
  ``merge_lora`` folds ``A @ B`` into ``W`` and removes the wrappers: the
  result is a plain BERT, so export and serving cost are unchanged.
* Adapters (Houlsby et al. 2019) after the attention-output and FFN-output
  projections: ``h + up(gelu(down(h)))`` with ``up`` zero-initialised.

``freeze_for_peft`` leaves only the new parameters plus the task head
(classifier and, for sequence classification, the pooler) trainable.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from tfpipeline import _env  # noqa: F401

import numpy as np
import tensorflow as tf
import tf_keras

PEFT_WEIGHTS = "peft_weights.npz"
METHODS = ("lora", "adapter")


@dataclass
class PeftConfig:
    method: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: Tuple[str, ...] = ("query", "value")
    adapter_size: int = 64

    def validate(self) -> "PeftConfig":
        if self.method not in METHODS:
            raise ValueError(f"unknown PEFT method {self.method!r} (use {', '.join(METHODS)})")
        if self.lora_rank < 1 or self.adapter_size < 1:
            raise ValueError("lora_rank and adapter_size must be >= 1")
        return self


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


def _encoder_layers(model) -> List:
    backbone = getattr(model, "backbone", model)
    main = getattr(backbone, backbone.base_model_prefix)
    return list(main.encoder.layer)


def _targets(model, method: str, lora_targets=("query", "value")) -> Iterator[Tuple[str, object, str]]:
    """(path, owner layer, attribute) of every Dense that the method wraps."""
    for i, layer in enumerate(_encoder_layers(model)):
        if method == "lora":
            for name in lora_targets:
                yield f"layer_{i}/{name}", layer.attention.self_attention, name
        else:
            yield f"layer_{i}/attention_output", layer.attention.dense_output, "dense"
            yield f"layer_{i}/output", layer.bert_output, "dense"


def apply_peft(model, config: PeftConfig) -> Dict[str, int]:
    """Wrap the target layers and freeze the rest; returns trainable/total parameter counts."""
    config.validate()
    for _, owner, attr in _targets(model, config.method, config.lora_targets):
        base = getattr(owner, attr)
        if isinstance(base, (LoraDense, AdapterDense)):
            raise ValueError("PEFT is already applied to this model")
        wrapper = (LoraDense(base, config.lora_rank, config.lora_alpha, config.lora_dropout)
                   if config.method == "lora" else AdapterDense(base, config.adapter_size))
        setattr(owner, attr, wrapper)
    freeze_for_peft(model)
    model.peft_config = config
    return parameter_counts(model)


def peft_layers(model) -> List[tf_keras.layers.Layer]:
    backbone = getattr(model, "backbone", model)
    return [m for m in backbone.submodules if isinstance(m, (LoraDense, AdapterDense))]


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


def parameter_counts(model) -> Dict[str, int]:
    from tfpipeline.models.task_model import count_params

    return count_params(model)


def merge_lora(model) -> None:
    """Fold every LoRA update into its Dense kernel and unwrap (predictions unchanged)."""
    for _, owner, attr in _targets(model, "lora", getattr(getattr(model, "peft_config", None), "lora_targets",
                                                          ("query", "value"))):
        wrapper = getattr(owner, attr)
        if isinstance(wrapper, LoraDense):
            wrapper.base.kernel.assign(wrapper.merged_kernel())
            wrapper.base.trainable = True
            setattr(owner, attr, wrapper.base)
    model.peft_config = None
    getattr(model, "backbone", model).trainable = True


def _peft_weight_items(model) -> Dict[str, tf.Variable]:
    config: Optional[PeftConfig] = getattr(model, "peft_config", None)
    if config is None:
        raise ValueError("model has no PEFT layers (apply_peft first)")
    items: Dict[str, tf.Variable] = {}
    for path, owner, attr in _targets(model, config.method, config.lora_targets):
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
        raise ValueError(f"{path}: lacks PEFT weights {missing[:3]} (different PEFT config?)")
    for key, var in items.items():
        var.assign(stored[key])


@contextlib.contextmanager
def detached(model):
    """Temporarily put the original Dense layers back (e.g. to save a plain HF checkpoint)."""
    config: Optional[PeftConfig] = getattr(model, "peft_config", None)
    swapped = []
    if config is not None:
        for _, owner, attr in _targets(model, config.method, config.lora_targets):
            wrapper = getattr(owner, attr)
            if isinstance(wrapper, (LoraDense, AdapterDense)):
                setattr(owner, attr, wrapper.base)
                swapped.append((owner, attr, wrapper))
    try:
        yield model
    finally:
        for owner, attr, wrapper in swapped:
            setattr(owner, attr, wrapper)
