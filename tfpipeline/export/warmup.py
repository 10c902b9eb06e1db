"""``assets.extra/tf_serving_warmup_requests``: requests TF Serving replays before marking a version ready.

Without warmup the first real requests pay for graph optimisation and
kernel initialisation (seconds on a BERT). The file is a TFRecord of
``PredictionLog`` protos, one per signature, built from a few sample texts
(text tasks) or a few small synthetic PNG/JPEG images (image classification).
"""
from __future__ import annotations

from typing import List, Sequence, Union

import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2, regression_pb2

from tfpipeline.data.examples import CLASSIFICATION, IMAGE_CLASSIFICATION
from tfpipeline.data.images import ImageEncoder
from tfpipeline.data.tokenization import TextEncoder

DEFAULT_WARMUP_TEXTS = ("The service was great and the staff were friendly.",
                        "Alice Smith flew from Paris to New York on Monday.",
                        "short")
WARMUP_FILE = "tf_serving_warmup_requests"


def bytes_example(feature: str, value: bytes) -> tf.train.Example:
    """A tf.Example with one bytes feature (what the ``classify`` signatures parse)."""
    values = tf.train.BytesList(value=[value])
    return tf.train.Example(features=tf.train.Features(feature={feature: tf.train.Feature(bytes_list=values)}))


def text_example(text: str) -> tf.train.Example:
    """The tf.Example the text ``classify`` signature parses: one bytes feature ``text``."""
    return bytes_example("text", text.encode("utf-8"))


def image_example(image: bytes) -> tf.train.Example:
    """The tf.Example the image ``classify`` signature parses: one bytes feature ``image``."""
    return bytes_example("image", image)


def sample_images() -> List[bytes]:
    """Two small synthetic images, a PNG and a JPEG of different sizes: both decoders and the resize run."""
    gradient = tf.cast(tf.linspace(0.0, 255.0, 48 * 64 * 3), tf.uint8)
    picture = tf.reshape(gradient, [48, 64, 3])
    return [tf.io.encode_png(picture).numpy(), tf.io.encode_jpeg(tf.transpose(picture, [1, 0, 2])).numpy()]


def warmup_logs(model_name: str, task: str, encoder: Union[TextEncoder, ImageEncoder],
                texts: Sequence[str], text_signatures: Sequence[str] = ("serving_default",),
                regress_signatures: Sequence[str] = ()) -> list:
    """PredictionLogs for every signature: the raw-text ones (``text_signatures``), ``predict_ids`` and
    (classification) ``classify``; images: ``serving_default``, ``classify`` and ``predict_pixels`` on
    ``sample_images``."""
    if task == IMAGE_CLASSIFICATION:
        return image_warmup_logs(model_name, encoder, sample_images())
    if not texts:
        raise ValueError("warmup needs at least one text")
    logs = []
    for signature in text_signatures:
        text_request = predict_pb2.PredictRequest()
        text_request.model_spec.name = model_name
        text_request.model_spec.signature_name = signature
        text_request.inputs["text"].CopyFrom(tf.make_tensor_proto(list(texts), dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=text_request)))

    features = encoder.pad(encoder.encode(tf.constant(list(texts))))
    ids_request = predict_pb2.PredictRequest()
    ids_request.model_spec.name = model_name
    ids_request.model_spec.signature_name = "predict_ids"
    for key in ("input_ids", "attention_mask"):
        ids_request.inputs[key].CopyFrom(tf.make_tensor_proto(features[key].numpy()))
    logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=ids_request)))

    if task == CLASSIFICATION:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = "classify"
        request.input.example_list.examples.extend(text_example(t) for t in texts)
        logs.append(prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request)))
    for signature in regress_signatures:
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = model_name
        regress.model_spec.signature_name = signature
        regress.input.example_list.examples.extend(text_example(t) for t in texts)
        logs.append(prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)))
    return logs


def image_warmup_logs(model_name: str, encoder: ImageEncoder, images: Sequence[bytes]) -> list:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    logs = [prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))]

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = model_name
    classify.model_spec.signature_name = "classify"
    classify.input.example_list.examples.extend(image_example(image) for image in images)
    logs.append(prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify)))

    pixels = predict_pb2.PredictRequest()
    pixels.model_spec.name = model_name
    pixels.model_spec.signature_name = "predict_pixels"
    size = encoder.image_size
    pixels.inputs["pixels"].CopyFrom(tf.make_tensor_proto(tf.fill([1, size, size, 3], 128.0).numpy()))
    logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=pixels)))
    return logs


def write_warmup_requests(path: str, model_name: str, task: str, encoder: Union[TextEncoder, ImageEncoder],
                          texts: Sequence[str], text_signatures: Sequence[str] = ("serving_default",),
                          regress_signatures: Sequence[str] = ()) -> int:
    """Write the warmup TFRecord; returns the number of records."""
    logs = warmup_logs(model_name, task, encoder, texts, text_signatures, regress_signatures)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return len(logs)


def read_warmup_requests(path: str) -> list:
    """Parse a warmup file back into PredictionLog protos (tests, debugging)."""
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
