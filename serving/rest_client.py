"""Client for TF Serving's REST API over urllib (works against real TF Serving and ``ModelServer``).

Standard library only (no TensorFlow, no gRPC), so a REST caller stays light:

    RestClient("http://localhost:8501", "sentiment").predict_texts(["great film"])
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple


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

    def url(self, version: Optional[int], suffix: str = "") -> str:
        """``/v1/models/NAME[/versions/N]`` + ``suffix`` (e.g. ``:predict``) on this client's server."""
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
        return self.request(self.url(version, ":predict"), body)

    def predict_texts(self, texts: Sequence[str], signature_name: Optional[str] = None,
                      version: Optional[int] = None) -> List[dict]:
        """One prediction object per text (row format)."""
        return self.predict(instances=list(texts), signature_name=signature_name, version=version)["predictions"]

    def predict_images(self, images: Sequence[bytes], signature_name: Optional[str] = None,
                       version: Optional[int] = None) -> List[dict]:
        """One prediction object per encoded image (row format, bytes sent as {"b64": ...})."""
        instances = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
        return self.predict(instances=instances, signature_name=signature_name, version=version)["predictions"]

    def classify(self, texts: Sequence[str], signature_name: str = "classify",
                 version: Optional[int] = None) -> List[List[Tuple[str, float]]]:
        """``:classify`` on ``{"text": ...}`` examples -> per text [(label, score), ...]."""
        result = self.request(self.url(version, ":classify"), _text_examples(texts, signature_name))["result"]
        return [[(label, score) for label, score in row] for row in result]

    def regress(self, texts: Sequence[str], signature_name: str = "regress",
                version: Optional[int] = None) -> List[float]:
        """``:regress`` on ``{"text": ...}`` examples -> one value per text."""
        return self.request(self.url(version, ":regress"), _text_examples(texts, signature_name))["result"]

    def metadata(self, version: Optional[int] = None) -> dict:
        """{signature name: SignatureDef as JSON}."""
        return self.request(self.url(version, "/metadata"))["metadata"]["signature_def"]["signature_def"]

    def status(self, version: Optional[int] = None) -> List[dict]:
        return self.request(self.url(version))["model_version_status"]


def _text_examples(texts: Sequence[str], signature_name: str) -> dict:
    """The ``:classify`` / ``:regress`` body for texts: one example with a ``text`` feature each."""
    return {"signature_name": signature_name, "examples": [{"text": t} for t in texts]}
