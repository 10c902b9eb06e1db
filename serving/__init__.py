"""Serve tfpipeline exports the TF Serving way: an embedded gRPC + REST server and clients.

``ModelServer`` speaks TF Serving's protocol (PredictionService, ModelService,
/v1/models REST API) for development, tests and small deployments; the same
export folder runs unchanged in the official ``tensorflow/serving`` image
(``serving/configs/``). The clients work against either.
"""
from serving.client import GrpcClient, RestClient, RestError
from serving.errors import ServingError
from serving.runner import Limits


def __getattr__(name):  # the server pulls in grpc server machinery; import it on first use
    if name in ("ModelServer", "ModelRepository"):
        from serving import repository, server

        return server.ModelServer if name == "ModelServer" else repository.ModelRepository
    raise AttributeError(name)


__all__ = ["ModelServer", "ModelRepository", "GrpcClient", "RestClient", "RestError", "ServingError", "Limits"]
