"""The embedding task end to end on the tiny random BERT: in-batch-negatives training, retrieval report,
model folder, ``index`` export with ``search``, TF1 graph mode and the embedded server.

Data: each "answer" is about one topic word; its questions are other filler
words around the same topic word, so a bi-encoder that learns to match the
topic word ranks the right answer first. An untrained tiny model cannot.
"""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from serving import ModelServer, RestClient
from tfpipeline.bundle import ModelBundle
from tfpipeline.cli import main
from tfpipeline.data.examples import EMBEDDING, PairExample, TaskData
from tfpipeline.data.pair_pipeline import make_pair_dataset
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import DataError, ExportError
from tfpipeline.evaluation.evaluate import evaluate_examples
from tfpipeline.export import read_export_metadata, signature_table
from tfpipeline.models.embedding_model import build_embedding_model
from tfpipeline.training.trainer import train

TOPICS = ["apple", "river", "guitar", "planet", "coffee", "winter", "doctor", "garden", "rocket", "castle",
          "ocean", "camera"]
FILLER = "what how can i the a is about do you know tell me please where when".split()
ANSWER_FILLER = "this answer covers our all details for it here".split()


def topic_pairs(per_topic: int, seed: int, origin: str) -> list:
    rng = random.Random(seed)
    out = []
    for topic in TOPICS:
        answer = f"{' '.join(rng.sample(ANSWER_FILLER, 3))} {topic}"
        for i in range(per_topic):
            words = rng.sample(FILLER, rng.randint(2, 5))
            words.insert(rng.randint(0, len(words)), topic)
            out.append(PairExample(" ".join(words), answer, group=topic, origin=f"{origin}:{len(out) + 2}"))
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def pair_data() -> TaskData:
    return TaskData(name="topics", task=EMBEDDING, train=topic_pairs(10, 1, "train"),
                    validation=topic_pairs(2, 2, "valid"), test=topic_pairs(3, 3, "test"))


@pytest.fixture(scope="module")
def embedding_run(tmp_path_factory, tiny_checkpoint, pair_data):
    out = str(tmp_path_factory.mktemp("embedding") / "run")
    return train(data=pair_data, model=tiny_checkpoint, output_dir=out, epochs=12, batch_size=16,
                 learning_rate=3e-3, max_length=16, verbose=0, early_stopping_patience=0, seed=13)


def test_pair_batches_hold_queries_positives_and_in_batch_labels(tiny_checkpoint, pair_data):
    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=16)
    batches = list(make_pair_dataset(pair_data.train, encoder, batch_size=16))
    assert len(batches) == 8                                          # 120 pairs -> 7 full + 1 partial
    pairs, labels = batches[-1]
    assert sorted(pairs) == ["group_id", "positive", "query"]
    np.testing.assert_array_equal(labels.numpy(), np.arange(8))
    assert pairs["query"]["input_ids"].shape[0] == pairs["positive"]["input_ids"].shape[0] == 8
    mixed = [PairExample("q", "p", negative="n"), PairExample("q2", "p2", origin="f.csv:3")]
    with pytest.raises(DataError, match="f.csv:3"):
        make_pair_dataset(mixed, encoder, batch_size=2)


def test_embeddings_are_unit_vectors(tiny_checkpoint):
    model = build_embedding_model(tiny_checkpoint)
    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=16)
    vectors = model(encoder.pad(encoder.encode(tf.constant(["a short one", "a longer text with more words"]))))
    np.testing.assert_allclose(np.linalg.norm(vectors.numpy(), axis=1), 1.0, atol=1e-5)


def test_training_learns_to_retrieve_and_reports_ranking_metrics(embedding_run, tiny_checkpoint, pair_data):
    report = embedding_run.report
    assert report["task"] == EMBEDDING and report["candidates"] == len(TOPICS)
    assert report["recall@1"] >= 0.8, report
    untrained = ModelBundle(build_embedding_model(tiny_checkpoint), embedding_run.bundle.encoder,
                            embedding_run.bundle.labels, EMBEDDING)
    before = evaluate_examples(untrained.predictor(), pair_data.test, candidates=pair_data.train)
    assert report["recall@1"] > before["recall@1"] + 0.3, (before, report)
    assert "recall@1" in open(os.path.join(embedding_run.output_dir, "report.html")).read()


