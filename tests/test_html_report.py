"""The run report page: a well-formed, self-contained HTML file whose plots are real PNGs, also on disk."""
from __future__ import annotations

import base64
import json
import os
import struct
from html.parser import HTMLParser

import pytest

from tfpipeline.errors import ConfigError
from tfpipeline.evaluation.html_report import save_report, write_html_report
from tfpipeline.evaluation.reports import classification_report, ner_report

LONG = "card_payment_not_recognised_by_the_merchant_terminal"   # > 24 characters: shown in full
TAGGY = "<b>x</b>"                                              # must appear escaped, never as a tag
LABELS = ["positive", "negative", LONG, TAGGY]
VOID = {"meta", "img", "br", "hr", "link", "input"}
HISTORY = {"loss": [0.9, 0.5, 0.4], "val_loss": [0.8, 0.6, 0.65],
           "accuracy": [0.6, 0.8, 0.85], "val_accuracy": [0.65, 0.75, 0.74]}
RECIPE = {"learning_rate": {"value": 1e-4, "source": "minilm default"},
          "batch_size": {"value": 32, "source": "--batch-size"}}


class Page(HTMLParser):
    """Collects the tags (checking that they nest), headings, table rows and image sources of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.headings, self.tables, self.images, self.errors = [], [], [], [], [], []
        self.row, self.cell, self.heading = None, None, None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag in ("h1", "h2"):
            self.heading = ""

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th"):
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr":
            self.tables[-1].append(self.row)
        elif tag in ("h1", "h2"):
            self.headings.append(self.heading)
            self.heading = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.heading is not None:
            self.heading += data


def parse(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    page = Page()
    page.feed(text)
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    assert text.startswith("<!DOCTYPE html>")
    return page, text


def png_size(data: bytes):
    """(width, height) from the IHDR chunk of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def check_images(page, directory, names):
    """Every <img> is an inline PNG > 100x100 px, and the same bytes are in the folder under ``names``."""
    assert len(page.images) == len(names)
    for src, name in zip(page.images, names):
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        data = base64.b64decode(src[len(prefix):], validate=True)
        width, height = png_size(data)
        assert width > 100 and height > 100
        with open(os.path.join(directory, name), "rb") as f:
            assert f.read() == data


def table_with(page, header0):
    return next(t for t in page.tables if t[0][0] == header0)


@pytest.fixture
def classification():
    y_true = ["positive", "negative", LONG, TAGGY, "positive", LONG, "negative", TAGGY]
    y_pred = ["positive", "positive", LONG, TAGGY, "negative", LONG, "negative", LONG]
    report = classification_report(y_true, y_pred, LABELS)
    report.update(dataset="my <data>", split="test", train_seconds=12.345, skipped_rows=3,
                  epochs={"kept": 2, "run": 3, "cap": 5, "stopped": "no validation accuracy improvement for 1 epoch"})
    return report


def test_classification_page(tmp_path, classification):
    path = write_html_report(str(tmp_path), classification, history=HISTORY, recipe=RECIPE)
    assert path == os.path.join(str(tmp_path), "report.html")
    page, text = parse(path)
    assert page.headings[0] == "my <data> · test"
    assert page.headings[1:] == ["Scores", "Training curves", "Confusion matrix", "Per-class scores", "Recipe"]
    scores = dict(map(tuple, table_with(page, "metric")[1:]))
    assert scores["accuracy"] == "0.6250" and scores["examples"] == "8"
    assert scores["train seconds"] == "12.3" and scores["skipped rows"] == "3"
    assert scores["kept epoch"] == "2 of 3 (stopped: no validation accuracy improvement for 1 epoch)"
    assert {"macro-F1", "weighted-F1"} <= set(scores)
    per_class = table_with(page, "label")
    assert per_class[0] == ["label", "precision", "recall", "F1", "support"]
    assert [row[0] for row in per_class[1:]] == LABELS           # full names, in label order
    assert per_class[1:][LABELS.index(TAGGY)] == [TAGGY, "1.000", "0.500", "0.667", "2"]
    # the tag-like label and dataset name are text, never markup
    assert "b" not in {tag for tag, _ in page.tags} and "data" not in {tag for tag, _ in page.tags}
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>" not in text
    # self-contained: no script, no link, no URL outside the data URIs
    assert not {"script", "link", "iframe"} & {tag for tag, _ in page.tags}
    assert "http://" not in text and "https://" not in text
    check_images(page, tmp_path, ["curves.png", "confusion_matrix.png"])
    assert sorted(os.listdir(tmp_path)) == ["confusion_matrix.png", "curves.png", "report.html"]


