"""TF Serving's Regress API on the embedded server (gRPC ``Regress``, REST ``:regress``, clients, batching, warmup).

No trained model is needed: a tiny tf.Module SavedModel whose regression value is the byte length of the
``text`` feature makes every expected value obvious, and the test stays fast. Its ``regress`` signature
follows the tfpipeline regression contract (method ``tensorflow/serving/regress``, input ``inputs``:
serialized tf.Example [B], output ``outputs``: float32 [B]); ``regress_words`` answers [B, 1] (which TF
Serving also accepts), ``regress_ints`` a wrong (int32) output, and ``predict`` / ``serving_default`` are
predict-method signatures for the errors.
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, prediction_log_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from serving import GrpcClient, Limits, ModelServer, RestClient, RestError
from serving.batching import BatchingParameters
from tfpipeline.export import ASSETS_EXTRA
from tfpipeline.export.saved_model import set_method_names
from tfpipeline.export.warmup import WARMUP_FILE, text_example

NAME = "tiny_regressor"
MAX_BATCH = 4
TEXTS = ["a", "four", "seven w", ""]
WAIT = 30.0
REGRESS_METHODS = {name: tf.saved_model.REGRESS_METHOD_NAME for name in ("regress", "regress_words", "regress_ints")}
TEXT_FEATURE = {"text": tf.io.FixedLenFeature([], tf.string)}


class TinyRegressor(tf.Module):
    """outputs = scale * byte length of the ``text`` feature (scale is a variable, 1.0)."""

    def __init__(self):
        super().__init__()
        self.scale = tf.Variable(1.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress(self, inputs):
        text = tf.io.parse_example(inputs, TEXT_FEATURE)["text"]
        return {"outputs": self.scale * tf.cast(tf.strings.length(text), tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress_words(self, inputs):
        text = tf.io.parse_example(inputs, TEXT_FEATURE)["text"]
        words = tf.strings.split(text).row_lengths()
        return {"outputs": tf.cast(words, tf.float32)[:, None]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress_ints(self, inputs):
        return {"outputs": tf.strings.length(tf.io.parse_example(inputs, TEXT_FEATURE)["text"])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def predict(self, text):
        return {"outputs": self.scale * tf.cast(tf.strings.length(text), tf.float32)}


def export_tiny_regressor(base: str, version: int = 1) -> str:
    path = os.path.join(base, NAME, str(version))
    module = TinyRegressor()
    signatures = {"serving_default": module.predict.get_concrete_function(),
                  "predict": module.predict.get_concrete_function(),
                  "regress": module.regress.get_concrete_function(),
                  "regress_words": module.regress_words.get_concrete_function(),
                  "regress_ints": module.regress_ints.get_concrete_function()}
    tf.saved_model.save(module, path, signatures=signatures)
    set_method_names(path, REGRESS_METHODS)
    return path


def regress_log(examples, signature: str = "regress", context=None) -> prediction_log_pb2.PredictionLog:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = NAME, signature
    block = request.input.example_list_with_context if context is not None else request.input.example_list
    block.examples.extend(examples)
    if context is not None:
        block.context.CopyFrom(context)
    return prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=request))


def write_warmup(version_path: str, records) -> None:
    os.makedirs(os.path.join(version_path, ASSETS_EXTRA), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(version_path, ASSETS_EXTRA, WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record.SerializeToString())


def lengths(texts) -> list:
    return [float(len(t.encode("utf-8"))) for t in texts]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """BASE/NAME/1 with a warmup file: a regress_log whose text comes from the context (empty example)."""
    folder = str(tmp_path_factory.mktemp("regress_base"))
    path = export_tiny_regressor(folder)
    write_warmup(path, [regress_log([tf.train.Example()], context=text_example("warm")),
                        regress_log([text_example("warm up")], signature="regress_words")])
    return folder


@pytest.fixture(scope="module")
def server(base):
    with ModelServer(base, grpc_port=0, rest_port=0, poll_seconds=0, limits=Limits(max_batch_size=MAX_BATCH)) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def _regress_request(texts, signature="regress") -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = NAME
    if signature:
        request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(text_example(t) for t in texts)
    return request


def _post(server, path: str, body: dict):
    request = urllib.request.Request(server.rest_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --------------------------------------------------------------------------- gRPC
def test_grpc_regress_with_stock_stub(stub):
    response = stub.Regress(_regress_request(TEXTS), timeout=WAIT)
    assert [r.value for r in response.result.regressions] == lengths(TEXTS)
    spec = response.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == (NAME, 1, "regress")


def test_grpc_regress_with_context_and_a_b1_output(stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = NAME, "regress_words"
    block = request.input.example_list_with_context
    block.context.CopyFrom(text_example("from the context"))
    block.examples.extend([tf.train.Example(), text_example("own text")])     # example features win
    response = stub.Regress(request, timeout=WAIT)
    assert [r.value for r in response.result.regressions] == [3.0, 2.0]
    assert response.model_spec.signature_name == "regress_words"


def test_grpc_client_regress(server):
    with GrpcClient(server.grpc_target, NAME, timeout=WAIT) as client:
        assert client.regress(TEXTS) == lengths(TEXTS)
        assert client.regress(["two words"], signature_name="regress_words", version=1) == [2.0]


def _rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.details()
    return info.value


@pytest.mark.parametrize("signature", ["predict", ""])   # "" = serving_default, a predict signature here
def test_grpc_regress_on_a_predict_signature_is_invalid_argument(stub, signature):
    error = _rpc_error(lambda: stub.Regress(_regress_request(["x"], signature), timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("Expected regression signature method_name to be tensorflow/serving/regress. "
            "Was: tensorflow/serving/predict") in error.details()


def test_grpc_classify_on_a_regress_signature_is_invalid_argument(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = NAME, "regress"
    request.input.example_list.examples.append(text_example("x"))
    error = _rpc_error(lambda: stub.Classify(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Was: tensorflow/serving/regress" in error.details()


def test_grpc_regress_output_must_be_float(stub):
    error = _rpc_error(lambda: stub.Regress(_regress_request(["x"], "regress_ints"), timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "DT_FLOAT" in error.details()


def test_grpc_regress_bad_batches(stub):
    empty = _regress_request([])
    empty.input.example_list.SetInParent()
    no_input = regression_pb2.RegressionRequest(model_spec={"name": NAME, "signature_name": "regress"})
    for request, expected in [(empty, "empty"), (no_input, "input is empty"),
                              (_regress_request(["x"] * (MAX_BATCH + 1)), f"limit of {MAX_BATCH}")]:
        error = _rpc_error(lambda: stub.Regress(request, timeout=WAIT))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in error.details(), error.details()
    assert stub.Regress(_regress_request(["ok"]), timeout=WAIT).result.regressions[0].value == 2.0


# --------------------------------------------------------------------------- REST
def test_rest_regress(server):
    path = f"/v1/models/{NAME}/versions/1:regress"
    status, body = _post(server, path, {"signature_name": "regress", "examples": [{"text": t} for t in TEXTS]})
    assert status == 200 and body == {"result": lengths(TEXTS)}
    status, body = _post(server, path, {"signature_name": "regress_words", "context": {"text": "a b c"},
                                        "examples": [{}, {"text": "d e"}]})
    assert status == 200 and body == {"result": [3.0, 2.0]}
    assert RestClient(server.rest_url, NAME, timeout=WAIT).regress(TEXTS) == lengths(TEXTS)


REST_BAD = {
    "predict signature": ({"signature_name": "predict", "examples": [{"text": "x"}]}, "Expected regression"),
    "default signature is predict": ({"examples": [{"text": "x"}]}, "Was: tensorflow/serving/predict"),
    "empty examples": ({"signature_name": "regress", "examples": []}, "empty"),
    "no examples": ({"signature_name": "regress"}, "regress needs 'examples'"),
    "too many examples": ({"signature_name": "regress", "examples": [{"text": "x"}] * (MAX_BATCH + 1)},
                          f"limit of {MAX_BATCH}"),
    "context not an object": ({"signature_name": "regress", "examples": [{}], "context": ["x"]}, "'context'"),
}


@pytest.mark.parametrize("case", list(REST_BAD))
def test_rest_regress_bad_requests_are_400(server, case):
    body, expected = REST_BAD[case]
    status, payload = _post(server, f"/v1/models/{NAME}:regress", body)
    assert status == 400 and expected in payload["error"], payload


def test_rest_client_regress_error(server):
    with pytest.raises(RestError) as info:
        RestClient(server.rest_url, NAME, timeout=WAIT).regress(["x"], signature_name="predict")
    assert info.value.status == 400 and "Expected regression" in info.value.message


# --------------------------------------------------------------------------- warmup
def test_regress_log_warmup_records_are_replayed(server):
    assert server.repository.get(NAME, 1).warmup_requests == 2
    base = server.repository.base_dir
    broken = export_tiny_regressor(base, version=2)
    write_warmup(broken, [regress_log([tf.train.Example()])])     # no "text": the parse fails, so the load does
    try:
        changes = server.reload()
        assert changes["failed"] == [f"{NAME}/2"], changes
        with GrpcClient(server.grpc_target, NAME, timeout=WAIT) as client:
            status = client.status()
            assert [(s["version"], s["state"]) for s in status] == [(2, "END"), (1, "AVAILABLE")]
            assert "text" in status[0]["error"]
            assert client.regress(["abc"]) == [3.0]                # version 1 keeps serving
    finally:
        shutil.rmtree(broken)
        server.reload()


# --------------------------------------------------------------------------- batching
BATCHING = BatchingParameters(max_batch_size=8, batch_timeout_micros=200_000, max_enqueued_batches=100,
                              num_batch_threads=1, allowed_batch_sizes=(4, 8))


def test_batched_regress_gives_the_same_values(base, tmp_path):
    texts = [f"text number {'x' * i}" for i in range(8)]
    batched_base = str(tmp_path)
    shutil.copytree(os.path.join(base, NAME), os.path.join(batched_base, NAME))

    def call(i):
        if i % 2:
            return RestClient(server.rest_url, NAME, timeout=WAIT).regress([texts[i]])
        with GrpcClient(server.grpc_target, NAME, timeout=WAIT) as client:
            return client.regress([texts[i]])

    with ModelServer(batched_base, grpc_port=0, rest_port=0, poll_seconds=0,
                     limits=Limits(max_batch_size=8), batching=BATCHING) as server:
        with ThreadPoolExecutor(len(texts)) as pool:
            results = list(pool.map(call, range(len(texts))))
        stats = server.batching.stats()[f"{NAME}/1/regress"]
    assert results == [[value] for value in lengths(texts)]
    assert stats["requests"] == len(texts) and stats["calls"] < stats["requests"], stats
