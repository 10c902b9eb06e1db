"""``predict --input``: files streamed through tf.data give the in-memory predictors' results, in input order
(classification, NER, regression, image paths, embeddings; csv/tsv/jsonl/txt/conll); runs resume after a kill
(partial last line); bad rows stop with file:line or are skipped.

Small windows (2 batches of 8 rows) make the length sort reorder rows within and across batches, so putting the
results back in input order is really exercised.
"""
import csv
import json
import os
import random

import numpy as np
import pytest
from PIL import Image

from conftest import ner_examples, write_conll
from tfpipeline.batch_predict import StreamingPredictor, predict_file, resume_point
from tfpipeline.bundle import ModelBundle
from tfpipeline.cli import main
from tfpipeline.config import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import TargetScaling
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import ConfigError, DataError
from tfpipeline.models.embedding_model import build_embedding_model
from tfpipeline.models.image_model import build_image_model, checkpoint_encoder, save_random_vit_checkpoint
from tfpipeline.models.task_model import build_task_model

SMALL_OPTIONS = dict(window_batches=2, progress=False)
SMALL = dict(batch_size=8, **SMALL_OPTIONS)


@pytest.fixture(scope="module")
def bundles(tiny_checkpoint):
    """Untrained tiny models (random weights are as good as any for comparing two prediction paths)."""
    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=32)
    made = {}
    for task, names in ((CLASSIFICATION, ["neg", "pos"]), (NER, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
                        (REGRESSION, ["score", "stars"])):
        labels = LabelMap(names)
        meta = {"target_scaling": TargetScaling((50.0, 3.0), (10.0, 1.0)).as_dict()} if task == REGRESSION else {}
        made[task] = ModelBundle(build_task_model(tiny_checkpoint, task, labels), encoder, labels, task, meta)
    return made


@pytest.fixture(scope="module")
def stream(bundles):
    """Stream a file through a task's model with small windows. One ``StreamingPredictor`` per model (traced
    once); its ``predictor`` is the in-memory reference."""
    streamers = {task: StreamingPredictor(bundle, SMALL["batch_size"]) for task, bundle in bundles.items()}

    def run(task, source, output, **options):
        return streamers[task].predict_file(str(source), str(output), **{**SMALL_OPTIONS, **options})

    run.predictors = {task: streamer.predictor for task, streamer in streamers.items()}
    return run


def _texts(n, seed=7):
    """Texts of very different lengths (1 to 40 words), some with commas, quotes and non-ASCII."""
    rng = random.Random(seed)
    words = "the a movie great awful film, plot \"quoted\" café naïve 東京 was".split()
    return [" ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 5, 15, 40]))) for _ in range(n)]


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def test_classification_csv_and_txt_match_the_predictor_in_input_order(tmp_path, stream):
    predictor = stream.predictors[CLASSIFICATION]
    texts = _texts(60)
    texts[3] = "a review\nover two lines, quoted"          # one CSV row spanning two lines
    table = _write_csv(tmp_path / "in.csv", ["id", "text"], [[f"r{i}", t] for i, t in enumerate(texts)])
    report = stream(CLASSIFICATION, table, tmp_path / "out.jsonl", id_column="id")
    assert report.written == 60 and report.bad_row_count == 0
    out = _read(tmp_path / "out.jsonl")
    expected = predictor.classify(texts)
    assert [o["id"] for o in out] == [f"r{i}" for i in range(60)], "results must come back in input order"
    assert [o["line"] for o in out[:6]] == [2, 3, 4, 5, 7, 8]     # where each row starts (row 3 spans 2 lines)
    assert [o["label"] for o in out] == [e["label"] for e in expected]
    np.testing.assert_allclose([o["score"] for o in out], [e["score"] for e in expected], atol=1e-5)
    assert set(out[0]) == {"line", "id", "label", "score", "scores"}

    one_line = [t.replace("\n", " ") for t in texts]
    (tmp_path / "in.txt").write_text("\n".join(one_line[:30]) + "\n\n  \n" + "\n".join(one_line[30:]) + "\n",
                                     encoding="utf-8")
    stream(CLASSIFICATION, tmp_path / "in.txt", tmp_path / "txt.jsonl")
    out = _read(tmp_path / "txt.jsonl")
    assert [o["line"] for o in out] == list(range(1, 31)) + list(range(33, 63)), "blank lines are no rows"
    np.testing.assert_allclose([o["score"] for o in out], [e["score"] for e in predictor.classify(one_line)],
                               atol=1e-5)


def test_ner_text_and_conll_and_regression_jsonl(tmp_path, stream):
    ner = stream.predictors[NER]
    sentences = ner_examples(40, seed=5)
    conll = write_conll(tmp_path / "in.conll", sentences)
    stream(NER, conll, tmp_path / "conll.jsonl")
    out = _read(tmp_path / "conll.jsonl")
    assert [[t["label"] for t in o["tokens"]] for o in out] == ner.tag([list(s.tokens) for s in sentences])
    assert [[t["text"] for t in o["tokens"]] for o in out] == [list(s.tokens) for s in sentences]
    assert out[1]["line"] == len(sentences[0].tokens) + 2          # a sentence starts after the blank line
    for o in out:
        for e in o["entities"]:
            assert o["text"][e["start"]:e["end"]] == e["text"]

    texts = [" ".join(s.tokens) for s in sentences]
    (tmp_path / "ner.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    stream(NER, tmp_path / "ner.txt", tmp_path / "ner.jsonl")
    streamed, in_memory = _read(tmp_path / "ner.jsonl"), ner.extract(texts)
    assert [o["entities"] for o in streamed] == [e["entities"] for e in in_memory]
    assert [o["tokens"] for o in streamed] == [e["tokens"] for e in in_memory]

    texts = _texts(40, seed=3)
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"review": text, "n": i}, ensure_ascii=False) + "\n")
    stream(REGRESSION, tmp_path / "in.jsonl", tmp_path / "reg.jsonl", text_column="review")
    out = _read(tmp_path / "reg.jsonl")
    got = np.array([[o["predictions"]["score"], o["predictions"]["stars"]] for o in out])
    np.testing.assert_allclose(got, stream.predictors[REGRESSION].regress(texts), rtol=1e-5, atol=1e-4)
    assert [o["line"] for o in out] == list(range(1, 41))