def test_recipe_table_shows_value_and_source(tmp_path, classification):
    page, _ = parse(write_html_report(str(tmp_path), classification, recipe=RECIPE))
    assert table_with(page, "setting") == [["setting", "value", "source"],
                                           ["learning_rate", "0.0001", "minilm default"],
                                           ["batch_size", "32", "--batch-size"]]


def test_no_history_no_curves(tmp_path, classification):
    write_html_report(str(tmp_path), classification, history=HISTORY)
    assert (tmp_path / "curves.png").exists()
    page, text = parse(write_html_report(str(tmp_path), classification, history={}, title="no curves"))
    assert page.headings[0] == "no curves" and "Recipe" not in page.headings
    assert "No training history" in text
    check_images(page, tmp_path, ["confusion_matrix.png"])
    assert not (tmp_path / "curves.png").exists()                 # the stale plot of the earlier page is gone


def test_ner_page(tmp_path):
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"], ["O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"], ["O", "B-LOC", "I-LOC"]]
    report = ner_report(gold, pred)
    report.update(source="dev.conll", model_dir="runs/ner")
    history = {"loss": [1.0, 0.5], "val_loss": [0.9, 0.7], "accuracy": [0.7, 0.9], "val_accuracy": [0.7, 0.8],
               "lr": [1e-4, 5e-5]}
    page, text = parse(write_html_report(str(tmp_path), report, history=history))
    assert page.headings == ["dev.conll", "Scores", "Training curves", "Entity scores per type", "Per-type scores"]
    scores = dict(map(tuple, table_with(page, "metric")[1:]))
    assert set(scores) == {"entity precision", "entity recall", "entity F1", "token accuracy", "sentences"}
    assert scores["sentences"] == "3" and scores["entity F1"] == f"{report['f1']:.4f}"
    per_type = table_with(page, "entity type")
    assert [row[0] for row in per_type[1:]] == ["LOC", "ORG", "PER"]
    assert per_type[1:][2] == ["PER", "1.000", "0.500", "0.667", "2"]
    assert "runs/ner" in text
    check_images(page, tmp_path, ["curves.png", "entity_f1.png"])


def test_many_labels_stay_readable(tmp_path):
    labels = [f"intent_number_{i:02d}_with_a_long_name" for i in range(80)]
    report = classification_report(labels, labels[1:] + labels[:1], labels)
    page, _ = parse(write_html_report(str(tmp_path), report))
    width, height = png_size((tmp_path / "confusion_matrix.png").read_bytes())
    assert width > 1500 and height > 1500                       # the figure grows with the label count
    assert [row[0] for row in table_with(page, "label")[1:]] == labels


def test_named_page_prefixes_its_pngs(tmp_path, classification):
    write_html_report(str(tmp_path), classification, history=HISTORY)
    path = write_html_report(str(tmp_path), classification, history=HISTORY, filename="eval.html")
    assert path == os.path.join(str(tmp_path), "eval.html")
    check_images(parse(path)[0], tmp_path, ["eval_curves.png", "eval_confusion_matrix.png"])
    assert sorted(os.listdir(tmp_path)) == ["confusion_matrix.png", "curves.png", "eval.html",
                                            "eval_confusion_matrix.png", "eval_curves.png", "report.html"]
    for bad in ("sub/eval.html", "eval.json"):
        with pytest.raises(ConfigError):
            write_html_report(str(tmp_path), classification, filename=bad)


def test_save_report_picks_the_format_by_extension(tmp_path, classification):
    save_report(str(tmp_path / "out" / "scores.html"), classification)
    assert sorted(os.listdir(tmp_path / "out")) == ["scores.html", "scores_confusion_matrix.png"]
    save_report(str(tmp_path / "scores.json"), classification)
    assert json.loads((tmp_path / "scores.json").read_text())["accuracy"] == classification["accuracy"]
