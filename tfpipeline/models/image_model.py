"""Keras image classifiers: a pretrained backbone plus a new head, ``pixel_values -> float32 logits``.

Two backbone families, chosen by the checkpoint:

* ``mobilenet_v2`` (alias; the offline default): ``tf_keras.applications.MobileNetV2``
  carrying torchvision's ImageNet weights (``models.mobilenet_v2``), global
  average pooling, dropout 0.2 and a new ``Dense`` head -- torchvision's own
  classifier layout. A CNN takes any resolution, so the run chooses one.
* any local Hugging Face ViT folder (``config.json`` with ``model_type: vit``):
  ``TFViTForImageClassification``, its head re-initialised for the labels, at
  the checkpoint's own resolution (its position embeddings fix it).

Both take ``{"pixel_values": [B, S, S, 3]}`` channels-last, normalised by the
run's ``ImageEncoder``; the ViT wrapper transposes to the channels-first
layout transformers' TF ViT expects. A model folder written by ``save_checkpoint``
is ``image_model.json`` + ``tf_model.h5`` (MobileNetV2) or a regular HF
checkpoint (ViT); ``load_image_model`` reads either back (the ``image`` model kind).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import tensorflow as tf
import tf_keras
from transformers import AutoConfig, TFAutoModelForImageClassification, TFViTModel, ViTConfig

from tfpipeline.config import DEFAULT_IMAGE_CHECKPOINT, IMAGE_CLASSIFICATION
from tfpipeline.data.images import HALF, PIXELS, ImageEncoder, read_preprocessor_config
from tfpipeline.data.labels import LabelMap
from tfpipeline.errors import CheckpointError
from tfpipeline.models.checkpoint import load_hf_model
from tfpipeline.models.kinds import ModelKind, register_model_kind
from tfpipeline.models.mobilenet_v2 import IMAGENET_MEAN, IMAGENET_STD, build_mobilenet_v2
from tfpipeline.models.peft import detached

MOBILENET_ALIASES = (DEFAULT_IMAGE_CHECKPOINT, "mobilenet", "mobilenetv2")
IMAGE_MODEL_FILE = "image_model.json"
WEIGHTS_FILE = "tf_model.h5"
CNN_DROPOUT = 0.2          # torchvision's MobileNetV2 classifier: Dropout(0.2) + Linear


def is_mobilenet(checkpoint: Optional[str]) -> bool:
    return checkpoint is None or checkpoint in MOBILENET_ALIASES


def resolve_image_checkpoint(checkpoint: Optional[str]) -> str:
    """An alias (``mobilenet_v2``), or a local HF image-classification folder checked for ``config.json``."""
    if is_mobilenet(checkpoint):
        return DEFAULT_IMAGE_CHECKPOINT
    path = os.path.abspath(os.path.expanduser(checkpoint))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointError(f"{checkpoint}: not an image checkpoint (expected the alias "
                              f"{DEFAULT_IMAGE_CHECKPOINT!r} or a local Hugging Face ViT folder with config.json)")
    return path


def checkpoint_encoder(checkpoint: Optional[str], image_size: int) -> ImageEncoder:
    """The preprocessing a backbone was pretrained with, at ``image_size``."""
    if is_mobilenet(checkpoint):
        return ImageEncoder(image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    config = read_preprocessor_config(resolve_image_checkpoint(checkpoint))
    return ImageEncoder(image_size, mean=config.get("image_mean", HALF), std=config.get("image_std", HALF))


def native_image_size(checkpoint: Optional[str]) -> Optional[int]:
    """The resolution a checkpoint requires (ViT: ``config.image_size``); None when any size works (CNNs)."""
    if is_mobilenet(checkpoint):
        return None
    return int(AutoConfig.from_pretrained(resolve_image_checkpoint(checkpoint)).image_size)


class ImageClassifier(tf_keras.Model):
    """Base: ``{"pixel_values"} -> logits``; extra input keys are ignored."""

    architecture = ""

    def pixels(self, inputs):
        return inputs[PIXELS] if isinstance(inputs, dict) else inputs

    def build_with_dummy(self, image_size: int) -> "ImageClassifier":
        self({PIXELS: tf.zeros([1, image_size, image_size, 3])}, training=False)
        return self

    def save_checkpoint(self, directory: str) -> None:
        raise NotImplementedError


class CnnImageClassifier(ImageClassifier):
    """MobileNetV2 features (global average pooled) -> dropout -> Dense head named ``classifier``."""

    architecture = "mobilenet_v2"

    def __init__(self, backbone: tf_keras.Model, num_labels: int, dropout: float = CNN_DROPOUT, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.dropout_rate = float(dropout)
        self.dropout = tf_keras.layers.Dropout(self.dropout_rate)
        self.classifier = tf_keras.layers.Dense(num_labels, name="classifier")
        self.num_labels = int(num_labels)

    def call(self, inputs, training=False):
        features = self.backbone(self.pixels(inputs), training=training)
        return tf.cast(self.classifier(self.dropout(features, training=training)), tf.float32)

    def save_checkpoint(self, directory: str) -> None:
        with open(os.path.join(directory, IMAGE_MODEL_FILE), "w", encoding="utf-8") as f:
            json.dump({"architecture": self.architecture, "num_labels": self.num_labels,
                       "dropout": self.dropout_rate}, f, indent=2)
        self.save_weights(os.path.join(directory, WEIGHTS_FILE))


class VitImageClassifier(ImageClassifier):
    """transformers ``TFViTForImageClassification`` behind a channels-last input."""

    architecture = "vit"

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, inputs, training=False):
        channels_first = tf.transpose(self.pixels(inputs), [0, 3, 1, 2])
        return tf.cast(self.backbone(pixel_values=channels_first, training=training).logits, tf.float32)

    def save_checkpoint(self, directory: str) -> None:
        self.backbone.save_pretrained(directory)


def build_image_model(checkpoint: Optional[str], labels: LabelMap, image_size: int, *,
                      dropout: Optional[float] = None, pretrained: bool = True) -> ImageClassifier:
    """A new classifier for ``labels`` on ``checkpoint``'s backbone (``pretrained=False``: random weights)."""
    if is_mobilenet(checkpoint):
        backbone = build_mobilenet_v2(include_top=False, pretrained=pretrained)
        model = CnnImageClassifier(backbone, len(labels), CNN_DROPOUT if dropout is None else dropout)
        return model.build_with_dummy(image_size)
    path = resolve_image_checkpoint(checkpoint)
    overrides = {"num_labels": len(labels), "id2label": dict(enumerate(labels.names)),
                 "label2id": {n: i for i, n in enumerate(labels.names)}}
    if dropout is not None:
        overrides["hidden_dropout_prob"] = float(dropout)
    config = AutoConfig.from_pretrained(path, **overrides)
    backbone, _ = load_hf_model(TFAutoModelForImageClassification, path, config=config, pretrained=pretrained)
    return VitImageClassifier(backbone).build_with_dummy(image_size)


