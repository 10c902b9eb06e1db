"""Evaluation reports checked against numbers worked out by hand, plus evaluate_examples/evaluate_model."""
from __future__ import annotations

import pytest

from tfpipeline.data.examples import TextExample, TokenExample
from tfpipeline.errors import DataError
from tfpipeline.bundle import ModelBundle
from tfpipeline.evaluation.evaluate import evaluate_examples, evaluate_model
from tfpipeline.evaluation.reports import classification_report, format_report, ner_report

# 6 examples, 3 classes:            a  a  a  b  b  c
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]


def f1(p, r):
    return 2 * p * r / (p + r) if p + r else 0.0


@pytest.fixture()
def clf_report():
    return classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])


def test_classification_report_by_hand(clf_report):
    # per class (tp / predicted, tp / true):  a: 2/2, 2/3   b: 1/2, 1/2   c: 1/2, 1/1
    by_hand = {"a": (1.0, 2 / 3, 3), "b": (0.5, 0.5, 2), "c": (0.5, 1.0, 1)}
    assert clf_report["task"] == "classification" and clf_report["examples"] == 6
    assert clf_report["accuracy"] == pytest.approx(4 / 6)
    for name, (p, r, support) in by_hand.items():
        row = clf_report["per_class"][name]
        assert row["precision"] == pytest.approx(p) and row["recall"] == pytest.approx(r)
        assert row["f1-score"] == pytest.approx(f1(p, r)) and row["support"] == support
    f1s = [f1(p, r) for p, r, _ in by_hand.values()]  # 0.8, 0.5, 0.667
    assert clf_report["macro_f1"] == pytest.approx(sum(f1s) / 3)
    assert clf_report["macro_f1"] == pytest.approx(0.6555556, abs=1e-6)
    assert clf_report["weighted_f1"] == pytest.approx((3 * f1s[0] + 2 * f1s[1] + 1 * f1s[2]) / 6)
    assert clf_report["confusion_matrix"] == {"labels": ["a", "b", "c"],
                                              "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}


def test_classification_report_label_order_and_absent_class():
    report = classification_report(["x", "x"], ["x", "y"], ["y", "x", "z"])
    assert report["confusion_matrix"]["matrix"] == [[0, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert report["per_class"]["z"]["support"] == 0 and report["per_class"]["z"]["f1-score"] == 0.0
    # macro-F1 averages over every label of the model, including the ones never seen
    assert report["macro_f1"] == pytest.approx((0 + f1(1.0, 0.5) + 0) / 3)


def test_format_classification_report(clf_report):
    text = format_report(clf_report)
    assert "accuracy 0.6667" in text and "macro-F1 0.6556" in text and "(6 examples)" in text
    lines = text.splitlines()
    row_a = next(ln for ln in lines if ln.startswith("a "))
    assert row_a.split() == ["a", "1.000", "0.667", "0.800", "3"]
    matrix_rows = lines[lines.index("confusion matrix (rows = true, columns = predicted):") + 2:]
    assert [row.split() for row in matrix_rows] == [["a", "2", "1", "0"], ["b", "0", "1", "1"],
                                                    ["c", "0", "0", "1"]]


def test_format_report_prints_long_label_names_in_full():
    long = "card_payment_wrongly_charged_twice_abroad"        # 41 characters: a 77-intent banking label
    text = format_report(classification_report([long, "short"], [long, long], [long, "short"]))
    rows = [ln for ln in text.splitlines() if ln.startswith((long, "short"))]
    assert [row.split()[0] for row in rows] == [long, "short", long, "short"]   # table rows, then matrix rows
    header, first = text.splitlines()[0], rows[0]
    assert first.split()[1] == "0.500" and header.index("precision") + len("precision") == \
        first.index("0.500") + len("0.500")            # numbers stay under their headings


# Sentence 1: the PER span is only half tagged -> wrong entity, though 3/4 tokens are right.
# Sentence 2: ORG span exactly right.  Sentence 3: MISC missed entirely.
NER_TRUE = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"], ["B-MISC", "O"]]
NER_PRED = [["B-PER", "O", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"], ["O", "O"]]


def test_ner_report_entity_level_by_hand():
    report = ner_report(NER_TRUE, NER_PRED)
    # gold entities: PER, LOC, ORG, MISC (4); predicted: PER(partial), LOC, ORG (3); correct: LOC, ORG (2)
    p, r = 2 / 3, 2 / 4
    assert report["task"] == "ner" and report["sentences"] == 3
    assert report["precision"] == pytest.approx(p)
    assert report["recall"] == pytest.approx(r)
    assert report["f1"] == pytest.approx(f1(p, r)) and report["f1"] == pytest.approx(4 / 7)
    assert report["token_accuracy"] == pytest.approx(8 / 10)
    assert report["token_accuracy"] > report["f1"]  # token accuracy flatters a partial span
    per = report["per_type"]
    assert set(per) == {"PER", "LOC", "ORG", "MISC"}
    assert per["PER"]["precision"] == 0.0 and per["PER"]["recall"] == 0.0 and per["PER"]["support"] == 1
    assert per["LOC"]["f1-score"] == 1.0 and per["ORG"]["f1-score"] == 1.0
    assert per["MISC"]["recall"] == 0.0 and per["MISC"]["support"] == 1


def test_ner_report_perfect_and_empty_predictions():
    assert ner_report(NER_TRUE, NER_TRUE)["f1"] == pytest.approx(1.0)
    nothing = ner_report(NER_TRUE, [["O"] * len(s) for s in NER_TRUE])
    assert nothing["precision"] == 0.0 and nothing["recall"] == 0.0 and nothing["f1"] == 0.0
    assert nothing["token_accuracy"] == pytest.approx(3 / 10)  # the three gold O tokens


def test_format_ner_report():
    text = format_report(ner_report(NER_TRUE, NER_PRED))
    assert "entity precision 0.6667" in text and "recall 0.5000" in text and "F1 0.5714" in text
    assert "(3 sentences, seqeval)" in text
    per_row = next(ln for ln in text.splitlines() if ln.startswith("PER "))
    assert per_row.split() == ["PER", "0.000", "0.000", "0.000", "1"]


# --------------------------------------------------------------------------- evaluate_examples
def test_evaluate_examples_matches_predictions(trained_classifier, clf_data):
    predictor = trained_classifier.bundle.predictor()
    examples = clf_data.validation
    report = evaluate_examples(predictor, examples)
    predicted = [r["label"] for r in predictor.classify([e.text for e in examples])]
    hits = sum(p == e.label for p, e in zip(predicted, examples))
    assert report["accuracy"] == pytest.approx(hits / len(examples))
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == len(examples)


def test_evaluate_examples_unknown_gold_label(trained_classifier, trained_ner):
    examples = [TextExample("great film", "pos", origin="gold.csv:2"),
                TextExample("meh", "neutral", origin="gold.csv:3")]
    with pytest.raises(DataError) as info:
        evaluate_examples(trained_classifier.bundle.predictor(), examples)
    assert "gold.csv:3" in str(info.value) and "'neutral'" in str(info.value)
    with pytest.raises(DataError, match=r"gold.csv:9: example has no label"):
        evaluate_examples(trained_classifier.bundle.predictor(), [TextExample("x", None, origin="gold.csv:9")])
    with pytest.raises(DataError, match="no examples"):
        evaluate_examples(trained_classifier.bundle.predictor(), [])
    sentences = [TokenExample(("alice", "went"), ("B-PER", "O"), "gold.conll:1"),
                 TokenExample(("acme", "corp"), ("B-ORG", "I-ORG"), "gold.conll:4")]
    with pytest.raises(DataError, match=r"gold\.conll:4: unknown label 'B-ORG'"):
        evaluate_examples(trained_ner.bundle.predictor(), sentences)


def test_evaluate_model_on_files(tmp_path, trained_classifier, trained_ner, ner_data):
    path = tmp_path / "gold.jsonl"
    path.write_text('{"sentence": "a great movie", "y": "pos"}\n{"sentence": "awful acting", "y": "neg"}\n',
                    encoding="utf-8")
    report = evaluate_model(ModelBundle.load(trained_classifier.output_dir), file=str(path), text_column="sentence",
                            label_column="y")
    assert report["examples"] == 2 and report["accuracy"] == 1.0
    assert report["source"] == str(path) and report["model_dir"] == trained_classifier.output_dir

    conll = tmp_path / "gold.conll"
    conll.write_text("".join("".join(f"{t}\t{g}\n" for t, g in zip(s.tokens, s.tags)) + "\n"
                             for s in ner_data.validation), encoding="utf-8")
    # one set of column options for either kind of file: the CoNLL reader ignores the text columns
    ner = evaluate_model(ModelBundle.load(trained_ner.output_dir), file=str(conll), limit=10,
                         text_column="sentence", label_column="y")
    assert ner["sentences"] == 10
    direct = evaluate_examples(trained_ner.bundle.predictor(), ner_data.validation[:10])
    assert ner["f1"] == pytest.approx(direct["f1"])
    with pytest.raises(DataError, match="give a dataset name or a file"):
        evaluate_model(trained_ner.bundle)
