"""Integrated Gradients explanations: completeness, convergence, faithfulness on the keyword task, NER per entity,
targets and errors, the HTML page and the ``tfpipeline explain`` command."""
from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest

from tfpipeline.bundle import ModelBundle
from tfpipeline.cli import main
from tfpipeline.config import ExplainConfig, make_config
from tfpipeline.errors import ConfigError, DataError
from tfpipeline.evaluation import explain as explain_module
from tfpipeline.evaluation.explain import (Explainer, TaskScore, check_label, encode_text, explain, format_explanations,
                                          one_hot_target, quadrature, top_words)
from tfpipeline.evaluation.explain_html import render_explanations_html, write_explanations_html

CLF_TEXTS = ["the movie was great and the music", "a film with an awful plot about it", "great", "really the story"]
NER_TEXT = "today bob jones went to london"


@pytest.fixture(scope="module")
def clf_explainer(trained_classifier):
    return Explainer(trained_classifier.bundle, steps=50)


@pytest.fixture(scope="module")
def clf_results(clf_explainer):
    return clf_explainer.explain(CLF_TEXTS)


@pytest.fixture(scope="module")
def ner_explainer(trained_ner):
    return Explainer(trained_ner.bundle, steps=50)


def mean_gap(results) -> float:
    return float(np.mean([abs(e["completeness_gap"]) for r in results for e in r["explanations"]]))


# --------------------------------------------------------------------------- the integral
@pytest.mark.parametrize("method", ["gauss_legendre", "trapezoid"])
def test_quadrature_integrates_polynomials(method):
    alphas, weights = quadrature(method, 50)
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
    assert (alphas >= 0).all() and (alphas <= 1).all()
    assert float(np.sum(weights * alphas ** 3)) == pytest.approx(0.25, abs=1e-3)
    with pytest.raises(ConfigError, match="steps must be >= 2"):
        quadrature(method, 1)


def test_attributions_are_complete(clf_results):
    for result in clf_results:
        (explanation,) = result["explanations"]
        difference = explanation["score"] - explanation["baseline_score"]
        assert explanation["attribution_sum"] == pytest.approx(difference, abs=2e-3)
        assert explanation["completeness_gap"] == pytest.approx(explanation["attribution_sum"] - difference)
        assert sum(explanation["word_attributions"]) == pytest.approx(explanation["attribution_sum"], abs=1e-6)
        assert sum(explanation["token_attributions"]) == pytest.approx(explanation["attribution_sum"], abs=1e-6)
    assert max(abs(r["explanations"][0]["score"] - r["explanations"][0]["baseline_score"]) for r in clf_results) > 0.1


@pytest.mark.parametrize("method", ["gauss_legendre", "trapezoid"])
def test_more_steps_shrink_the_completeness_gap(trained_classifier, method):
    coarse = explain(trained_classifier.bundle, CLF_TEXTS, steps=3, method=method)
    fine = explain(trained_classifier.bundle, CLF_TEXTS, steps=64, method=method)
    assert mean_gap(fine) < mean_gap(coarse) / 2
    assert mean_gap(fine) < 1e-3


def test_zero_baseline_is_complete_too(trained_classifier):
    (result,) = explain(trained_classifier.bundle, CLF_TEXTS[:1], baseline="zero")
    assert result["integrated_gradients"]["baseline"] == "zero"
    assert abs(result["explanations"][0]["completeness_gap"]) < 2e-3


def test_batching_and_padding_do_not_change_attributions(trained_classifier, clf_results):
    """Rows of several texts share a batch (padded, masked): a text's attributions do not depend on its company."""
    alone = Explainer(trained_classifier.bundle, steps=50, batch_size=7).explain(CLF_TEXTS[2:3])
    together = clf_results[2]["explanations"][0]["word_attributions"]
    np.testing.assert_allclose(alone[0]["explanations"][0]["word_attributions"], together, atol=1e-5)


# --------------------------------------------------------------------------- classification
def test_the_keyword_gets_the_largest_attribution(clf_results):
    for result, keyword, label in [(clf_results[0], "great", "pos"), (clf_results[1], "awful", "neg")]:
        assert result["prediction"]["label"] == label
        (explanation,) = result["explanations"]
        assert explanation["target"] == label
        (word, value), = top_words(result, explanation, 1)
        assert word["text"] == keyword and value > 0


def test_words_tokens_and_offsets(clf_results):
    result = clf_results[0]
    assert [w["text"] for w in result["words"]] == CLF_TEXTS[0].split()
    assert all(result["text"][w["start"]:w["end"]] == w["text"] for w in result["words"])
    assert [t["piece"] for t in result["tokens"]][:4] == ["the", "movie", "was", "great"]
    explanation = result["explanations"][0]
    assert len(explanation["word_attributions"]) == len(result["words"])
    assert len(explanation["token_attributions"]) == len(result["tokens"])
    assert result["truncated"] is False and result["task"] == "classification"
    json.dumps(result)  # JSON-ready


