"""``ModelServer``: repository + version poller + gRPC and REST front ends in one process.

For development, tests and small deployments; production uses the real
``tensorflow/serving`` image with the same export folder (serving/configs/).

    with ModelServer("exports", grpc_port=0, rest_port=0) as server:   # 0 = any free port
        print(server.grpc_target, server.rest_url)

``batching=BatchingParameters(...)`` turns on TF Serving-style request batching
(``serving.batching``): both front ends route predict/classify through the same
per-signature queues, so gRPC and REST requests merge with each other.
"""
from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Any, Optional

import grpc

from tfpipeline.errors import ConfigError

from serving.batching import Batching, BatchingParameters, batching_workers
from serving.errors import ServingError
from serving.grpc_service import add_services
from serving.repository import ModelRepository
from serving.rest import DEFAULT_MAX_BODY_BYTES, RestApi, make_http_server
from serving.runner import Limits

log = logging.getLogger(__name__)
GRPC_MAX_MESSAGE_BYTES = 64 << 20
DEFAULT_WORKERS = 8


class ModelServer:
    """Serves every model under ``model_base``; ``None`` for a port disables that protocol.

    ``workers`` is the gRPC request thread pool (default 8; with batching
    ``batching_workers(batching)``, enough waiting requests to fill every batch
    thread's batch: a request waits for its batch in its own thread, so the pool
    bounds how many gRPC requests can merge). ``low_priority_loads``: new
    versions load behind the requests being answered (``ModelRepository``).
    ``prefer_tflite_model``: versions exported with ``--optimize compact+tflite`` answer from their
    ``model.tflite`` (``serving.tflite_pool``; TF Serving's ``--prefer_tflite_model``).
    """

    def __init__(self, model_base: str, *, host: str = "127.0.0.1", grpc_port: Optional[int] = 8500,
                 rest_port: Optional[int] = 8501, limits: Optional[Limits] = None, poll_seconds: float = 5.0,
                 keep_versions: Optional[int] = None, workers: Optional[int] = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, batching: Optional[BatchingParameters] = None,
                 low_priority_loads: bool = True, prefer_tflite_model: bool = False, tflite_interpreters: int = 1):
        if grpc_port is None and rest_port is None:
            raise ConfigError("enable at least one of gRPC and REST")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.repository = ModelRepository(model_base, keep_versions=keep_versions,
                                          low_priority_loads=low_priority_loads,
                                          prefer_tflite_model=prefer_tflite_model,
                                          tflite_interpreters=tflite_interpreters)
        self.limits = limits or Limits()
        self.batching_parameters = batching
        if workers is None:
            workers = DEFAULT_WORKERS if batching is None else batching_workers(batching, DEFAULT_WORKERS)
        if batching is not None and self.limits.max_batch_size > batching.max_batch_size:
            log.warning("requests of up to %d rows are accepted but batching max_batch_size is %d: larger requests "
                        "get INVALID_ARGUMENT", self.limits.max_batch_size, batching.max_batch_size)
        self.batching: Optional[Batching] = None     # created by start()
        self.host, self.poll_seconds, self.workers = host, poll_seconds, workers
        self._grpc_port, self._rest_port, self._max_body = grpc_port, rest_port, max_body_bytes
        self._grpc: Optional[grpc.Server] = None
        self._http = None
        self._threads = []
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ModelServer":
        if self.batching_parameters is not None:
            self.batching = Batching(self.batching_parameters, is_current=self._is_current)
        self.reload()
        if not self.repository.model_names():
            log.warning("no models found under %s yet; polling for them", self.repository.base_dir)
        if self._grpc_port is not None:
            options = [("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                       ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES)]
            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers), options=options)
            add_services(self._grpc, self.repository, self.limits, self.batching)
            self._grpc_port = self._grpc.add_insecure_port(f"{self.host}:{self._grpc_port}")
            self._grpc.start()
        if self._rest_port is not None:
            self._http = make_http_server(self.host, self._rest_port,
                                          RestApi(self.repository, self.limits, self.batching), self._max_body)
            self._rest_port = self._http.server_address[1]
            self._spawn(self._http.serve_forever, "rest")
        if self.poll_seconds and self.poll_seconds > 0:
            self._spawn(self._poll, "version-poller")
        log.info("serving %s from %s (gRPC %s, REST %s)", ", ".join(self.repository.model_names()) or "nothing",
                 self.repository.base_dir, self.grpc_target, self.rest_url)
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._stopped.set()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self.batching is not None:
            self.batching.close()         # requests still queued get UNAVAILABLE; batch threads are joined
        for thread in self._threads:
            thread.join(timeout=5)

    def wait(self) -> None:
        """Block until ``stop()`` (the CLI calls this and stops on Ctrl-C)."""
        while not self._stopped.wait(1.0):
            pass

    def reload(self) -> dict:
        """Pick up new/removed versions now (the poller does this every ``poll_seconds``)."""
        changes = self.repository.reload()
        if self.batching is not None:
            self.batching.retire()        # queues of unloaded/replaced versions: run what they hold, then close
        return changes

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def grpc_port(self) -> Optional[int]:
        return self._grpc_port

    @property
    def rest_port(self) -> Optional[int]:
        return self._rest_port

    @property
    def grpc_target(self) -> Optional[str]:
        return None if self._grpc_port is None else f"{self.host}:{self._grpc_port}"

    @property
    def rest_url(self) -> Optional[str]:
        return None if self._rest_port is None else f"http://{self.host}:{self._rest_port}"

    # ------------------------------------------------------------------ internals
    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=f"serving-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _is_current(self, servable: Any) -> bool:
        """Whether ``servable`` is still the loaded object for its model version (batching drops stale queues)."""
        try:
            return self.repository.get(servable.name, servable.version) is servable
        except ServingError:
            return False

    def _poll(self) -> None:
        while not self._stopped.wait(self.poll_seconds):
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - keep polling (e.g. the base folder is briefly unreadable)
                log.exception("version poll failed")