def test_resume_after_a_killed_run(tmp_path, stream, capsys):
    texts = _texts(50, seed=11)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    full = tmp_path / "full.jsonl"
    stream(CLASSIFICATION, source, full)
    lines = full.read_bytes().splitlines(keepends=True)
    assert len(lines) == 50

    # A run killed mid-write: 23 whole results and most of the 24th.
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(b"".join(lines[:23]) + lines[23][:-9])
    with pytest.raises(ConfigError, match="--resume"):
        stream(CLASSIFICATION, source, partial)       # never overwritten by accident
    assert resume_point(str(full)) == (50, 0)
    report = stream(CLASSIFICATION, source, partial, resume=True, progress=True)
    assert (report.done_before, report.written, report.dropped_bytes) == (23, 27, len(lines[23]) - 9)
    resumed = _read(partial)
    assert [o["line"] for o in resumed] == list(range(1, 51))
    for a, b in zip(resumed, _read(full)):
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-5
    bar = capsys.readouterr().err
    assert "100%" in bar and "rows/s" in bar, bar

    # Resuming a finished output does nothing.
    again = stream(CLASSIFICATION, source, partial, resume=True)
    assert (again.done_before, again.written) == (50, 0)

    spaced = tmp_path / "spaced.txt"     # rows on odd lines only: none starts at line 50
    spaced.write_text("".join(f"{t}\n\n" for t in texts[:30]), encoding="utf-8")
    before = full.read_bytes()
    with pytest.raises(DataError, match="no row of this file starts there"):
        stream(CLASSIFICATION, spaced, full, resume=True)
    assert full.read_bytes() == before

    (tmp_path / "other.jsonl").write_text('{"label": "pos"}\n')
    with pytest.raises(DataError, match="not a result of tfpipeline predict"):
        stream(CLASSIFICATION, source, tmp_path / "other.jsonl", resume=True)


