"""Server-side request batching: the BatchingParameters reader, the scheduler on a fake numpy model
(merging, timeout, full queue, errors, allowed sizes, padding, close), the ``serve`` flags, and the
embedded server with batching on (concurrent gRPC/REST requests answered as if each ran alone)."""
from __future__ import annotations

import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import GrpcClient, Limits, ModelServer, RestClient
from serving.batching import (Batching, BatchingParameters, BatchScheduler, batching_workers,
                              load_batching_parameters, parse_batching_parameters)
from serving.errors import ServingError
from tfpipeline.config import ServeConfig, make_config
from tfpipeline.errors import ConfigError
from conftest import CLF_LABELS, CLF_NAME, TEXTS, copy_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 30.0          # upper bound on every wait in this file: a bug fails a test instead of hanging it


# --------------------------------------------------------------------------- the parameters file
def test_shipped_file_parses():
    params = load_batching_parameters(os.path.join(ROOT, "serving", "configs", "batching_parameters.txt"))
    assert (params.max_batch_size, params.batch_timeout_micros, params.max_enqueued_batches,
            params.num_batch_threads, params.pad_variable_length_inputs) == (32, 2000, 64, 4, True)


def test_every_field_and_text_format_layout():
    text = """
    # TF Serving BatchingParameters
    max_batch_size { value: 32 }
    batch_timeout_micros {
      value: 2000    # 2 ms
    }
    max_enqueued_batches: { value: 100 }
    num_batch_threads < value: 4 >
    allowed_batch_sizes: 8
    allowed_batch_sizes: [16, 32]
    pad_variable_length_inputs: true
    thread_pool_name { value: "batch_threads" }
    enable_large_batch_splitting { value: false }
    """
    assert parse_batching_parameters(text, "b.txt") == BatchingParameters(
        max_batch_size=32, batch_timeout_micros=2000, max_enqueued_batches=100, num_batch_threads=4,
        allowed_batch_sizes=(8, 16, 32), pad_variable_length_inputs=True)


def test_defaults_are_tf_serving_defaults():
    params = parse_batching_parameters("# nothing set\n", "empty.txt")
    assert params == BatchingParameters()
    assert (params.max_batch_size, params.batch_timeout_micros, params.max_enqueued_batches) == (1000, 0, 10)
    assert params.num_batch_threads == (os.cpu_count() or 1)
    assert params.allowed_batch_sizes == () and not params.pad_variable_length_inputs


