"""One error type for both protocols, carrying the canonical code TF Serving would answer with."""
from __future__ import annotations

from tfpipeline.errors import TfpipelineError

# canonical code -> HTTP status, as TF Serving's REST layer maps them
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "FAILED_PRECONDITION": 400,
               "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "UNIMPLEMENTED": 501, "INTERNAL": 500}


class ServingError(TfpipelineError):
    """A request the server refuses; ``code`` is a grpc.StatusCode name (and ``http_status`` its REST twin)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {code}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)
