"""The embedded TF Serving-compatible server: gRPC and REST round trips with stock clients,
error codes for bad requests (and serving on afterwards), version pick-up, the ``serve`` CLI."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from serving import GrpcClient, Limits, ModelServer, RestClient, RestError
from tfpipeline.export import ASSETS_EXTRA
from tfpipeline.export.warmup import WARMUP_FILE, read_warmup_requests
from conftest import CLF_LABELS, CLF_NAME, NER_NAME, TEXTS, copy_version

MAX_BATCH, MAX_TEXT = 8, 500


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("serving_base"))
    for name in (CLF_NAME, NER_NAME):
        os.makedirs(os.path.join(base, name))
        copy_version(exports["base"], base, name)
    srv = ModelServer(base, grpc_port=0, rest_port=0, poll_seconds=0,
                      limits=Limits(max_batch_size=MAX_BATCH, max_text_bytes=MAX_TEXT))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


@pytest.fixture(scope="module")
def grpc_clf(server):
    with GrpcClient(server.grpc_target, CLF_NAME, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def rest_clf(server):
    return RestClient(server.rest_url, CLF_NAME, timeout=30)


CLF_TEXTS = TEXTS[:4]


# --------------------------------------------------------------------------- gRPC round trips
def test_grpc_predict_with_stock_stub(stubs, clf_predictor):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = CLF_NAME
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(CLF_TEXTS))
    response = stubs[0].Predict(request, timeout=30)
    assert response.model_spec.name == CLF_NAME and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    scores = tf.make_ndarray(response.outputs["scores"])
    np.testing.assert_allclose(scores, clf_predictor.class_probabilities(CLF_TEXTS), atol=1e-5)
    assert [x.decode() for x in tf.make_ndarray(response.outputs["label"])] == \
        [CLF_LABELS[i] for i in scores.argmax(-1)]
    assert response.outputs["label_id"].dtype == tf.int32.as_datatype_enum


def test_grpc_output_filter_and_predict_ids(grpc_clf, exports):
    from tfpipeline.data.tokenization import TextEncoder

    filtered = grpc_clf.predict({"text": CLF_TEXTS}, output_filter=["label"])
    assert set(filtered) == {"label"}
    encoder = TextEncoder.from_directory(exports["clf_dir"])
    features = encoder.pad(encoder.encode(tf.constant(CLF_TEXTS)))
    by_ids = grpc_clf.predict_ids(features["input_ids"].numpy(), features["attention_mask"].numpy())
    np.testing.assert_allclose(by_ids["scores"], grpc_clf.predict_texts(CLF_TEXTS)["scores"], atol=1e-5)


def test_grpc_classify_with_stock_stub(stubs, clf_predictor):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = CLF_NAME
    request.model_spec.signature_name = "classify"
    for text in CLF_TEXTS:
        request.input.example_list.examples.add().features.feature["text"].bytes_list.value.append(text.encode())
    response = stubs[0].Classify(request, timeout=30)
    assert response.model_spec.version.value == 1
    expected = clf_predictor.class_probabilities(CLF_TEXTS)
    for row, probs in zip(response.result.classifications, expected):
        assert [c.label for c in row.classes] == CLF_LABELS
        np.testing.assert_allclose([c.score for c in row.classes], probs, atol=1e-5)


def test_grpc_classify_with_context(grpc_clf, stubs):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = CLF_NAME, "classify"
    block = request.input.example_list_with_context
    block.context.features.feature["text"].bytes_list.value.append(b"great")
    block.examples.add()                                   # text comes from the context
    response = stubs[0].Classify(request, timeout=30)
    direct = grpc_clf.classify(["great"])[0]
    np.testing.assert_allclose([c.score for c in response.result.classifications[0].classes],
                               [s for _, s in direct], atol=1e-6)


def test_grpc_metadata_and_status(stubs, grpc_clf):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = CLF_NAME
    response = stubs[0].GetModelMetadata(request, timeout=30)
    defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(defs)
    assert set(defs.signature_def) == {"serving_default", "predict", "predict_pair", "classify", "predict_ids"}
    assert defs.signature_def["classify"].method_name == "tensorflow/serving/classify"
    assert defs.signature_def["serving_default"].inputs["text"].dtype == tf.string.as_datatype_enum
    assert grpc_clf.metadata()["predict_ids"].outputs["scores"].dtype == tf.float32.as_datatype_enum

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = CLF_NAME
    status = stubs[1].GetModelStatus(status_request, timeout=30).model_version_status
    assert [(s.version, s.state) for s in status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    assert grpc_clf.status() == [{"version": 1, "state": "AVAILABLE", "error": ""}]


def test_grpc_ner_entities_match_predictor(server, ner_predictor):
    texts = TEXTS[:3]
    with GrpcClient(server.grpc_target, NER_NAME) as client:
        out = client.predict_texts(texts)
    for i, result in enumerate(ner_predictor.extract(texts)):
        n, e = int(out["num_tokens"][i]), int(out["num_entities"][i])
        assert [t.decode() for t in out["labels"][i, :n]] == [t["label"] for t in result["tokens"]]
        assert out["start"][i, :n].tolist() == [t["start"] for t in result["tokens"]]
        assert [t.decode() for t in out["entity_text"][i, :e]] == [x["text"] for x in result["entities"]]
        assert out["entity_start"][i, :e].tolist() == [x["start"] for x in result["entities"]]


# --------------------------------------------------------------------------- REST round trips
def test_rest_predict_row_and_columnar_formats(rest_clf, clf_predictor):
    expected = clf_predictor.class_probabilities(CLF_TEXTS)
    rows = rest_clf.predict(instances=CLF_TEXTS)["predictions"]
    assert [set(r) for r in rows] == [{"label", "label_id", "scores"}] * len(CLF_TEXTS)
    np.testing.assert_allclose([r["scores"] for r in rows], expected, atol=1e-5)
    assert [r["label"] for r in rows] == [CLF_LABELS[i] for i in expected.argmax(-1)]

    named = rest_clf.predict(instances=[{"text": t} for t in CLF_TEXTS], signature_name="predict")["predictions"]
    b64 = rest_clf.predict(instances=[{"b64": base64.b64encode(t.encode()).decode()} for t in CLF_TEXTS])
    columns = rest_clf.predict(inputs={"text": CLF_TEXTS})["outputs"]
    bare = rest_clf.predict(inputs=CLF_TEXTS)["outputs"]
    assert named == rows and b64["predictions"] == rows
    assert columns == bare and columns["label"] == [r["label"] for r in rows]
    np.testing.assert_allclose(columns["scores"], expected, atol=1e-5)


def test_rest_predict_ids_and_pairs(rest_clf, clf_predictor, exports):
    from tfpipeline.data.tokenization import TextEncoder

    encoder = TextEncoder.from_directory(exports["clf_dir"])
    f = encoder.pad(encoder.encode(tf.constant(CLF_TEXTS)))
    instances = [{"input_ids": ids, "attention_mask": mask}
                 for ids, mask in zip(f["input_ids"].numpy().tolist(), f["attention_mask"].numpy().tolist())]
    by_ids = rest_clf.predict(instances=instances, signature_name="predict_ids")["predictions"]
    np.testing.assert_allclose([r["scores"] for r in by_ids], clf_predictor.class_probabilities(CLF_TEXTS), atol=1e-5)
    pairs = rest_clf.predict(inputs={"text": ["a", "b"], "text_pair": ["c", "d"]}, signature_name="predict_pair")
    np.testing.assert_allclose(pairs["outputs"]["scores"], clf_predictor.class_probabilities(["a", "b"], ["c", "d"]),
                               atol=1e-5)


def test_rest_classify_metadata_status(rest_clf, grpc_clf):
    result = rest_clf.classify(CLF_TEXTS)
    assert [[label for label, _ in row] for row in result] == [CLF_LABELS] * len(CLF_TEXTS)
    np.testing.assert_allclose([[s for _, s in row] for row in result],
                               [[s for _, s in row] for row in grpc_clf.classify(CLF_TEXTS)], atol=1e-6)
    raw = rest_clf.request(rest_clf.url(None, ":classify"), {"signature_name": "classify",
                                                               "examples": [{"text": "great"}]})
    assert list(raw) == ["result"] and raw["result"][0][0][0] == "neg"

    assert rest_clf.status() == [{"version": "1", "state": "AVAILABLE",
                                  "status": {"error_code": "OK", "error_message": ""}}]
    meta = rest_clf.request(rest_clf.url(1, "/metadata"))
    assert meta["model_spec"] == {"name": CLF_NAME, "signature_name": "", "version": "1"}
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert defs["classify"]["method_name"] == "tensorflow/serving/classify"
    assert defs["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"


def test_rest_ner_row_format(server, ner_predictor):
    rows = RestClient(server.rest_url, NER_NAME).predict_texts(TEXTS[:2])
    expected = ner_predictor.extract(TEXTS[:2])
    for row, result in zip(rows, expected):
        n = row["num_tokens"]
        assert row["tokens"][:n] == [t["text"] for t in result["tokens"]]
        assert row["entity_type"][:row["num_entities"]] == [e["type"] for e in result["entities"]]


# --------------------------------------------------------------------------- bad requests
def _grpc_predict(stub, name=CLF_NAME, version=None, signature="", inputs=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    request.model_spec.signature_name = signature
    for key, value in (inputs if inputs is not None else {"text": ["fine"]}).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return stub.Predict(request, timeout=30)


def _grpc_classify_on(stub, signature):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = CLF_NAME, signature
    request.input.example_list.examples.add().features.feature["text"].bytes_list.value.append(b"x")
    return stub.Classify(request, timeout=30)


GRPC_BAD = {
    "unknown model": (lambda s: _grpc_predict(s, name="nope"), "NOT_FOUND"),
    "unknown version": (lambda s: _grpc_predict(s, version=9), "NOT_FOUND"),
    "unknown signature": (lambda s: _grpc_predict(s, signature="nope"), "NOT_FOUND"),
    "oversize batch": (lambda s: _grpc_predict(s, inputs={"text": ["x"] * (MAX_BATCH + 1)}), "INVALID_ARGUMENT"),
    "oversize text": (lambda s: _grpc_predict(s, inputs={"text": ["x" * (MAX_TEXT + 1)]}), "INVALID_ARGUMENT"),
    "wrong input name": (lambda s: _grpc_predict(s, inputs={"txt": ["x"]}), "INVALID_ARGUMENT"),
    "wrong dtype": (lambda s: _grpc_predict(s, inputs={"text": [1.5]}), "INVALID_ARGUMENT"),
    "wrong rank": (lambda s: _grpc_predict(s, inputs={"text": [["a"]]}), "INVALID_ARGUMENT"),
    "empty batch": (lambda s: _grpc_predict(s, inputs={"text": np.array([], dtype=object)}), "INVALID_ARGUMENT"),
    "ids out of vocabulary": (lambda s: _grpc_predict(s, signature="predict_ids", inputs={
        "input_ids": np.array([[101, 10 ** 8]], np.int32), "attention_mask": np.ones([1, 2], np.int32)}),
        "INVALID_ARGUMENT"),
    "classify on a predict signature": (lambda s: _grpc_classify_on(s, "serving_default"), "INVALID_ARGUMENT"),
    "metadata without fields": (lambda s: s.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": CLF_NAME}), timeout=30),
        "INVALID_ARGUMENT"),
}


@pytest.mark.parametrize("case", list(GRPC_BAD))
def test_grpc_bad_requests_get_codes_and_server_keeps_serving(stubs, case):
    call, code = GRPC_BAD[case]
    with pytest.raises(grpc.RpcError) as info:
        call(stubs[0])
    assert info.value.code() == getattr(grpc.StatusCode, code), info.value.details()
    assert info.value.details()
    assert _grpc_predict(stubs[0]).outputs["label"].string_val       # still serving


def _post(server, path, body: bytes):
    request = urllib.request.Request(server.rest_url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(server, path):
    try:
        with urllib.request.urlopen(server.rest_url + path, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


PREDICT = f"/v1/models/{CLF_NAME}:predict"
REST_BAD = {
    "unknown model": ("POST", "/v1/models/nope:predict", _json({"instances": ["x"]}), 404),
    "unknown model status": ("GET", "/v1/models/nope", b"", 404),
    "unknown version": ("POST", f"/v1/models/{CLF_NAME}/versions/9:predict", _json({"instances": ["x"]}), 404),
    "non-numeric version": ("GET", f"/v1/models/{CLF_NAME}/versions/latest", b"", 400),
    "unknown signature": ("POST", PREDICT, _json({"signature_name": "nope", "instances": ["x"]}), 404),
    "unknown path": ("GET", "/v2/whatever", b"", 404),
    "oversize batch": ("POST", PREDICT, _json({"instances": ["x"] * (MAX_BATCH + 1)}), 400),
    "oversize text": ("POST", PREDICT, _json({"instances": ["x" * (MAX_TEXT + 1)]}), 400),
    "oversize classify text": ("POST", f"/v1/models/{CLF_NAME}:classify",
                               _json({"signature_name": "classify", "examples": [{"text": "x" * (MAX_TEXT + 1)}]}), 400),
    "malformed JSON": ("POST", PREDICT, b'{"instances": ["x"', 400),
    "JSON not an object": ("POST", PREDICT, b'["x"]', 400),
    "wrong input name": ("POST", PREDICT, _json({"instances": [{"txt": "x"}]}), 400),
    "number for text": ("POST", PREDICT, _json({"instances": [3]}), 400),
    "both formats": ("POST", PREDICT, _json({"instances": ["x"], "inputs": ["x"]}), 400),
    "neither format": ("POST", PREDICT, _json({"signature_name": "predict"}), 400),
    "ragged ids": ("POST", PREDICT, _json({"signature_name": "predict_ids", "instances": [
        {"input_ids": [101, 102], "attention_mask": [1, 1]}, {"input_ids": [101], "attention_mask": [1]}]}), 400),
    "float ids": ("POST", PREDICT, _json({"signature_name": "predict_ids", "inputs": {
        "input_ids": [[101.5]], "attention_mask": [[1]]}}), 400),
    "classify without examples": ("POST", f"/v1/models/{CLF_NAME}:classify", _json({"signature_name": "classify"}), 400),
    "classify missing text feature": ("POST", f"/v1/models/{CLF_NAME}:classify",
                                      _json({"signature_name": "classify", "examples": [{"other": "x"}]}), 400),
}


@pytest.mark.parametrize("case", list(REST_BAD))
def test_rest_bad_requests_get_codes_and_server_keeps_serving(server, case):
    method, path, body, status = REST_BAD[case]
    code, payload = _get(server, path) if method == "GET" else _post(server, path, body)
    assert code == status, payload
    assert isinstance(payload.get("error"), str) and payload["error"]
    assert _post(server, PREDICT, _json({"instances": ["fine"]}))[0] == 200    # still serving


def test_rest_client_raises_rest_error(rest_clf):
    with pytest.raises(RestError) as info:
        rest_clf.predict(instances=["x"], version=42)
    assert info.value.status == 404 and "42" in info.value.message


def test_concurrent_requests_over_both_protocols(server, clf_predictor):
    expected = clf_predictor.class_probabilities(["great", "awful"])
    errors = []

    def worker(kind):
        try:
            for _ in range(5):
                if kind == "grpc":
                    with GrpcClient(server.grpc_target, CLF_NAME) as client:
                        scores = client.predict_texts(["great", "awful"])["scores"]
                else:
                    scores = [r["scores"] for r in RestClient(server.rest_url, CLF_NAME).predict_texts(["great", "awful"])]
                np.testing.assert_allclose(scores, expected, atol=1e-5)
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in ("grpc", "rest", "grpc", "rest")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


# --------------------------------------------------------------------------- versions
def test_new_version_is_picked_up_on_reload_and_removed_version_unloaded(server, exports, stubs, grpc_clf):
    base = server.repository.base_dir
    copy_version(exports["base"], base, CLF_NAME, as_version=2)
    assert _grpc_predict(stubs[0]).model_spec.version.value == 1          # not yet reloaded
    changes = server.reload()
    assert changes["loaded"] == [f"{CLF_NAME}/2"]
    assert [s["version"] for s in grpc_clf.status()] == [2, 1]
    assert _grpc_predict(stubs[0]).model_spec.version.value == 2          # latest by default
    assert _grpc_predict(stubs[0], version=1).model_spec.version.value == 1

    shutil.rmtree(os.path.join(base, CLF_NAME, "2"))
    assert server.reload()["unloaded"] == [f"{CLF_NAME}/2"]
    assert _grpc_predict(stubs[0]).model_spec.version.value == 1


def test_broken_version_is_reported_and_previous_keeps_serving(server, stubs, grpc_clf):
    broken = os.path.join(server.repository.base_dir, CLF_NAME, "5")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"not a saved model")
    try:
        assert server.reload()["failed"] == [f"{CLF_NAME}/5"]
        status = grpc_clf.status()
        assert status[0]["version"] == 5 and status[0]["state"] == "END" and status[0]["error"]
        assert _grpc_predict(stubs[0]).model_spec.version.value == 1
    finally:
        shutil.rmtree(broken)
        server.reload()
    assert [s["version"] for s in grpc_clf.status()] == [1]


def test_versions_are_warmed_up_before_they_are_published(server, exports, stubs, grpc_clf):
    """TF Serving's warmup file is replayed on load; a record that fails keeps the version out of service."""
    base = server.repository.base_dir
    copy_version(exports["base"], base, CLF_NAME, as_version=3)
    warm = os.path.join(base, CLF_NAME, "4")
    copy_version(exports["base"], base, CLF_NAME, as_version=4)
    records = read_warmup_requests(os.path.join(warm, ASSETS_EXTRA, WARMUP_FILE))
    records[0].predict_log.request.model_spec.signature_name = "no_such_signature"
    with tf.io.TFRecordWriter(os.path.join(warm, ASSETS_EXTRA, WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    try:
        changes = server.reload()
        assert changes["loaded"] == [f"{CLF_NAME}/3"] and changes["failed"] == [f"{CLF_NAME}/4"]
        assert server.repository.get(CLF_NAME, 3).warmup_requests == len(records) == 3   # text, ids, classify
        assert "no_such_signature" in grpc_clf.status()[0]["error"]
        assert _grpc_predict(stubs[0]).model_spec.version.value == 3          # the failed version never serves
    finally:
        shutil.rmtree(os.path.join(base, CLF_NAME, "3"))
        shutil.rmtree(warm)
        server.reload()
    assert [s["version"] for s in grpc_clf.status()] == [1]


LOAD_CLIENTS = 4
P99_SLACK_SECONDS = 0.010


@pytest.mark.serial   # asserts latency bounds: run alone (make test)
def test_load_while_a_new_version_is_published(exports, clf_predictor, tmp_path):
    """Issue #13 items 6 and 7, bounded: concurrent clients while the poller picks up a new version. Zero
    failed requests, every answer is its own text's, the new version answers after the change, and p99 during
    the change within 2x steady p99 (plus P99_SLACK_SECONDS: the tiny model's p99 is ~15-30 ms, where
    scheduler jitter alone is a few ms).

    The server loads versions behind the requests (``serving.repository.load_behind_requests``). Measured
    with this test on a busy 2-core machine, change/steady p99: 1.75x, 1.70x, 1.27x; the same with
    ``low_priority_loads=False``: 3.04x, 1.40x, 2.27x (MiniLM, bench/version_change.py: 0.9x vs 2.16x)."""
    base = str(tmp_path / "base")
    os.makedirs(os.path.join(base, CLF_NAME))
    copy_version(exports["base"], base, CLF_NAME)
    texts = [f"{a} {b}" for a in TEXTS for b in ("indeed", "so it seems", "", "and more")]
    expected = clf_predictor.class_probabilities(texts)
    records, failures, stop = [], [], threading.Event()
    with ModelServer(base, grpc_port=0, rest_port=None, poll_seconds=0.2) as server:
        channel = grpc.insecure_channel(server.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def client(first: int) -> None:
            n = first
            while not stop.is_set():
                index = n % len(texts)
                started = time.perf_counter()
                try:
                    response = _grpc_predict(stub, inputs={"text": [texts[index]]})
                    records.append((started, time.perf_counter() - started, index,
                                    tf.make_ndarray(response.outputs["scores"])[0], response.model_spec.version.value))
                except Exception as e:  # noqa: BLE001 - every failure is reported by the assertion below
                    failures.append(repr(e))
                n += LOAD_CLIENTS

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(LOAD_CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        change_start = time.perf_counter()
        copy_version(exports["base"], base, CLF_NAME, as_version=2)
        deadline = time.monotonic() + 60
        while server.repository.get(CLF_NAME).version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        published = time.perf_counter()
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        channel.close()
    assert not failures, failures[:3]
    assert not any(thread.is_alive() for thread in threads)
    for _, _, index, scores, _ in records:
        np.testing.assert_allclose(scores, expected[index], atol=1e-5)
    assert {version for *_, version in records} == {1, 2} and records[-1][-1] == 2
    steady = [latency for started, latency, *_ in records if started < change_start]
    change = [latency for started, latency, *_ in records if change_start <= started < published + 1.0]
    assert len(steady) > 20 and len(change) > 20
    steady_p99, change_p99 = np.percentile(steady, 99), np.percentile(change, 99)
    assert change_p99 <= 0.5 and steady_p99 <= 0.25, (steady_p99, change_p99)
    assert change_p99 <= 2 * steady_p99 + P99_SLACK_SECONDS, (steady_p99, change_p99)


def test_background_poller_picks_up_new_versions(exports, tmp_path):
    base = str(tmp_path / "base")
    os.makedirs(os.path.join(base, NER_NAME))
    copy_version(exports["base"], base, NER_NAME)
    with ModelServer(base, grpc_port=None, rest_port=0, poll_seconds=0.2) as srv:
        client = RestClient(srv.rest_url, NER_NAME)
        assert [s["version"] for s in client.status()] == ["1"]
        copy_version(exports["base"], base, NER_NAME, as_version=3)
        deadline = time.time() + 30
        while time.time() < deadline and len(client.status()) < 2:
            time.sleep(0.1)
        assert [s["version"] for s in client.status()] == ["3", "1"]


# --------------------------------------------------------------------------- CLI
def test_serve_cli_end_to_end(exports, tmp_path):
    base = str(tmp_path / "base")
    os.makedirs(os.path.join(base, CLF_NAME))
    copy_version(exports["base"], base, CLF_NAME)
    proc = subprocess.Popen([sys.executable, "-m", "tfpipeline.cli", "serve", "--model-base", base,
                             "--grpc-port", "0", "--rest-port", "0", "--poll-seconds", "0",
                             "--intra-op-threads", "1", "--inter-op-threads", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line, printed = "", []
        deadline = time.time() + 90
        while "serving" not in line and time.time() < deadline:
            line = proc.stdout.readline()
            printed.append(line)
            if not line and proc.poll() is not None:
                break
        assert "REST http://" in line, line
        assert "[tfpipeline] TF threads: intra-op 1, inter-op 2\n" in printed, printed  # read back from TF
        rest_url = line.split("REST ")[1].split()[0]
        grpc_target = line.split("gRPC ")[1].split(",")[0]
        assert RestClient(rest_url, CLF_NAME).status()[0]["state"] == "AVAILABLE"
        with GrpcClient(grpc_target, CLF_NAME) as client:
            assert client.predict_texts(["great"])["scores"].shape == (1, 2)
    finally:
        proc.send_signal(signal.SIGTERM)          # what docker stop / Kubernetes send
        assert proc.wait(timeout=30) == 0


def test_serve_cli_thread_errors(exports, tmp_path, capsys):
    from tfpipeline.cli import main

    args = ["serve", "--model-base", exports["base"], "--grpc-port", "-1", "--rest-port", "-1"]
    assert main(args + ["--intra-op-threads", "-1"]) == 2
    assert "thread counts must be >= 0" in capsys.readouterr().err
    # this test process has run TF ops already: TF refuses new pool sizes, the CLI says so instead of crashing
    assert main(args + ["--inter-op-threads", "3"]) == 2
    assert "cannot set TensorFlow threads now" in capsys.readouterr().err


# --------------------------------------------------------------------------- configs for real TF Serving
def test_tf_serving_configs_parse():
    import yaml
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serving", "configs")
    with open(os.path.join(configs, "models.config")) as f:
        parsed = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    models = {c.name: c.base_path for c in parsed.model_config_list.config}
    assert models == {CLF_NAME: f"/models/{CLF_NAME}", NER_NAME: f"/models/{NER_NAME}"}
    with open(os.path.join(configs, "k8s.yaml")) as f:
        docs = list(yaml.safe_load_all(f))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service"]
    in_map = text_format.Parse(docs[0]["data"]["models.config"], model_server_config_pb2.ModelServerConfig())
    assert in_map == parsed
    container = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("tensorflow/serving:")
    assert "--model_config_file=/config/models.config" in container["args"]
    with open(os.path.join(configs, "docker-compose.yml")) as f:
        service = yaml.safe_load(f)["services"]["tfserving"]
    assert "--model_config_file=/config/models.config" in service["command"]
    assert any(v.endswith(":/models:ro") for v in service["volumes"])
