"""Serve tfpipeline exports the TF Serving way: an embedded gRPC + REST server and clients.

``ModelServer`` speaks TF Serving's protocol (PredictionService, ModelService,
/v1/models REST API) for development, tests and small deployments; the same
export folder runs unchanged in the official ``tensorflow/serving`` image
(``serving/configs/``). The clients work against either; ``serving.rest_client``
needs only the standard library, so import it directly to avoid loading TensorFlow.
"""
from serving.errors import ServingError
from serving.grpc_client import GrpcClient
from serving.repository import ModelRepository
from serving.rest_client import RestClient, RestError
from serving.runner import Limits
from serving.server import ModelServer

__all__ = ["ModelServer", "ModelRepository", "GrpcClient", "RestClient", "RestError", "ServingError", "Limits"]