def test_pieces_map_to_words_with_punctuation_and_accents(clf_explainer):
    text = "Naïve, café-goers: unbelievably great!"
    (result,) = clf_explainer.explain([text])
    assert [w["text"] for w in result["words"]] == ["Naïve", ",", "café", "-", "goers", ":", "unbelievably",
                                                    "great", "!"]
    assert all(text[w["start"]:w["end"]] == w["text"] for w in result["words"])
    pieces_of = {}
    for token in result["tokens"]:
        pieces_of.setdefault(token["word"], []).append(token["piece"].replace("##", ""))
    assert "".join(pieces_of[6]) == "unbelievably" and "".join(pieces_of[0]) == "naive"


def test_a_chosen_target_explains_that_label(clf_explainer):
    (result,) = clf_explainer.explain(["the movie was great"], target="neg")
    assert result["prediction"]["label"] == "pos"
    (explanation,) = result["explanations"]
    assert explanation["target"] == "neg"
    assert explanation["score"] == pytest.approx(1 - result["prediction"]["score"], abs=1e-5)
    (word, value), = top_words(result, explanation, 1)
    assert word["text"] == "great" and value < 0   # 'great' lowers the probability of 'neg'


def test_a_bad_target_is_a_clear_error(clf_explainer, ner_explainer):
    with pytest.raises(ConfigError, match=r"target 'positive' is not a label of this model \(labels: neg, pos\)"):
        clf_explainer.explain(["great"], target="positive")
    with pytest.raises(ConfigError, match=r"'B-PER' is not an entity type of this model \(types: LOC, PER\)"):
        ner_explainer.explain([NER_TEXT], target="B-PER")
    with pytest.raises(DataError, match="list of texts"):
        clf_explainer.explain("great")


def test_empty_and_truncated_texts(clf_explainer):
    long_text = " ".join(["the story"] * 20 + ["great"])
    empty, long = clf_explainer.explain(["", long_text])
    assert empty["words"] == [] and empty["explanations"][0]["attribution_sum"] == 0.0
    assert empty["explanations"][0]["completeness_gap"] == pytest.approx(0.0, abs=1e-6)
    assert long["truncated"] is True
    assert long["explanations"][0]["word_attributions"][-1] == 0.0   # 'great' was cut off (max length 32)


def test_deleting_the_top_word_lowers_the_score_more_than_a_random_word(trained_classifier, clf_explainer):
    predictor = trained_classifier.bundle.predictor()
    rng = random.Random(0)
    texts = ["the plot was great and the music really", "a very awful film about that actor",
             "this movie is quite great with it", "the story was awful and the scene"]
    results = clf_explainer.explain(texts)
    top_texts, random_texts, labels = [], [], []
    for result in results:
        words = [w["text"] for w in result["words"]]
        top = int(np.argmax(result["explanations"][0]["word_attributions"]))
        other = rng.choice([i for i in range(len(words)) if i != top])
        top_texts.append(" ".join(w for i, w in enumerate(words) if i != top))
        random_texts.append(" ".join(w for i, w in enumerate(words) if i != other))
        labels.append(trained_classifier.bundle.labels.id(result["prediction"]["label"]))
    before = np.array([r["prediction"]["score"] for r in results])
    after_top = predictor.class_probabilities(top_texts)[np.arange(len(texts)), labels]
    after_random = predictor.class_probabilities(random_texts)[np.arange(len(texts)), labels]
    top_drop, random_drop = np.mean(before - after_top), np.mean(before - after_random)
    assert top_drop > 0.05 and top_drop > 3 * abs(random_drop)


# --------------------------------------------------------------------------- NER
def test_ner_explains_each_predicted_entity(ner_explainer):
    (result,) = ner_explainer.explain([NER_TEXT])
    entities = result["prediction"]["entities"]
    assert [(e["text"], e["type"]) for e in entities] == [("bob jones", "PER"), ("london", "LOC")]
    assert [e["target"] for e in result["explanations"]] == ["PER", "LOC"]
    for explanation, entity in zip(result["explanations"], entities):
        assert explanation["entity"]["text"] == entity["text"]
        assert len(explanation["word_attributions"]) == len(result["words"]) == 6
        assert 0.5 < explanation["score"] <= 1.0    # mean probability of the entity's tags
        assert abs(explanation["completeness_gap"]) < 5e-3
    assert result["explanations"][0]["entity"]["words"] == [1, 2]
    assert result["explanations"][1]["entity"]["words"] == [5]
    json.dumps(result)


def test_ner_target_keeps_only_that_entity_type(ner_explainer):
    results = ner_explainer.explain([NER_TEXT, "the met in today"], target="LOC")
    assert [e["entity"]["text"] for e in results[0]["explanations"]] == ["london"]
    assert results[1]["explanations"] == [] and results[1]["prediction"]["entities"] == []
    assert "nothing to explain" in format_explanations(results)


