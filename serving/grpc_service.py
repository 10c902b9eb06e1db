"""gRPC front end: TF Serving's PredictionService and ModelService on the stock protos.

Any client built on ``tensorflow_serving.apis`` stubs (including the ones in
``serving/client.py``) talks to this server exactly as it talks to TF Serving.
"""
from __future__ import annotations

import functools
import logging
from typing import List, Optional, Tuple

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from serving import runner
from serving.batching import Batching
from serving.errors import ServingError, invalid
from serving.repository import ModelRepository, Servable, input_examples

log = logging.getLogger(__name__)
SIGNATURE_DEF_FIELD = "signature_def"


def _rpc(method):
    """Map ServingError (and anything unexpected) to a gRPC status instead of a crashed handler."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as e:
            context.abort(getattr(grpc.StatusCode, e.code), e.message)
        except Exception as e:  # noqa: BLE001 - the server must survive any single request
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
    return wrapper


def requested_version(model_spec) -> Optional[int]:
    if model_spec.HasField("version"):
        return int(model_spec.version.value)
    if model_spec.version_label:
        raise invalid(f"version labels are not configured on this server (got {model_spec.version_label!r}); "
                      "request a version number")
    return None


def _fill_spec(response_spec, servable: Servable, signature_name: str = "") -> None:
    response_spec.name = servable.name
    response_spec.version.value = servable.version
    if signature_name:
        response_spec.signature_name = signature_name


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress and GetModelMetadata (MultiInference stays UNIMPLEMENTED)."""

    def __init__(self, repository: ModelRepository, limits: runner.Limits, batching: Optional[Batching] = None):
        self.repository, self.limits, self.batching = repository, limits, batching

    @_rpc
    def Predict(self, request, context):
        servable = self.repository.get(request.model_spec.name, requested_version(request.model_spec))
        signature = request.model_spec.signature_name or runner.DEFAULT_SIGNATURE
        inputs = {}
        for name, proto in request.inputs.items():
            try:
                inputs[name] = tf.make_ndarray(proto)
            except Exception as e:  # noqa: BLE001 - malformed TensorProto
                raise invalid(f"input {name!r} is not a valid TensorProto: {e}") from None
        outputs = runner.predict(servable, signature, inputs, self.limits, list(request.output_filter), self.batching)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, servable, signature)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    @_rpc
    def Classify(self, request, context):
        servable, signature, examples = self._examples(request, "ClassificationRequest")
        classes, scores = runner.classify(servable, signature, examples, self.limits, self.batching)
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, servable, signature)
        for row_classes, row_scores in zip(classes, scores):
            result = response.result.classifications.add()
            for label, score in zip(row_classes, row_scores):
                result.classes.add(label=label.decode("utf-8"), score=float(score))
        return response

    @_rpc
    def Regress(self, request, context):
        servable, signature, examples = self._examples(request, "RegressionRequest")
        values = runner.regress(servable, signature, examples, self.limits, self.batching)
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, servable, signature)
        for value in values:
            response.result.regressions.add(value=float(value))
        return response

    def _examples(self, request, what: str) -> Tuple[Servable, str, List[tf.train.Example]]:
        """(servable, signature name, tf.Examples) of a Classification- or RegressionRequest."""
        servable = self.repository.get(request.model_spec.name, requested_version(request.model_spec))
        signature = request.model_spec.signature_name or runner.DEFAULT_SIGNATURE
        return servable, signature, input_examples(request.input, what)

    @_rpc
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if not fields:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise invalid(f"Metadata field {unsupported[0]} is not supported (use {SIGNATURE_DEF_FIELD!r})")
        servable = self.repository.get(request.model_spec.name, requested_version(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, servable)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(servable))
        return response


def signature_def_map(servable: Servable):
    result = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in servable.signature_defs.items():
        result.signature_def[name].CopyFrom(sig)
    return result


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus (HandleReloadConfigRequest stays UNIMPLEMENTED: versions come from the folder)."""

    def __init__(self, repository: ModelRepository):
        self.repository = repository

    @_rpc
    def GetModelStatus(self, request, context):
        spec = request.model_spec
        if not spec.name:
            raise invalid("model_spec.name is required")
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.repository.status(spec.name, requested_version(spec)):
            item = response.model_version_status.add(version=status.version)
            item.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            if status.error:
                item.status.error_code = 13   # tensorflow.error.Code INTERNAL
                item.status.error_message = status.error
        return response


def add_services(server: grpc.Server, repository: ModelRepository, limits: runner.Limits,
                 batching: Optional[Batching] = None) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(repository, limits, batching), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository), server)