def load_image_model(directory: str, labels: LabelMap, image_size: int) -> ImageClassifier:
    """Read back what ``save_checkpoint`` wrote (a fine-tuned model folder)."""
    spec_file = os.path.join(directory, IMAGE_MODEL_FILE)
    if not os.path.isfile(spec_file):
        return build_image_model(directory, labels, image_size)   # an HF checkpoint: the head is in it
    with open(spec_file, encoding="utf-8") as f:
        spec = json.load(f)
    if spec.get("architecture") != CnnImageClassifier.architecture or spec.get("num_labels") != len(labels):
        raise CheckpointError(f"{spec_file}: {spec} does not match {len(labels)} labels of a "
                              f"{CnnImageClassifier.architecture} model")
    backbone = build_mobilenet_v2(include_top=False, pretrained=False)
    model = CnnImageClassifier(backbone, len(labels), spec.get("dropout", CNN_DROPOUT)).build_with_dummy(image_size)
    model.load_weights(os.path.join(directory, WEIGHTS_FILE))
    return model


def save_random_vit_checkpoint(directory: str, *, image_size: int = 32, patch_size: int = 8, hidden_size: int = 32,
                               num_layers: int = 2, num_heads: int = 2, intermediate_size: int = 64,
                               seed: int = 0) -> str:
    """A tiny randomly initialised ViT checkpoint folder with its ``preprocessor_config.json`` (tests, demos)."""
    tf_keras.utils.set_random_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                       num_hidden_layers=num_layers, num_attention_heads=num_heads,
                       intermediate_size=intermediate_size)
    model = TFViTModel(config)
    model(model.dummy_inputs, training=False)
    model.save_pretrained(directory)
    ImageEncoder(image_size).save(directory)
    return directory


def _load_image_kind(directory: str, meta: Mapping[str, Any], labels: LabelMap) -> ImageClassifier:
    if "image_size" not in meta:
        raise CheckpointError(f"{directory}: image model metadata lacks image_size")
    return load_image_model(directory, labels, int(meta["image_size"]))


def _write_image_checkpoint(model: ImageClassifier, directory: str) -> None:
    with detached(model):   # LoRA wrappers out: the checkpoint is the plain architecture
        model.save_checkpoint(directory)


IMAGE_KIND = "image"
register_model_kind(ModelKind(IMAGE_KIND, _load_image_kind, write_checkpoint=_write_image_checkpoint),
                    default_for=(IMAGE_CLASSIFICATION,))
