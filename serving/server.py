"""``ModelServer``: repository + version poller + gRPC and REST front ends in one process.

For development, tests and small deployments; production uses the real
``tensorflow/serving`` image with the same export folder (serving/configs/).

    with ModelServer("exports", grpc_port=0, rest_port=0) as server:   # 0 = any free port
        print(server.grpc_target, server.rest_url)
"""
from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Optional

import grpc

from tfpipeline.errors import ConfigError

from serving.grpc_service import add_services
from serving.repository import ModelRepository
from serving.rest import DEFAULT_MAX_BODY_BYTES, RestApi, make_http_server
from serving.runner import Limits

log = logging.getLogger(__name__)
GRPC_MAX_MESSAGE_BYTES = 64 << 20


class ModelServer:
    """Serves every model under ``model_base``; ``None`` for a port disables that protocol."""

    def __init__(self, model_base: str, *, host: str = "127.0.0.1", grpc_port: Optional[int] = 8500,
                 rest_port: Optional[int] = 8501, limits: Optional[Limits] = None, poll_seconds: float = 5.0,
                 keep_versions: Optional[int] = None, workers: int = 8,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        if grpc_port is None and rest_port is None:
            raise ConfigError("enable at least one of gRPC and REST")
        self.repository = ModelRepository(model_base, keep_versions=keep_versions)
        self.limits = limits or Limits()
        self.host, self.poll_seconds, self.workers = host, poll_seconds, workers
        self._grpc_port, self._rest_port, self._max_body = grpc_port, rest_port, max_body_bytes
        self._grpc: Optional[grpc.Server] = None
        self._http = None
        self._threads = []
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ModelServer":
        self.reload()
        if not self.repository.model_names():
            log.warning("no models found under %s yet; polling for them", self.repository.base_dir)
        if self._grpc_port is not None:
            options = [("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                       ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES)]
            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers), options=options)
            add_services(self._grpc, self.repository, self.limits)
            self._grpc_port = self._grpc.add_insecure_port(f"{self.host}:{self._grpc_port}")
            self._grpc.start()
        if self._rest_port is not None:
            self._http = make_http_server(self.host, self._rest_port, RestApi(self.repository, self.limits),
                                          self._max_body)
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
        for thread in self._threads:
            thread.join(timeout=5)

    def wait(self) -> None:
        """Block until ``stop()`` (the CLI calls this and stops on Ctrl-C)."""
        while not self._stopped.wait(1.0):
            pass

    def reload(self) -> dict:
        """Pick up new/removed versions now (the poller does this every ``poll_seconds``)."""
        return self.repository.reload()

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

    def _poll(self) -> None:
        while not self._stopped.wait(self.poll_seconds):
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - keep polling (e.g. the base folder is briefly unreadable)
                log.exception("version poll failed")