BAD_FILES = {
    "unknown field": ("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }\n",
                      "f.txt:2: unknown field 'max_batch_sise'"),
    "not implemented": ("max_execution_batch_size { value: 8 }\n", "f.txt:1: max_execution_batch_size is a TF Serving"),
    "splitting on": ("\nenable_large_batch_splitting { value: true }\n", "f.txt:2: enable_large_batch_splitting"),
    "sizes not increasing": ("max_batch_size { value: 32 }\nallowed_batch_sizes: 16\nallowed_batch_sizes: 8\n"
                             "allowed_batch_sizes: 32\n", "f.txt:3: allowed_batch_sizes must increase strictly"),
    "sizes not ending at max": ("max_batch_size { value: 32 }\nallowed_batch_sizes: [8, 16]\n",
                                "f.txt:2: the last allowed_batch_sizes entry (16) must equal max_batch_size (32)"),
    "zero threads": ("num_batch_threads { value: 0 }\n", "f.txt:1: num_batch_threads must be >= 1"),
    "negative timeout": ("batch_timeout_micros { value: -5 }\n", "f.txt:1: batch_timeout_micros must be >= 0"),
    "bare wrapper value": ("max_batch_size: 32\n", "f.txt:1: max_batch_size is a wrapper message"),
    "not an integer": ("max_batch_size { value: 3.5 }\n", "f.txt:1: max_batch_size expects an integer"),
    "not a bool": ("pad_variable_length_inputs: maybe\n", "f.txt:1: pad_variable_length_inputs expects true or false"),
    "set twice": ("max_batch_size { value: 8 }\n\nmax_batch_size { value: 9 }\n", "f.txt:3: max_batch_size is set twice"),
    "unclosed": ("max_batch_size { value: 8\n", "f.txt:1: missing '}'"),
    "junk": ("max_batch_size { value: 8 }\n@\n", "f.txt:2: cannot read"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_name_file_and_line(case):
    text, message = BAD_FILES[case]
    with pytest.raises(ConfigError) as info:
        parse_batching_parameters(text, "f.txt")
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_batching_parameters(str(tmp_path / "nope.txt"))


def test_serve_config_batching_flags(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 8 }\n")
    with pytest.raises(ConfigError, match="--enable-batching"):
        make_config(ServeConfig, {"model_base": "m", "batching_parameters_file": str(path)})
    with pytest.raises(ConfigError, match="not found"):
        make_config(ServeConfig, {"model_base": "m", "enable_batching": True,
                                  "batching_parameters_file": str(tmp_path / "nope.txt")})
    config = make_config(ServeConfig, {"model_base": "m", "enable_batching": True, "batching_parameters_file": str(path)})
    assert config.enable_batching and config.batching_parameters_file == str(path)
    assert not make_config(ServeConfig, {"model_base": "m"}).enable_batching


def test_serve_cli_reports_a_bad_batching_file(tmp_path, capsys):
    from tfpipeline.cli import main

    bad = tmp_path / "bad.txt"
    bad.write_text("max_batch_size { value: 8 }\nbatch_size { value: 8 }\n")
    args = ["serve", "--model-base", str(tmp_path), "--grpc-port", "-1", "--rest-port", "-1"]
    assert main(args + ["--batching-parameters-file", str(bad)]) == 2
    assert "--enable-batching" in capsys.readouterr().err
    assert main(args + ["--enable-batching", "--batching-parameters-file", str(bad)]) == 2
    assert f"{bad}:2: unknown field 'batch_size'" in capsys.readouterr().err


def test_batching_workers():
    assert batching_workers(BatchingParameters(max_batch_size=32, num_batch_threads=4)) == 128
    assert batching_workers(BatchingParameters(max_batch_size=2, num_batch_threads=1)) == 8
    assert batching_workers(BatchingParameters(max_batch_size=1000, num_batch_threads=16)) == 256


# --------------------------------------------------------------------------- scheduler on a fake model
class FakeModel:
    """numpy run_batch: records each call's row count; ``double`` = 2 * x, ``id`` = first column, text echoed."""

    def __init__(self, delay: float = 0.0):
        self.sizes, self.delay = [], delay
        self.lock = threading.Lock()

    def __call__(self, inputs):
        with self.lock:
            self.sizes.append(len(inputs["x"]))
        time.sleep(self.delay)
        return {"double": inputs["x"] * 2, "id": inputs["x"][:, 0].copy(), "text": inputs["text"]}


def request(i: int, rows: int = 1):
    x = np.array([[i * 10 + r, -i] for r in range(rows)], np.int64)
    text = np.empty(rows, dtype=object)
    text[:] = [f"text {i}.{r}".encode() for r in range(rows)]
    return {"x": x, "text": text}


def run_concurrently(fn, n: int):
    """Call fn(i) for i < n in n threads released together; returns ({i: result}, {i: exception})."""
    results, errors = {}, {}
    barrier = threading.Barrier(n, timeout=WAIT)

    def worker(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - inspected by the test
            errors[i] = e

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a request never returned"
    return results, errors


@pytest.fixture
def scheduler_factory():
    made = []

    def make(**params) -> BatchScheduler:
        scheduler = BatchScheduler(BatchingParameters(**params))
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close(timeout=WAIT)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(scheduler_factory):
    model = FakeModel(delay=0.01)
    queue = scheduler_factory(max_batch_size=16, batch_timeout_micros=100_000, num_batch_threads=1,
                              max_enqueued_batches=100).queue(model, "fake")
    rows = {i: 1 + i % 3 for i in range(16)}
    results, errors = run_concurrently(lambda i: queue.submit(request(i, rows[i])), 16)
    assert not errors, errors
    assert len(model.sizes) < 16 and sum(model.sizes) == sum(rows.values())
    assert max(model.sizes) <= 16
    for i, out in results.items():
        sent = request(i, rows[i])
        np.testing.assert_array_equal(out["double"], sent["x"] * 2)
        np.testing.assert_array_equal(out["id"], sent["x"][:, 0])
        assert out["text"].tolist() == sent["text"].tolist()
    stats = queue.stats()
    assert stats["requests"] == 16 and stats["calls"] == len(model.sizes) and stats["enqueued_batches"] == 0


def test_a_lone_request_waits_at_most_the_timeout(scheduler_factory):
    queue = scheduler_factory(max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1).queue(FakeModel())
    start = time.monotonic()
    out = queue.submit(request(3))
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 3.0, elapsed
    assert out["id"].tolist() == [30]
    immediate = scheduler_factory(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1).queue(FakeModel())
    start = time.monotonic()
    immediate.submit(request(1))
    assert time.monotonic() - start < 3.0


def test_a_full_batch_runs_without_waiting_for_the_timeout(scheduler_factory):
    model = FakeModel()
    queue = scheduler_factory(max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1).queue(model)
    start = time.monotonic()
    results, errors = run_concurrently(lambda i: queue.submit(request(i)), 4)
    assert not errors and time.monotonic() - start < WAIT / 2
    assert model.sizes == [4]


class BlockingModel:
    """run_batch that holds the batch thread until ``release`` is set."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, inputs):
        self.entered.set()
        assert self.release.wait(WAIT), "never released"
        return {"y": inputs["x"]}


def test_a_full_queue_answers_unavailable_at_once(scheduler_factory):
    model = BlockingModel()
    queue = scheduler_factory(max_batch_size=1, num_batch_threads=1, max_enqueued_batches=2).queue(model, "m/1/s")
    results, threads = [], []
    for i in range(3):   # one running, two queued (a batch being run is no longer in the queue)
        thread = threading.Thread(target=lambda i=i: results.append(queue.submit({"x": np.array([[i]])})), daemon=True)
        thread.start()
        threads.append(thread)
        if i == 0:
            assert model.entered.wait(WAIT)
    wait_until(lambda: queue.stats()["enqueued_batches"] == 2, "two queued batches")
    start = time.monotonic()
    with pytest.raises(ServingError) as info:
        queue.submit({"x": np.array([[9]])})
    assert info.value.code == "UNAVAILABLE" and "full" in info.value.message and "m/1/s" in info.value.message
    assert time.monotonic() - start < 1.0
    model.release.set()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(int(r["y"][0, 0]) for r in results) == [0, 1, 2]
    assert queue.submit({"x": np.array([[5]])})["y"].tolist() == [[5]]


def test_a_failed_call_reaches_every_request_of_its_batch_and_later_batches_run(scheduler_factory):
    calls = []

    def flaky(inputs):
        calls.append(len(inputs["x"]))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return {"y": inputs["x"]}

    queue = scheduler_factory(max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1).queue(flaky)
    results, errors = run_concurrently(lambda i: queue.submit({"x": np.array([[i]])}), 4)
    assert calls == [4] and not results
    assert all(isinstance(e, ServingError) and e.code == "INTERNAL" and "boom" in e.message for e in errors.values())
    assert len(errors) == 4
    results, errors = run_concurrently(lambda i: queue.submit({"x": np.array([[i]])}), 4)
    assert not errors and {i: r["y"].tolist() for i, r in results.items()} == {i: [[i]] for i in range(4)}


def test_a_rejected_input_fails_only_its_own_request(scheduler_factory):
    calls = []

    def picky(inputs):     # like a model refusing token ids outside its vocabulary
        calls.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():
            raise ServingError("INVALID_ARGUMENT", "the model rejected the input: negative id")
        return {"y": inputs["x"]}

    queue = scheduler_factory(max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1).queue(picky)
    results, errors = run_concurrently(lambda i: queue.submit({"x": np.array([[i - 1]])}), 4)   # request 0 sends -1
    assert list(errors) == [0] and errors[0].code == "INVALID_ARGUMENT"
    assert {i: r["y"].tolist() for i, r in results.items()} == {1: [[0]], 2: [[1]], 3: [[2]]}
    assert calls == [4, 1, 1, 1, 1]


def test_allowed_batch_sizes_pad_calls_but_not_answers(scheduler_factory):
    model = FakeModel(delay=0.01)
    queue = scheduler_factory(max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1,
                              allowed_batch_sizes=(2, 4, 8)).queue(model)
    out = queue.submit(request(7, rows=3))
    assert model.sizes == [4] and out["double"].shape == (3, 2) and out["id"].tolist() == [70, 71, 72]
    results, errors = run_concurrently(lambda i: queue.submit(request(i)), 5)
    assert not errors
    assert set(model.sizes) <= {2, 4, 8}
    assert {i: r["id"].tolist() for i, r in results.items()} == {i: [i * 10] for i in range(5)}


def test_requests_of_different_shapes(scheduler_factory):
    seen = []

    def echo(inputs):
        seen.append(inputs["ids"].shape)
        return {"ids": inputs["ids"], "words": inputs["words"]}

    def ids_request(i):
        length = 2 + 3 * i
        words = np.empty((1, length), dtype=object)
        words[0, :] = [b"w"] * length
        return {"ids": np.full((1, length), i + 1, np.int32), "words": words}

    padding = scheduler_factory(max_batch_size=2, batch_timeout_micros=60_000_000, num_batch_threads=1,
                                pad_variable_length_inputs=True).queue(echo)
    results, errors = run_concurrently(lambda i: padding.submit(ids_request(i)), 2)
    assert not errors and seen == [(2, 5)]
    assert results[0]["ids"].tolist() == [[1, 1, 0, 0, 0]]             # zeros: [PAD] id / mask 0
    assert results[0]["words"].tolist() == [[b"w", b"w", b"", b"", b""]]
    assert results[1]["ids"].tolist() == [[2] * 5]

    seen.clear()
    separate = scheduler_factory(max_batch_size=2, batch_timeout_micros=50_000, num_batch_threads=1).queue(echo)
    results, errors = run_concurrently(lambda i: separate.submit(ids_request(i)), 2)
    assert not errors and sorted(seen) == [(1, 2), (1, 5)]
    assert results[0]["ids"].tolist() == [[1, 1]] and results[1]["ids"].tolist() == [[2] * 5]


def test_requests_that_cannot_be_batched(scheduler_factory):
    queue = scheduler_factory(max_batch_size=4, num_batch_threads=1).queue(FakeModel())
    for inputs, message in [(request(1, rows=5), "larger than maximum input batch size 4"),
                            ({"x": np.array(3), "text": np.array([b"a"], dtype=object)}, "scalar"),
                            ({"x": np.ones((2, 2)), "text": np.array([b"a"], dtype=object)}, "same batch size")]:
        with pytest.raises(ServingError) as info:
            queue.submit(inputs)
        assert info.value.code == "INVALID_ARGUMENT" and message in info.value.message


def test_outputs_without_a_batch_dimension_are_internal(scheduler_factory):
    queue = scheduler_factory(max_batch_size=4, num_batch_threads=1).queue(lambda inputs: {"total": np.array(1.0)})
    with pytest.raises(ServingError) as info:
        queue.submit({"x": np.ones((2, 1))})
    assert info.value.code == "INTERNAL" and "'total'" in info.value.message


def test_close_releases_waiting_requests(scheduler_factory):
    model = BlockingModel()
    scheduler = scheduler_factory(max_batch_size=1, num_batch_threads=1, max_enqueued_batches=10)
    queue = scheduler.queue(model)
    outcomes, threads = {}, []

    def call(i):
        try:
            outcomes[i] = queue.submit({"x": np.array([[i]])})["y"].tolist()
        except ServingError as e:
            outcomes[i] = e.code

    for i in range(3):
        thread = threading.Thread(target=call, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
        if i == 0:
            assert model.entered.wait(WAIT)
    wait_until(lambda: queue.stats()["enqueued_batches"] == 2, "two queued batches")
    scheduler.close(timeout=0.1)             # the running batch is still blocked: close must not wait for it
    for thread in threads[1:]:
        thread.join(WAIT)
    assert outcomes.get(1) == outcomes.get(2) == "UNAVAILABLE"
    model.release.set()
    threads[0].join(WAIT)
    assert outcomes[0] == [[0]]              # a batch already running completes
    with pytest.raises(ServingError) as info:
        queue.submit({"x": np.array([[1]])})
    assert info.value.code == "UNAVAILABLE"


def test_a_closed_queue_runs_what_it_holds(scheduler_factory):
    model = BlockingModel()
    queue = scheduler_factory(max_batch_size=1, num_batch_threads=1).queue(model)
    outcomes = {}
    threads = [threading.Thread(target=lambda i=i: outcomes.setdefault(i, queue.submit({"x": np.array([[i]])})),
                                daemon=True) for i in range(2)]
    threads[0].start()
    assert model.entered.wait(WAIT)
    threads[1].start()
    wait_until(lambda: queue.stats()["enqueued_batches"] == 1, "a queued batch")
    queue.close()
    with pytest.raises(ServingError) as info:
        queue.submit({"x": np.array([[9]])})
    assert info.value.code == "UNAVAILABLE"
    model.release.set()
    for thread in threads:
        thread.join(WAIT)
    assert {i: r["y"].tolist() for i, r in outcomes.items()} == {0: [[0]], 1: [[1]]}


def test_server_registry_one_queue_per_key_and_retire():
    live = {"v1", "v2"}
    made = []

    def factory(tag):
        def make():
            made.append(tag)
            return lambda inputs: {"y": inputs["x"]}
        return make

    batching = Batching(BatchingParameters(max_batch_size=4, num_batch_threads=1), is_current=lambda o: o in live)
    try:
        first = batching.queue(("m", 1, "s"), "v1", factory("v1"))
        assert batching.queue(("m", 1, "s"), "v1", factory("v1")) is first and made == ["v1"]
        other = batching.queue(("m", 2, "s"), "v2", factory("v2"))
        assert other is not first and set(batching.stats()) == {"m/1/s", "m/2/s"}
        assert first.submit({"x": np.array([[1]])})["y"].tolist() == [[1]]
        assert batching.queue(("m", 3, "s"), "gone", factory("gone")) is None    # unloaded meanwhile: run alone
        live.discard("v1")
        assert batching.retire() == [("m", 1, "s")]
        assert set(batching.stats()) == {"m/2/s"}
        with pytest.raises(ServingError) as info:
            first.submit({"x": np.array([[1]])})
        assert info.value.code == "UNAVAILABLE"
        live.add("v1-reloaded")                                                  # same version, new object
        assert batching.queue(("m", 1, "s"), "v1-reloaded", factory("v1-reloaded")) is not first
    finally:
        batching.close(timeout=WAIT)


# --------------------------------------------------------------------------- the embedded server, batching on
BATCHED_TEXTS = TEXTS + ["the movie was great", "awful plot", "great", "it was awful really",
                         "a film about music", "quite great acting"]
SERVER_BATCHING = BatchingParameters(max_batch_size=8, batch_timeout_micros=100_000, max_enqueued_batches=100,
                                     num_batch_threads=1, allowed_batch_sizes=(4, 8), pad_variable_length_inputs=True)


@pytest.fixture(scope="module")
def batched_server(exports, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("batched_base"))
    os.makedirs(os.path.join(base, CLF_NAME))
    copy_version(exports["base"], base, CLF_NAME)
    srv = ModelServer(base, grpc_port=0, rest_port=0, poll_seconds=0,
                      limits=Limits(max_batch_size=8, max_text_bytes=500), batching=SERVER_BATCHING)
    srv.start()
    yield srv
    srv.stop()


def test_batched_predictions_match_unbatched_ones(batched_server, clf_predictor):
    expected = clf_predictor.class_probabilities(BATCHED_TEXTS)

    def call(i):
        text = BATCHED_TEXTS[i]
        if i % 3 == 2:      # REST requests merge with gRPC ones
            row = RestClient(batched_server.rest_url, CLF_NAME, timeout=WAIT).predict_texts([text])[0]
            return np.array([row["scores"]]), [row["label"]]
        with GrpcClient(batched_server.grpc_target, CLF_NAME, timeout=WAIT) as client:
            if i % 3 == 1:
                out = client.predict({"text": [text.encode()]}, output_filter=["scores"])
                assert set(out) == {"scores"}
                return out["scores"], None
            out = client.predict_texts([text])
            return out["scores"], [x.decode() for x in out["label"]]

    results, errors = run_concurrently(call, len(BATCHED_TEXTS))
    assert not errors, errors
    for i, (scores, labels) in results.items():
        np.testing.assert_allclose(scores, expected[i:i + 1], atol=1e-5)
        if labels is not None:
            assert labels == [CLF_LABELS[int(expected[i].argmax())]]
    stats = batched_server.batching.stats()[f"{CLF_NAME}/1/serving_default"]
    assert stats["requests"] >= len(BATCHED_TEXTS) and stats["calls"] < stats["requests"], stats


def test_batched_classify_over_both_protocols(batched_server, clf_predictor):
    texts = BATCHED_TEXTS[:8]
    expected = clf_predictor.class_probabilities(texts)

    def call(i):
        if i % 2:
            return RestClient(batched_server.rest_url, CLF_NAME, timeout=WAIT).classify([texts[i]])[0]
        with GrpcClient(batched_server.grpc_target, CLF_NAME, timeout=WAIT) as client:
            return client.classify([texts[i]])[0]

    results, errors = run_concurrently(call, len(texts))
    assert not errors, errors
    for i, row in results.items():
        assert [label for label, _ in row] == CLF_LABELS
        np.testing.assert_allclose([score for _, score in row], expected[i], atol=1e-5)
    assert batched_server.batching.stats()[f"{CLF_NAME}/1/classify"]["requests"] >= len(texts)


def test_bad_ids_fail_only_their_own_request(batched_server, clf_predictor, exports):
    from tfpipeline.data.tokenization import TextEncoder

    encoder = TextEncoder.from_directory(exports["clf_dir"])
    texts = BATCHED_TEXTS[:5]
    expected = clf_predictor.class_probabilities(texts)
    features = [encoder.pad(encoder.encode(tf.constant([t]))) for t in texts]    # one request per text

    def call(i):
        with GrpcClient(batched_server.grpc_target, CLF_NAME, timeout=WAIT) as client:
            if i == len(texts):
                return client.predict_ids([[101, 10 ** 8]], [[1, 1]])
            return client.predict_ids(features[i]["input_ids"].numpy(), features[i]["attention_mask"].numpy())

    results, errors = run_concurrently(call, len(texts) + 1)
    assert list(errors) == [len(texts)], errors
    assert errors[len(texts)].code() == grpc.StatusCode.INVALID_ARGUMENT
    for i in range(len(texts)):
        np.testing.assert_allclose(results[i]["scores"], expected[i:i + 1], atol=1e-5)


def test_bad_requests_are_refused_before_batching(batched_server):
    with GrpcClient(batched_server.grpc_target, CLF_NAME, timeout=WAIT) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.predict({"text": ["x"] * 9})                     # over Limits.max_batch_size
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            client.predict({"txt": ["x"]})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.predict_texts(["fine"])["scores"].shape == (1, 2)


def test_unloaded_version_queue_is_retired(batched_server, exports):
    base = batched_server.repository.base_dir
    copy_version(exports["base"], base, CLF_NAME, as_version=2)
    batched_server.reload()
    with GrpcClient(batched_server.grpc_target, CLF_NAME, timeout=WAIT) as client:
        assert client.predict_texts(["great"], version=2)["scores"].shape == (1, 2)
        assert f"{CLF_NAME}/2/serving_default" in batched_server.batching.stats()
        shutil.rmtree(os.path.join(base, CLF_NAME, "2"))
        assert batched_server.reload()["unloaded"] == [f"{CLF_NAME}/2"]
        assert f"{CLF_NAME}/2/serving_default" not in batched_server.batching.stats()
        assert client.predict_texts(["great"])["scores"].shape == (1, 2)
