"""In-graph image preprocessing shared by training (tf.data) and export (serving graph).

One ``ImageEncoder`` turns encoded JPEG/PNG/GIF/BMP bytes into the float
``pixel_values`` a model takes: decode (grey and RGBA become RGB), resize to
``image_size`` x ``image_size`` (bilinear, antialiased), scale to [0, 1] and
normalise with the checkpoint's mean and std. The same object is traced into
the exported SavedModel, so a served model sees exactly what training saw.

Its settings are a Hugging Face ``preprocessor_config.json`` (the file a ViT
checkpoint ships): ``ImageEncoder.from_directory`` reads a checkpoint's and
``save`` writes one into every model folder.

Training-time augmentation (``augment``): a random resized crop (25-100% of
the area, aspect 3:4-4:3, the Inception/torchvision recipe with a milder
lower bound for fine-tuning) and, unless turned off, a horizontal flip.
Evaluation and serving never augment.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence

import tensorflow as tf

from tfpipeline.errors import DataError

PREPROCESSOR_CONFIG = "preprocessor_config.json"
PIXELS = "pixel_values"                      # the model's input key
CROP_AREA = (0.25, 1.0)                      # random resized crop: share of the image area kept
CROP_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
HALF = (0.5, 0.5, 0.5)                       # ViT's normalisation: pixels to [-1, 1]


class ImageEncoder(tf.Module):
    """Image bytes -> normalised ``[S, S, 3]`` float32 pixels, with plain TF ops (tf.data and SavedModels)."""

    def __init__(self, image_size: int, *, mean: Sequence[float] = HALF, std: Sequence[float] = HALF,
                 name: str = "image_encoder"):
        super().__init__(name=name)
        if int(image_size) < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {mean} / {std}")
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_directory(cls, path: str, *, image_size: Optional[int] = None) -> "ImageEncoder":
        """From a folder's ``preprocessor_config.json`` (HF image processor format)."""
        config = read_preprocessor_config(path)
        return cls(image_size or config_image_size(config, path), mean=config.get("image_mean", HALF),
                   std=config.get("image_std", HALF))

    def save(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        config = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                  "size": {"height": self.image_size, "width": self.image_size}, "resample": 2,
                  "do_rescale": True, "rescale_factor": 1.0 / 255.0, "do_normalize": True,
                  "image_mean": list(self.mean), "image_std": list(self.std)}
        with open(os.path.join(path, PREPROCESSOR_CONFIG), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)

    def metadata(self) -> Dict[str, int]:
        """What a model folder's ``tfpipeline.json`` records about the preprocessing."""
        return {"image_size": self.image_size}

    # ------------------------------------------------------------ decoding
    def decode(self, data: tf.Tensor) -> tf.Tensor:
        """One encoded image (scalar string) -> ``[H, W, 3]`` uint8 at its own size."""
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image

    def resize(self, pixels: tf.Tensor) -> tf.Tensor:
        """``[H, W, 3]`` or ``[B, H, W, 3]`` pixels in 0..255 -> float32 at ``image_size`` (still 0..255)."""
        size = [self.image_size, self.image_size]
        return tf.image.resize(tf.cast(pixels, tf.float32), size, method="bilinear", antialias=True)

    def normalize(self, pixels: tf.Tensor) -> tf.Tensor:
        """Float pixels in 0..255 -> the model's input scale."""
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        return (pixels / 255.0 - mean) / std

    def encode(self, data: tf.Tensor) -> tf.Tensor:
        """One encoded image -> normalised ``[S, S, 3]`` (evaluation and serving)."""
        return self.normalize(self.resize(self.decode(data)))

    def encode_batch(self, data: tf.Tensor) -> tf.Tensor:
        """``[B]`` encoded images -> ``[B, S, S, 3]`` (the serving signatures)."""
        spec = tf.TensorSpec([self.image_size, self.image_size, 3], tf.float32)
        return tf.map_fn(self.encode, data, fn_output_signature=spec)

    def encode_pixels(self, pixels: tf.Tensor) -> tf.Tensor:
        """``[B, H, W, 3]`` float pixels in 0..255 (already decoded, any size) -> ``[B, S, S, 3]``."""
        return self.normalize(self.resize(pixels))

    def augment(self, data: tf.Tensor, *, flip: bool = True, seed: Optional[int] = None) -> tf.Tensor:
        """One encoded image -> a random resized crop (and flip), normalised ``[S, S, 3]`` (training only)."""
        image = self.decode(data)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), min_object_covered=0.0,
            aspect_ratio_range=CROP_ASPECT, area_range=CROP_AREA, max_attempts=10,
            use_image_if_no_bounding_boxes=True, seed=seed)
        image = tf.slice(image, begin, size)
        if flip:
            image = tf.image.random_flip_left_right(image, seed=seed)
        return self.normalize(self.resize(image))


def read_preprocessor_config(path: str) -> dict:
    """A folder's ``preprocessor_config.json`` ({} when it has none: the caller decides the defaults)."""
    file = os.path.join(path, PREPROCESSOR_CONFIG)
    if not os.path.isfile(file):
        return {}
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise DataError(f"{file}: unreadable image preprocessor config ({e})") from None


def config_image_size(config: dict, path: str = "") -> int:
    """The square side an HF image processor config resizes to (``size``: int, {height,width} or
    {shortest_edge})."""
    size = config.get("size", config.get("crop_size"))
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        if "height" in size:
            return int(size["height"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
    raise DataError(f"{os.path.join(path, PREPROCESSOR_CONFIG)}: no image size (expected 'size')")
