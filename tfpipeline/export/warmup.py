"""``assets.extra/tf_serving_warmup_requests``: requests TF Serving replays before marking a version ready.

Without warmup the first real requests pay for graph optimisation and
kernel initialisation (seconds on a BERT). The file is a TFRecord of
``PredictionLog`` protos, one per signature, built from a few sample texts.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

from tfpipeline.data.examples import CLASSIFICATION
from tfpipeline.data.tokenization import TextEncoder

DEFAULT_WARMUP_TEXTS = ("The service was great and the staff were friendly.",
                        "Alice Smith flew from Paris to New York on Monday.",
                        "short")
WARMUP_FILE = "tf_serving_warmup_requests"


def text_example(text: str) -> tf.train.Example:
    """The tf.Example the ``classify`` signature parses: one bytes feature ``text``."""
    value = tf.train.BytesList(value=[text.encode("utf-8")])
    return tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(bytes_list=value)}))


def warmup_logs(model_name: str, task: str, encoder: TextEncoder, texts: Sequence[str]) -> list:
    """PredictionLogs for the text signature, ``predict_ids`` and (classification) ``classify``."""
    if not texts:
        raise ValueError("warmup needs at least one text")
    logs = []
    text_request = predict_pb2.PredictRequest()
    text_request.model_spec.name = model_name
    text_request.model_spec.signature_name = "serving_default"
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
    return logs


def write_warmup_requests(path: str, model_name: str, task: str, encoder: TextEncoder,
                          texts: Sequence[str]) -> int:
    """Write the warmup TFRecord; returns the number of records."""
    logs = warmup_logs(model_name, task, encoder, texts)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return len(logs)


def read_warmup_requests(path: str) -> list:
    """Parse a warmup file back into PredictionLog protos (tests, debugging)."""
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