def test_bad_rows_stop_with_file_and_line_or_are_skipped(tmp_path, stream):
    path = tmp_path / "in.csv"
    path.write_text("text,id\ngood one,1\nfine too,2\n,3\ntoo,many,fields\nlast one,5\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=rf"{path}:4: field 'text' is empty.*2 result\(s\) before it.*--resume"):
        stream(CLASSIFICATION, path, out)
    assert [o["line"] for o in _read(out)] == [2, 3], "results before the bad row are kept"

    report = stream(CLASSIFICATION, path, out, on_bad_rows="skip", resume=True)
    assert [o["line"] for o in _read(out)] == [2, 3, 6]
    assert report.bad_row_count == 2 and f"{path}:4" in report.bad_rows and f"{path}:5" in report.bad_rows

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "ok"}\n{not json\n{"other": 1}\n["a list"]\n{"text": "also ok"}\n')
    report = stream(CLASSIFICATION, jsonl, tmp_path / "j.jsonl", on_bad_rows="skip")
    assert [o["line"] for o in _read(tmp_path / "j.jsonl")] == [1, 5] and report.bad_row_count == 3
    with pytest.raises(DataError, match=rf"{jsonl}:2: invalid JSON"):
        stream(CLASSIFICATION, jsonl, tmp_path / "j2.jsonl")

    conll = tmp_path / "in.conll"
    conll.write_text("bob\tB-PER\nwent\tO\n\nalice\tB-PER\nin paris\tO\textra\n\nberlin\tB-LOC\n")
    report = stream(NER, conll, tmp_path / "c.jsonl", on_bad_rows="skip")
    assert [o["line"] for o in _read(tmp_path / "c.jsonl")] == [1, 7] and "sentence from line 4" in report.bad_rows

    with pytest.raises(ConfigError, match="CoNLL input"):
        stream(CLASSIFICATION, conll, tmp_path / "x.jsonl")
    with pytest.raises(DataError, match=r"in.csv:2: missing column 'review'"):
        stream(CLASSIFICATION, path, tmp_path / "y.jsonl", text_column="review", on_bad_rows="skip")
    assert not os.path.exists(tmp_path / "y.jsonl"), "a run that wrote nothing leaves no file"


def test_cli_streams_a_file_and_still_predicts_texts(tmp_path, bundles, capsys):
    model_dir = bundles[REGRESSION].save(str(tmp_path / "model"))
    source = tmp_path / "in.tsv"
    source.write_text("text\tpair\ngreat movie\tyes\nawful\tno\n", encoding="utf-8")
    out = str(tmp_path / "out.jsonl")
    assert main(["predict", "--model-dir", model_dir, "--input", str(source), "--output", out,
                 "--pair-column", "pair", "--no-progress"]) == 0
    assert "2 row(s) predicted" in capsys.readouterr().err
    assert [sorted(o["predictions"]) for o in _read(out)] == [["score", "stars"]] * 2

    assert main(["predict", "--model-dir", model_dir, "great movie"]) == 0     # today's predict, regression
    assert capsys.readouterr().out.startswith("score=")
    assert main(["predict", "--model-dir", model_dir, "--input", str(source)]) == 2
    assert "--output go together" in capsys.readouterr().err


def test_image_paths_relative_to_the_list_and_embeddings(tmp_path, tiny_checkpoint):
    vit = save_random_vit_checkpoint(str(tmp_path / "vit"), image_size=32)
    labels = LabelMap(["dark", "light"])
    images = ModelBundle(build_image_model(vit, labels, 32), checkpoint_encoder(vit, 32), labels,
                         IMAGE_CLASSIFICATION)
    (tmp_path / "pics").mkdir()
    paths = []
    for i in range(6):
        Image.fromarray(np.full((20 + i, 30, 3), i * 40, np.uint8)).save(tmp_path / "pics" / f"{i}.png")
        paths.append(f"pics/{i}.png")
    (tmp_path / "pics" / "bad.png").write_text("not an image")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths[:3] + ["pics/bad.png", "pics/missing.png"] + paths[3:]) + "\n")
    report = predict_file(images, str(listing), str(tmp_path / "img.jsonl"), on_bad_rows="skip", **SMALL)
    out = _read(tmp_path / "img.jsonl")
    assert [o["line"] for o in out] == [1, 2, 3, 6, 7, 8] and report.bad_row_count == 2
    assert f"{listing}:4" in report.bad_rows and f"{listing}:5" in report.bad_rows
    expected = images.predictor().classify([str(tmp_path / p) for p in paths])
    np.testing.assert_allclose([o["score"] for o in out], [e["score"] for e in expected], atol=1e-5)

    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=16)
    embedder = ModelBundle(build_embedding_model(tiny_checkpoint), encoder, LabelMap(["vector"]), EMBEDDING)
    texts = _texts(12, seed=2)
    (tmp_path / "docs.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    predict_file(embedder, str(tmp_path / "docs.txt"), str(tmp_path / "emb.jsonl"), **SMALL)
    vectors = np.array([o["embedding"] for o in _read(tmp_path / "emb.jsonl")])
    np.testing.assert_allclose(vectors, embedder.predictor().embed(texts), atol=1e-5)
