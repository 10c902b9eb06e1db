"""Regression end to end on the tiny random BERT: numeric readers, standardised targets, Pearson selection,
report, model folder, and the export's Regress API signature (TF1 graph mode, as TF Serving runs it).

Data: the target is (number of 'great') - (number of 'awful') in the sentence, on
a shifted, stretched scale (x 10 + 50) so standardisation matters.
"""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from tfpipeline.bundle import ModelBundle
from tfpipeline.data.catalog import load_dataset
from tfpipeline.data.examples import REGRESSION, ScoreExample, TaskData
from tfpipeline.data.readers import BadRows, read_regression_file, read_task_file
from tfpipeline.errors import DataError
from tfpipeline.export import read_export_metadata, signature_table
from tfpipeline.export.warmup import WARMUP_FILE, read_warmup_requests
from tfpipeline.training.trainer import train

FILLER = "the a movie film plot actor scene story music was is very quite really this that it".split()


def scored_examples(n: int, seed: int, origin: str) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        good, bad = rng.randint(0, 2), rng.randint(0, 2)
        for word in ["great"] * good + ["awful"] * bad:
            words.insert(rng.randint(0, len(words)), word)
        out.append(ScoreExample(" ".join(words), (10.0 * (good - bad) + 50.0,), origin=f"{origin}:{i + 2}"))
    return out


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_checkpoint):
    data = TaskData(name="keyword scores", task=REGRESSION, train=scored_examples(320, 1, "train"),
                    validation=scored_examples(64, 2, "valid"), test=scored_examples(96, 3, "test"),
                    labels=["score"])
    out = str(tmp_path_factory.mktemp("regression") / "run")
    return train(data=data, model=tiny_checkpoint, output_dir=out, epochs=8, batch_size=16, learning_rate=3e-3,
                 max_length=24, verbose=0, early_stopping_patience=0, seed=13)


def test_reader_parses_numbers_and_names_bad_cells(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("text,valence,arousal\ngood one,1.5,2\nbad one,abc,1\nempty one,,1\nnan one,nan,1\n")
    with pytest.raises(DataError, match=r"scores.csv:3: field 'valence' is 'abc', not a number"):
        read_regression_file(str(path), label_column="valence,arousal")
    skipped = BadRows("skip")
    examples = read_task_file(str(path), REGRESSION, label_column="valence,arousal", bad_rows=skipped)
    assert examples == [ScoreExample("good one", (1.5, 2.0), origin=f"{path}:2")]
    assert [row.split(": ", 1)[0] for row in skipped.skipped] == [f"{path}:3", f"{path}:4", f"{path}:5"]
    assert "finite" in skipped.skipped[2]


def test_catalog_ratings_dataset():
    data = load_dataset("rotten_tomatoes_ratings")
    assert data.task == REGRESSION and data.labels == ["rating"]
    values = np.array([ex.targets[0] for ex in data.train])
    assert -4.0 <= values.min() < -2.0 and 2.0 < values.max() <= 4.0 and len(data.test) > 1000


def test_training_learns_the_scores_in_their_own_units(regression_run):
    report = regression_run.report
    assert report["task"] == REGRESSION and report["pearson"] >= 0.8, report
    assert report["mae"] < 8.0                       # in target units: the scores step by 10
    assert "val_pearson" in regression_run.history
    meta = json.load(open(os.path.join(regression_run.output_dir, "tfpipeline.json")))
    assert meta["target_scaling"]["mean"][0] == pytest.approx(50.0, abs=3.0)
    predictions = ModelBundle.load(regression_run.output_dir).predictor().regress(["great great movie", "awful"])
    assert predictions[0, 0] > 55.0 > 45.0 > predictions[1, 0]


@pytest.fixture(scope="module")
def regression_export(regression_run, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("regression_exports"))
    return ModelBundle.load(regression_run.output_dir).export(base, "scores")


def test_export_has_a_regress_signature_matching_the_predictor(regression_run, regression_export):
    table = signature_table(regression_export)
    assert table["regress"]["method"] == tf.saved_model.REGRESS_METHOD_NAME
    assert table["regress"]["outputs"] == {"outputs": {"dtype": "float32", "shape": [-1]}}
    assert table["serving_default"]["outputs"]["predictions"]["shape"] == [-1, 1]
    assert read_export_metadata(regression_export)["task"] == REGRESSION
    texts = ["great great film", "an awful awful plot", "the story"]
    expected = regression_run.bundle.predictor().regress(texts)[:, 0]
    examples = np.array([tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[t.encode()]))})).SerializeToString() for t in texts], dtype=object)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], regression_export)
        signature = meta_graph.signature_def["regress"]
        outputs = session.run(signature.outputs["outputs"].name, {signature.inputs["inputs"].name: examples})
    np.testing.assert_allclose(outputs, expected, atol=1e-4)
    logs = read_warmup_requests(os.path.join(regression_export, "assets.extra", WARMUP_FILE))
    assert "regress_log" in [log.WhichOneof("log_type") for log in logs]


def test_several_targets_get_one_regress_signature_each(tiny_checkpoint, tmp_path):
    rng = random.Random(0)
    examples = [ScoreExample(ex.text, (ex.targets[0], rng.random()), origin=ex.origin)
                for ex in scored_examples(48, 4, "multi")]
    data = TaskData(name="two", task=REGRESSION, train=examples[:32], validation=examples[32:], labels=["a", "b"])
    result = train(data=data, model=tiny_checkpoint, output_dir=str(tmp_path / "two"), epochs=1, batch_size=16,
                   max_length=24, verbose=0, early_stopping_patience=0)
    assert set(result.report["per_target"]) == {"a", "b"}
    path = result.bundle.export(str(tmp_path / "exports"), "two")
    table = signature_table(path)
    assert {"regress_a", "regress_b"} <= set(table) and "regress" not in table


def test_explain_attributes_the_score_to_its_keywords(regression_run):
    from tfpipeline.evaluation.explain import explain

    [result] = explain(regression_run.bundle, ["the great movie was great"], steps=32)
    [explanation] = result["explanations"]
    assert explanation["target"] == "score" and abs(explanation["completeness_gap"]) < 0.05
    words = [word["text"] for word in result["words"]]
    top = words[int(np.argmax(explanation["word_attributions"]))]
    assert top == "great", list(zip(words, explanation["word_attributions"]))


def test_regress_api_through_the_embedded_server(regression_run, regression_export):
    from serving import ModelServer, RestClient

    base = os.path.dirname(os.path.dirname(regression_export))
    texts = ["great great film", "an awful plot"]
    expected = regression_run.bundle.predictor().regress(texts)[:, 0]
    with ModelServer(base, grpc_port=-1, rest_port=0, poll_seconds=0) as server:
        values = RestClient(server.rest_url, "scores", timeout=30).regress(texts)
    np.testing.assert_allclose(values, expected, atol=1e-4)
