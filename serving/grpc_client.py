"""Client for TF Serving's gRPC API (works against real TF Serving and ``ModelServer``).

Built only on the stock ``tensorflow_serving.apis`` stubs, so nothing here
depends on the embedded server.

    client = GrpcClient("localhost:8500", "sentiment")
    client.predict_texts(["great film"])        # {"label": array([b"pos"]), "scores": ..., ...}
    client.classify(["great film"])             # [[("neg", 0.1), ("pos", 0.9)]]
    client.regress(["great film"])              # [4.5]  (a regression export's ``regress`` signature)
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)


class GrpcClient:
    """PredictionService / ModelService stubs with numpy in and out. Errors are ``grpc.RpcError``."""

    def __init__(self, target: str, model_name: str, *, timeout: float = 30.0, version: Optional[int] = None,
                 max_message_bytes: int = 64 << 20):
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.model_name, self.timeout, self.version = model_name, timeout, version

    def _spec(self, spec, signature_name: str = "", version: Optional[int] = None) -> None:
        spec.name = self.model_name
        version = version if version is not None else self.version
        if version is not None:
            spec.version.value = int(version)
        if signature_name:
            spec.signature_name = signature_name

    def predict(self, inputs: Mapping[str, Any], signature_name: str = "serving_default",
                version: Optional[int] = None, output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        """Named inputs (lists or arrays) -> named output arrays (strings come back as bytes)."""
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature_name, version)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        request.output_filter.extend(output_filter)
        response = self.predictions.Predict(request, timeout=self.timeout)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def predict_texts(self, texts: Sequence[str], signature_name: str = "serving_default",
                      version: Optional[int] = None) -> Dict[str, np.ndarray]:
        return self.predict({"text": [t.encode("utf-8") for t in texts]}, signature_name, version)

    def predict_ids(self, input_ids, attention_mask, version: Optional[int] = None) -> Dict[str, np.ndarray]:
        return self.predict({"input_ids": np.asarray(input_ids, np.int32),
                             "attention_mask": np.asarray(attention_mask, np.int32)}, "predict_ids", version)

    def classify(self, texts: Sequence[str], signature_name: str = "classify",
                 version: Optional[int] = None) -> List[List[Tuple[str, float]]]:
        """Classify API on ``{"text": ...}`` tf.Examples -> per text [(label, score), ...]."""
        request = classification_pb2.ClassificationRequest()
        self._text_examples(request, texts, signature_name, version)
        response = self.predictions.Classify(request, timeout=self.timeout)
        return [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]

    def regress(self, texts: Sequence[str], signature_name: str = "regress",
                version: Optional[int] = None) -> List[float]:
        """Regress API on ``{"text": ...}`` tf.Examples -> one value per text."""
        request = regression_pb2.RegressionRequest()
        self._text_examples(request, texts, signature_name, version)
        response = self.predictions.Regress(request, timeout=self.timeout)
        return [r.value for r in response.result.regressions]

    def _text_examples(self, request, texts: Sequence[str], signature_name: str, version: Optional[int]) -> None:
        """Fill a Classification- or RegressionRequest: model spec, one tf.Example (bytes ``text``) per text."""
        self._spec(request.model_spec, signature_name, version)
        for text in texts:
            example = request.input.example_list.examples.add()
            example.features.feature["text"].bytes_list.value.append(text.encode("utf-8"))

    def metadata(self, version: Optional[int] = None) -> Dict[str, Any]:
        """{signature name: SignatureDef proto} from GetModelMetadata."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version=version)
        response = self.predictions.GetModelMetadata(request, timeout=self.timeout)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        return dict(defs.signature_def)

    def status(self, version: Optional[int] = None) -> List[Dict[str, Any]]:
        """[{version, state, error}] from ModelService.GetModelStatus."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version=version)
        response = self.models.GetModelStatus(request, timeout=self.timeout)
        state = get_model_status_pb2.ModelVersionStatus.State
        return [{"version": s.version, "state": state.Name(s.state), "error": s.status.error_message}
                for s in response.model_version_status]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