def test_other_model_kinds_are_refused(trained_classifier):
    bundle = trained_classifier.bundle
    for meta, task, named in [({"head": "label_vectors"}, "classification", "label_vectors"),
                              ({"head": "cloze"}, "classification", "cloze"),
                              ({}, "image_classification", "image")]:
        other = ModelBundle(bundle.model, bundle.encoder, bundle.labels, task, meta)
        with pytest.raises(ConfigError, match=f"kind '{named}'"):
            Explainer(other)
    with pytest.raises(ConfigError, match="'embedding'"):   # a task (or kind) explain has no score for
        Explainer(ModelBundle(bundle.model, bundle.encoder, bundle.labels, "embedding", {}))


def test_a_new_task_plugs_in_with_one_registration(trained_classifier, monkeypatch):
    """How regression will plug in: raw outputs (transform = identity) and a one-hot weight on the chosen column."""
    def output_targets(case, outputs, labels, target):
        column = labels.id(target or labels.names[-1])
        return {"values": {n: float(v) for n, v in zip(labels.names, outputs)}}, [
            one_hot_target(labels.name(column), column, len(labels))]

    monkeypatch.setitem(explain_module.TASK_SCORES, "regression_demo",
                        TaskScore(encode_text, lambda logits: logits, output_targets, check_label))
    bundle = trained_classifier.bundle
    demo = ModelBundle(bundle.model, bundle.encoder, bundle.labels, "regression_demo")
    (result,) = explain(demo, ["the movie was great"])
    (explanation,) = result["explanations"]
    assert explanation["target"] == "pos"
    assert explanation["score"] == pytest.approx(result["prediction"]["values"]["pos"])   # the raw logit
    assert abs(explanation["completeness_gap"]) < 1e-3
    assert top_words(result, explanation, 1)[0][0]["text"] == "great"


# --------------------------------------------------------------------------- table and HTML
def test_table_lists_the_top_words(clf_results):
    text = format_explanations(clf_results[:1], top_k=3)
    lines = text.splitlines()
    assert lines[0] == f"text: {CLF_TEXTS[0]}" and lines[1].startswith("prediction: pos (")
    assert "explaining pos: score" in text and "completeness gap" in text
    assert lines[4].split()[1] == "great" and len(lines) == 4 + 3


def test_html_page_colours_words_and_escapes_everything(clf_explainer, tmp_path):
    (result,) = clf_explainer.explain(["<script>alert(1)</script> great & awful"])
    page = render_explanations_html([result])
    assert "<script" not in page and "</script" not in page
    assert '&lt;</span><span class="w"' in page and ">&amp;</span>" in page and ">alert</span>" in page
    assert "rgba(214,39,40," in page and "rgba(31,119,180," in page   # red and blue words
    assert "raises the score" in page and "lowers the score" in page    # the legend
    assert "http" not in page                                          # self-contained
    path = write_explanations_html(str(tmp_path / "sub" / "why.html"), [result])
    assert open(path, encoding="utf-8").read() == page
    with pytest.raises(ConfigError, match="ending in .html"):
        write_explanations_html(str(tmp_path / "why.txt"), [result])


# --------------------------------------------------------------------------- command line
def test_cli_table_json_and_html(trained_classifier, tmp_path, capsys):
    model_dir = trained_classifier.output_dir
    assert main(["explain", "--model-dir", model_dir, "the movie was great", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "prediction: pos" in out and "explaining pos" in out and len(out.strip().splitlines()) == 6

    page = tmp_path / "why.html"
    assert main(["explain", "--model-dir", model_dir, "--json", "--steps", "20", "--target", "neg",
                 "--html", str(page), "an awful film", "<script>x</script>"]) == 0
    captured = capsys.readouterr()
    results = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert [r["explanations"][0]["target"] for r in results] == ["neg", "neg"]
    assert results[0]["integrated_gradients"]["steps"] == 20
    assert str(page) in captured.err
    html = page.read_text(encoding="utf-8")
    assert "awful" in html and "<script>" not in html


def test_cli_ner_and_stdin(trained_ner, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(NER_TEXT + "\n"))
    assert main(["explain", "--model-dir", trained_ner.output_dir, "--target", "PER"]) == 0
    out = capsys.readouterr().out
    assert "prediction: bob jones [PER], london [LOC]" in out and "explaining entity 'bob jones' [PER]" in out
    assert "explaining entity 'london'" not in out


def test_cli_errors(trained_classifier, capsys, monkeypatch):
    model_dir = trained_classifier.output_dir
    assert main(["explain", "--model-dir", model_dir, "--target", "nope", "great"]) == 2
    assert "target 'nope' is not a label" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["explain", "--model-dir", model_dir]) == 2
    assert "nothing to explain" in capsys.readouterr().err


def test_config_checks_its_values():
    assert make_config(ExplainConfig, {"model_dir": "m"}).steps == 50
    with pytest.raises(ConfigError, match="steps must be >= 2"):
        make_config(ExplainConfig, {"model_dir": "m", "steps": 1})
    with pytest.raises(ConfigError, match="html must be a path ending in .html"):
        make_config(ExplainConfig, {"model_dir": "m", "html": "out.json"})
    with pytest.raises(ConfigError, match="method must be one of gauss_legendre, trapezoid"):
        make_config(ExplainConfig, {"model_dir": "m", "method": "simpson"})
