"""REST front end with TF Serving's URLs and JSON bodies (stdlib ThreadingHTTPServer).

    GET  /v1/models/NAME[/versions/N]            model status
    GET  /v1/models/NAME[/versions/N]/metadata   signature defs
    POST /v1/models/NAME[/versions/N]:predict    {"signature_name", "instances" | "inputs"}
    POST /v1/models/NAME[/versions/N]:classify   {"signature_name", "context", "examples"}
    POST /v1/models/NAME[/versions/N]:regress    {"signature_name", "context", "examples"} -> {"result": [v, ...]}

Errors are ``{"error": "..."}`` with TF Serving's HTTP status for the code.
"""
from __future__ import annotations

import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional, Tuple

import tensorflow as tf
from google.protobuf import json_format

from serving import runner
from serving.batching import Batching
from serving.errors import ServingError, invalid, not_found
from serving.grpc_service import signature_def_map
from serving.json_tensors import array_to_json, example_from_json, json_to_array, named_inputs, rows_to_columns
from serving.repository import ModelRepository

log = logging.getLogger(__name__)

MODEL_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                        r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?/?$")
DEFAULT_MAX_BODY_BYTES = 32 << 20


class RestApi:
    """The request -> (status, JSON) logic, separate from HTTP plumbing so it is easy to test."""

    def __init__(self, repository: ModelRepository, limits: runner.Limits, batching: Optional[Batching] = None):
        self.repository, self.limits, self.batching = repository, limits, batching

    def handle(self, method: str, path: str, body: bytes) -> Tuple[int, dict]:
        try:
            return 200, self._route(method, path, body)
        except ServingError as e:
            return e.http_status, {"error": e.message}
        except Exception as e:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("REST %s %s failed", method, path)
            return 500, {"error": f"{type(e).__name__}: {e}"}

    def _route(self, method: str, path: str, body: bytes) -> dict:
        match = MODEL_PATH.match(path.split("?", 1)[0])
        if not match:
            raise not_found(f"Malformed request: {method} {path} (see /v1/models/NAME[/versions/N][:predict])")
        name, version, verb = match["name"], _version(match["version"]), match["verb"]
        if method == "GET" and not verb:
            return self.metadata(name, version) if match["metadata"] else self.status(name, version)
        endpoint = {"predict": self.predict, "classify": self.classify, "regress": self.regress}.get(verb)
        if method == "POST" and endpoint is not None and not match["metadata"]:
            return endpoint(name, version, _parse_json(body))
        raise not_found(f"Malformed request: {method} {path}")

    # ------------------------------------------------------------------ endpoints
    def status(self, name: str, version: Optional[int]) -> dict:
        return {"model_version_status": [
            {"version": str(s.version), "state": s.state,
             "status": {"error_code": "INTERNAL" if s.error else "OK", "error_message": s.error}}
            for s in self.repository.status(name, version)]}

    def metadata(self, name: str, version: Optional[int]) -> dict:
        servable = self.repository.get(name, version)
        defs = json_format.MessageToDict(signature_def_map(servable), preserving_proto_field_name=True)
        return {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": defs}}

    def predict(self, name: str, version: Optional[int], request: dict) -> dict:
        servable = self.repository.get(name, version)
        signature = _signature_name(request)
        specs = runner.input_specs(servable, signature)
        names = sorted(specs)
        if ("instances" in request) == ("inputs" in request):
            raise invalid("the request must have exactly one of 'instances' (row format) or 'inputs' (columnar)")
        row_format = "instances" in request
        if row_format:
            values = rows_to_columns(request["instances"], names)
        else:
            values = named_inputs(request["inputs"], names, "'inputs'")
        arrays = {}
        for key, value in values.items():
            if key not in specs:
                raise invalid(f"unknown input {key!r}; signature {signature or runner.DEFAULT_SIGNATURE!r} "
                              f"has inputs {names}")
            arrays[key] = json_to_array(value, specs[key].dtype, f"input {key!r}")
        outputs = runner.predict(servable, signature, arrays, self.limits, batching=self.batching)
        encoded = {k: array_to_json(v, k) for k, v in sorted(outputs.items())}
        if not row_format:
            return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}
        if len(encoded) == 1:
            return {"predictions": next(iter(encoded.values()))}
        rows = len(next(iter(encoded.values())))
        return {"predictions": [{k: v[i] for k, v in encoded.items()} for i in range(rows)]}

    def classify(self, name: str, version: Optional[int], request: dict) -> dict:
        servable = self.repository.get(name, version)
        examples = _examples(request, "classify")
        classes, scores = runner.classify(servable, _signature_name(request), examples, self.limits, self.batching)
        return {"result": [[[c.decode("utf-8"), float(s)] for c, s in zip(row_c, row_s)]
                           for row_c, row_s in zip(classes, scores)]}

    def regress(self, name: str, version: Optional[int], request: dict) -> dict:
        """TF Serving's REST answer for regress is a flat list: one float per example."""
        servable = self.repository.get(name, version)
        values = runner.regress(servable, _signature_name(request), _examples(request, "regress"), self.limits,
                                self.batching)
        return {"result": [float(v) for v in values]}


def _examples(request: dict, verb: str) -> List[tf.train.Example]:
    """``examples`` (+ ``context``, whose features every example gets unless it has its own) as tf.Examples."""
    examples = request.get("examples")
    if not isinstance(examples, list):
        raise invalid(f"{verb} needs 'examples': a list of feature objects, e.g. [{{\"text\": \"...\"}}]")
    context = request.get("context") or {}
    if not isinstance(context, dict):
        raise invalid("'context' must be an object of feature name -> value")
    merged = []
    for i, features in enumerate(examples):
        if not isinstance(features, dict):
            raise invalid(f"examples[{i}] must be an object of feature name -> value")
        merged.append(example_from_json({**context, **features}, f"examples[{i}]"))
    return merged


def _version(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    if not text.isdigit():
        raise invalid(f"version must be an integer, got {text!r}")
    return int(text)


def _signature_name(request: dict) -> str:
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid("'signature_name' must be a string")
    return name


def _parse_json(body: bytes) -> dict:
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid(f"malformed JSON request body: {e}") from None
    if not isinstance(request, dict):
        raise invalid("the JSON request body must be an object")
    return request


def make_http_server(host: str, port: int, api: RestApi,
                     max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> ThreadingHTTPServer:
    """A threading HTTP/1.1 server (keep-alive) that hands every request to ``api``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tfpipeline-serving"

        def do_GET(self):
            self._reply(*api.handle("GET", self.path, b""))

        def do_POST(self):
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                return self._reply(411, {"error": "a Content-Length header is required"})
            if int(length) > max_body_bytes:
                self.close_connection = True
                return self._reply(400, {"error": f"request body of {length} bytes exceeds the server limit "
                                                  f"of {max_body_bytes}"})
            self._reply(*api.handle("POST", self.path, self.rfile.read(int(length))))

        def _reply(self, status: int, payload: dict):
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):  # route access logs to logging instead of stderr
            log.debug("%s - %s", self.address_string(), fmt % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
