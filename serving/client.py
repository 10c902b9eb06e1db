"""Clients for TF Serving's gRPC and REST APIs (work against real TF Serving and ``ModelServer``).

Built only on the stock ``tensorflow_serving.apis`` stubs and urllib, so
nothing here depends on the embedded server.

    client = GrpcClient("localhost:8500", "sentiment")
    client.predict_texts(["great film"])        # {"label": array([b"pos"]), "scores": ..., ...}
    client.classify(["great film"])             # [[("neg", 0.1), ("pos", 0.9)]]
    RestClient("http://localhost:8501", "sentiment").predict_texts(["great film"])
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tfpipeline import _env  # noqa: F401

import numpy as np


class GrpcClient:
    """PredictionService / ModelService stubs with numpy in and out. Errors are ``grpc.RpcError``."""

    def __init__(self, target: str, model_name: str, *, timeout: float = 30.0, version: Optional[int] = None,
                 max_message_bytes: int = 64 << 20):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

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
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

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
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, signature_name, version)
        for text in texts:
            example = request.input.example_list.examples.add()
            example.features.feature["text"].bytes_list.value.append(text.encode("utf-8"))
        response = self.predictions.Classify(request, timeout=self.timeout)
        return [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]

    def metadata(self, version: Optional[int] = None) -> Dict[str, Any]:
        """{signature name: SignatureDef proto} from GetModelMetadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version=version)
        response = self.predictions.GetModelMetadata(request, timeout=self.timeout)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        return dict(defs.signature_def)

    def status(self, version: Optional[int] = None) -> List[Dict[str, Any]]:
        """[{version, state, error}] from ModelService.GetModelStatus."""
        from tensorflow_serving.apis import get_model_status_pb2

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


class RestError(RuntimeError):
    """Non-200 answer from the REST API; ``status`` is the HTTP status, the message is TF Serving's error."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class RestClient:
    """TF Serving REST API over urllib; responses are the decoded JSON."""

    def __init__(self, base_url: str, model_name: str, *, timeout: float = 30.0, version: Optional[int] = None):
        self.base_url, self.model_name = base_url.rstrip("/"), model_name
        self.timeout, self.version = timeout, version

    def _url(self, version: Optional[int], suffix: str = "") -> str:
        version = version if version is not None else self.version
        path = f"{self.base_url}/v1/models/{self.model_name}"
        return path + (f"/versions/{int(version)}" if version is not None else "") + suffix

    def request(self, url: str, body: Optional[Any] = None) -> Any:
        """GET (no body) or POST JSON; raises RestError with the server's message on errors."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"))
        req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raw = e.read().decode("utf-8", errors="replace")
            try:
                message = json.loads(raw).get("error", raw)
            except (json.JSONDecodeError, AttributeError):
                message = raw
            raise RestError(e.code, message) from None

    def predict(self, *, instances: Optional[list] = None, inputs: Optional[Any] = None,
                signature_name: Optional[str] = None, version: Optional[int] = None) -> dict:
        """Raw ``:predict``: row format (``instances``) -> {"predictions"}, columnar (``inputs``) -> {"outputs"}."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= or inputs=")
        body: Dict[str, Any] = {"instances": instances} if instances is not None else {"inputs": inputs}
        if signature_name:
            body["signature_name"] = signature_name
        return self.request(self._url(version, ":predict"), body)

    def predict_texts(self, texts: Sequence[str], signature_name: Optional[str] = None,
                      version: Optional[int] = None) -> List[dict]:
        """One prediction object per text (row format)."""
        return self.predict(instances=list(texts), signature_name=signature_name, version=version)["predictions"]

    def classify(self, texts: Sequence[str], signature_name: str = "classify",
                 version: Optional[int] = None) -> List[List[Tuple[str, float]]]:
        body = {"signature_name": signature_name, "examples": [{"text": t} for t in texts]}
        result = self.request(self._url(version, ":classify"), body)["result"]
        return [[(label, score) for label, score in row] for row in result]

    def metadata(self, version: Optional[int] = None) -> dict:
        """{signature name: SignatureDef as JSON}."""
        return self.request(self._url(version, "/metadata"))["metadata"]["signature_def"]["signature_def"]

    def status(self, version: Optional[int] = None) -> List[dict]:
        return self.request(self._url(version))["model_version_status"]
