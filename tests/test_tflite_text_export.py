"""``export --optimize compact+tflite`` and ``serve --prefer-tflite-model``.

The TFLite model (tokenizer included) must give the Keras model's scores and
labels through the SavedModel's signature names; the server must answer its
signatures from the interpreter pool (and the rest from the SavedModel) with
the usual error codes; tasks it cannot export must fail before anything is written.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import tensorflow as tf

from conftest import CLF_LABELS, NER_LABELS, TEXTS
from tfpipeline.bundle import ModelBundle
from tfpipeline.data.examples import CLASSIFICATION, NER
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import ExportError
from tfpipeline.export import read_export_metadata, signature_table
from tfpipeline.export.tflite_text import TFLITE_TEXT_FILE, load_interpreter, tflite_tokenizer
from tfpipeline.models.task_model import build_task_model

from serving.errors import ServingError
from serving.repository import ModelRepository
from serving.runner import Limits, classify, predict
from serving.tflite_pool import TfliteSignature

ATOL = 1e-4
LONG = "the movie was great " * 40          # past max_length 32: truncation must match


@pytest.fixture(scope="module")
def tflite_export(tiny_checkpoint, tmp_path_factory):
    from test_compact_export import center_head, randomize, text_features

    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=32)
    model = build_task_model(tiny_checkpoint, CLASSIFICATION, LabelMap(CLF_LABELS))
    randomize(model, 0)
    center_head(model, model.backbone.classifier, text_features(encoder))
    bundle = ModelBundle(model, encoder, LabelMap(CLF_LABELS), CLASSIFICATION)
    base = str(tmp_path_factory.mktemp("tflite_exports"))
    return bundle, base, bundle.export(base, "clf", optimize="compact+tflite")


def keras_scores(bundle, texts):
    features = bundle.encoder.pad(bundle.encoder.encode(tf.constant(texts)))
    return features, tf.nn.softmax(bundle.model(features, training=False)).numpy()


def test_export_writes_model_tflite_next_to_the_compact_saved_model(tflite_export):
    _, _, path = tflite_export
    assert os.path.getsize(os.path.join(path, TFLITE_TEXT_FILE)) > 0
    meta = read_export_metadata(path)
    assert meta["optimize"] == "compact+tflite"
    assert meta["tflite"]["tf_serving_flags"] == ["--prefer_tflite_model"]
    assert set(signature_table(path)) >= {"serving_default", "classify", "predict_ids", "predict_pair"}


def test_tflite_signatures_give_the_keras_scores(tflite_export):
    bundle, _, path = tflite_export
    texts = TEXTS + [LONG]
    features, expected = keras_scores(bundle, texts)
    assert len(set(expected.argmax(-1))) == 2, "the centred head should give both labels"
    interpreter = load_interpreter(os.path.join(path, TFLITE_TEXT_FILE))
    assert set(interpreter.get_signature_list()) == {"serving_default", "predict", "predict_ids"}
    out = interpreter.get_signature_runner("serving_default")(text=np.array(texts, dtype=object))
    np.testing.assert_allclose(out["scores"], expected, atol=ATOL)
    assert [x.decode() for x in out["label"]] == [CLF_LABELS[i] for i in expected.argmax(-1)]
    np.testing.assert_array_equal(out["label_id"], expected.argmax(-1))
    one = interpreter.get_signature_runner("predict")(text=np.array(texts[:1], dtype=object))  # another shape
    np.testing.assert_allclose(one["scores"], expected[:1], atol=ATOL)
    by_ids = interpreter.get_signature_runner("predict_ids")(input_ids=features["input_ids"].numpy(),
                                                             attention_mask=features["attention_mask"].numpy())
    np.testing.assert_allclose(by_ids["scores"], expected, atol=ATOL)


def test_tflite_tokenizer_matches_the_encoder_except_compatibility_characters(tflite_export):
    """The documented difference (NFKD): "…" becomes three full stops in the TFLite tokenizer only."""
    encoder = tflite_export[0].encoder
    tokenizer = tflite_tokenizer(encoder)
    plain = ["Alice Smith flew from Paris to Tokyo.", "naïve café, déjà vu 東京", "don't stop-me now!!"]
    assert tokenizer.tokenize(tf.constant(plain)).to_list() == encoder.tokenize(tf.constant(plain)).to_list()
    ellipsis = tf.constant(["wait…"])
    assert tokenizer.tokenize(ellipsis).to_list() != encoder.tokenize(ellipsis).to_list()


def test_unsupported_task_fails_before_anything_is_written(tiny_checkpoint, tmp_path):
    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=32)
    ner = ModelBundle(build_task_model(tiny_checkpoint, NER, LabelMap(NER_LABELS)), encoder,
                      LabelMap(NER_LABELS), NER)
    with pytest.raises(ExportError, match="classification models only"):
        ner.export(str(tmp_path), "ner", optimize="compact+tflite")
    assert os.listdir(tmp_path) == []


def test_server_prefers_model_tflite_and_keeps_the_other_signatures(tflite_export):
    bundle, base, _ = tflite_export
    preferred = ModelRepository(base, prefer_tflite_model=True, tflite_interpreters=2)
    plain = ModelRepository(base)
    preferred.reload(), plain.reload()
    servable, saved = preferred.get("clf"), plain.get("clf")
    assert isinstance(servable.signatures["serving_default"], TfliteSignature)
    assert not isinstance(servable.signatures["classify"], TfliteSignature)
    assert not isinstance(saved.signatures["serving_default"], TfliteSignature)
    assert servable.warmup_requests > 0          # the warmup file ran through the interpreters
    texts = np.array([t.encode() for t in TEXTS], dtype=object)
    _, expected = keras_scores(bundle, TEXTS)
    for repo_servable in (servable, saved):
        out = predict(repo_servable, "serving_default", {"text": texts}, Limits())
        np.testing.assert_allclose(out["scores"], expected, atol=ATOL)
        assert [x.decode() for x in out["label"]] == [CLF_LABELS[i] for i in expected.argmax(-1)]
    example = tf.train.Example()
    example.features.feature["text"].bytes_list.value.append(TEXTS[0].encode())
    _, scores = classify(servable, "classify", [example], Limits())
    np.testing.assert_allclose(scores, expected[:1], atol=ATOL)


def test_server_tflite_errors_and_concurrent_calls(tflite_export):
    bundle, base, _ = tflite_export
    repository = ModelRepository(base, prefer_tflite_model=True, tflite_interpreters=2)
    repository.reload()
    servable = repository.get("clf")
    vocab = len(bundle.encoder.vocab)
    bad = {"input_ids": np.array([[101, vocab + 5, 102]], np.int32), "attention_mask": np.ones((1, 3), np.int32)}
    with pytest.raises(ServingError) as error:
        predict(servable, "predict_ids", bad, Limits())
    assert error.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ServingError) as error:      # checked against the TFLite signature's own input specs
        predict(servable, "serving_default", {"text": np.array([1.0], np.float32)}, Limits())
    assert error.value.code == "INVALID_ARGUMENT"

    _, expected = keras_scores(bundle, TEXTS)
    failures, answers = [], {}

    def client(i: int) -> None:
        try:
            for _ in range(5):
                text = np.array([TEXTS[i % len(TEXTS)].encode()], dtype=object)
                answers.setdefault(i, []).append(predict(servable, "serving_default", {"text": text},
                                                         Limits())["scores"][0])
        except Exception as e:   # collected: a thread's assertion would not fail the test
            failures.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    for i, rows in answers.items():
        for row in rows:
            np.testing.assert_allclose(row, expected[i % len(TEXTS)], atol=ATOL)


def test_model_server_prefer_tflite_over_grpc(tflite_export):
    """The flag reaches the repository through ``ModelServer`` (what ``tfpipeline serve`` builds)."""
    from serving import GrpcClient, ModelServer

    bundle, base, _ = tflite_export
    _, expected = keras_scores(bundle, TEXTS[:3])
    with ModelServer(base, grpc_port=0, rest_port=None, poll_seconds=0, prefer_tflite_model=True) as server:
        assert isinstance(server.repository.get("clf").signatures["serving_default"], TfliteSignature)
        with GrpcClient(server.grpc_target, "clf") as client:
            out = client.predict_texts(TEXTS[:3])
    np.testing.assert_allclose(out["scores"], expected, atol=ATOL)


def test_tokenizers_tflite_cannot_match_are_refused(tflite_export):
    """A tokenizer whose normalisation FastBertTokenizer cannot reproduce is an ExportError naming why."""
    encoder = tflite_export[0].encoder
    keeps_accents = TextEncoder(encoder.vocab, lower_case=True, strip_accents=False, max_length=32)
    with pytest.raises(ExportError, match="lower-cases but keeps accents"):
        tflite_tokenizer(keeps_accents)
    no_cjk_split = TextEncoder(encoder.vocab, tokenize_chinese_chars=False, max_length=32)
    with pytest.raises(ExportError, match="tokenize_chinese_chars false"):
        tflite_tokenizer(no_cjk_split)


def test_interpreter_pool_size_must_be_positive(tflite_export):
    from tfpipeline.config import ServeConfig
    from tfpipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="tflite_interpreters must be >= 1"):
        ModelRepository(tflite_export[1], prefer_tflite_model=True, tflite_interpreters=0)
    with pytest.raises(ConfigError, match="tflite_interpreters must be >= 1"):
        ServeConfig(model_base=tflite_export[1], tflite_interpreters=0).validate()