def test_model_folder_reloads_with_identical_vectors(embedding_run):
    texts = ["where is the apple", "tell me about rockets"]
    before = embedding_run.bundle.predictor().embed(texts)
    bundle = ModelBundle.load(embedding_run.output_dir)
    assert bundle.kind == "embedding" and bundle.task == EMBEDDING
    np.testing.assert_allclose(bundle.predictor().embed(texts), before, atol=1e-5)


@pytest.fixture(scope="module")
def indexed_export(embedding_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    documents = root / "answers.jsonl"
    documents.write_text("".join(json.dumps({"id": f"faq-{t}", "text": f"our answer about {t}"}) + "\n"
                                 for t in TOPICS))
    base = str(root / "exports")
    assert main(["index", "--model-dir", embedding_run.output_dir, "--documents", str(documents),
                 "--base-dir", base, "--name", "faq", "--top-k", "3"]) == 0
    return dict(base=base, path=os.path.join(base, "faq", "1"), documents=str(documents))


def test_index_export_searches_the_documents(indexed_export, embedding_run):
    table = signature_table(indexed_export["path"])
    assert set(table) == {"serving_default", "embed", "predict_ids", "search"}
    assert table["search"]["outputs"]["ids"] == {"dtype": "string", "shape": [-1, 3]}
    assert read_export_metadata(indexed_export["path"])["index"] == {"documents": len(TOPICS), "top_k": 3}
    loaded = tf.saved_model.load(indexed_export["path"])
    queries = ["can you tell me about the guitar", "where is the castle"]
    out = loaded.signatures["search"](text=tf.constant(queries))
    assert [row[0].decode() for row in out["ids"].numpy()] == ["faq-guitar", "faq-castle"]
    assert (np.diff(out["scores"].numpy(), axis=1) <= 1e-6).all()     # best first
    vectors = loaded.signatures["serving_default"](text=tf.constant(queries))["embedding"].numpy()
    np.testing.assert_allclose(vectors, embedding_run.bundle.predictor().embed(queries), atol=1e-5)


def test_index_export_runs_in_tf1_graph_mode(indexed_export):
    import tensorflow_text  # noqa: F401  (the tokenizer's ops, as TF Serving links them)

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], indexed_export["path"])
        signature = meta_graph.signature_def["search"]
        ids = session.run(signature.outputs["ids"].name,
                          {signature.inputs["text"].name: np.array(["how is the winter"], dtype=object)})
    assert ids[0][0].decode() == "faq-winter"


def test_search_through_the_embedded_server(indexed_export):
    with ModelServer(indexed_export["base"], grpc_port=-1, rest_port=0, poll_seconds=0) as server:
        client = RestClient(server.rest_url, "faq", timeout=30)
        rows = client.predict_texts(["the doctor please"], signature_name="search")
    assert rows[0]["ids"][0] == "faq-doctor" and len(rows[0]["texts"]) == 3


def test_index_rejects_duplicate_ids_and_non_embedding_models(tmp_path, embedding_run, exports, capsys):
    documents = tmp_path / "docs.csv"
    documents.write_text("id,text\na,first\na,second\n")
    args = ["--documents", str(documents), "--base-dir", str(tmp_path), "--name", "x"]
    assert main(["index", "--model-dir", embedding_run.output_dir, *args]) == 2
    assert "docs.csv:3: document id 'a' already used on line 2" in capsys.readouterr().err
    documents.write_text("id,text\na,first\n")
    assert main(["index", "--model-dir", exports["clf_dir"], *args]) == 2
    assert "needs an embedding model, not classification" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")
    with pytest.raises(ExportError, match="unique"):
        ModelBundle.load(embedding_run.output_dir).document_index(["a", "b"], ["same", "same"])
