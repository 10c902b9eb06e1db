"""SavedModel export: signature table (via saved_model_cli), parity with the Keras model, ops, versioning.

The tiny random BERT is exported once per session (the ``exports`` fixture in
conftest.py, shared with test_serving.py): a classifier with optimizer state
that must *not* be exported, exported from in-memory objects, and a NER
tagger exported from its model folder via the CLI.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import CLF_LABELS, CLF_NAME, NER_LABELS, NER_NAME, TEXTS
from tfpipeline.data.examples import CLASSIFICATION, NER
from tfpipeline.data.tokenization import TextEncoder


@pytest.fixture(scope="module")
def clf_saved(exports):
    import tensorflow_text  # noqa: F401

    return tf.saved_model.load(exports["clf_export"])


@pytest.fixture(scope="module")
def ner_saved(exports):
    import tensorflow_text  # noqa: F401

    return tf.saved_model.load(exports["ner_export"])


# --------------------------------------------------------------------------- signature table
S, I32, F32 = "DT_STRING", "DT_INT32", "DT_FLOAT"
PREDICT, CLASSIFY = "tensorflow/serving/predict", "tensorflow/serving/classify"
CLF_TEXT_OUT = {"label": (S, "(-1)"), "label_id": (I32, "(-1)"), "scores": (F32, "(-1, 2)")}
IDS_IN = {"input_ids": (I32, "(-1, -1)"), "attention_mask": (I32, "(-1, -1)")}
NER_TEXT_OUT = {"tokens": (S, "(-1, -1)"), "labels": (S, "(-1, -1)"), "scores": (F32, "(-1, -1)"),
                "start": (I32, "(-1, -1)"), "end": (I32, "(-1, -1)"), "num_tokens": (I32, "(-1)"),
                "entity_type": (S, "(-1, -1)"), "entity_text": (S, "(-1, -1)"),
                "entity_start": (I32, "(-1, -1)"), "entity_end": (I32, "(-1, -1)"), "num_entities": (I32, "(-1)")}
EXPECTED = {
    CLASSIFICATION: {
        "serving_default": (PREDICT, {"text": (S, "(-1)")}, CLF_TEXT_OUT),
        "predict": (PREDICT, {"text": (S, "(-1)")}, CLF_TEXT_OUT),
        "predict_pair": (PREDICT, {"text": (S, "(-1)"), "text_pair": (S, "(-1)")}, CLF_TEXT_OUT),
        "classify": (CLASSIFY, {"inputs": (S, "(-1)")}, {"classes": (S, "(-1, 2)"), "scores": (F32, "(-1, 2)")}),
        "predict_ids": (PREDICT, IDS_IN, {"label_id": (I32, "(-1)"), "scores": (F32, "(-1, 2)")}),
    },
    NER: {
        "serving_default": (PREDICT, {"text": (S, "(-1)")}, NER_TEXT_OUT),
        "predict": (PREDICT, {"text": (S, "(-1)")}, NER_TEXT_OUT),
        "predict_ids": (PREDICT, IDS_IN, {"label_id": (I32, "(-1, -1)"), "scores": (F32, "(-1, -1, 5)")}),
    },
}


def parse_saved_model_cli(text: str) -> dict:
    """``saved_model_cli show --all`` output -> {signature: (method, inputs, outputs)}."""
    table = {}
    for block in re.split(r"\nsignature_def\['", text)[1:]:
        name = block.split("'", 1)[0]
        method = re.search(r"Method name is: (\S*)", block).group(1)
        inputs_part, outputs_part = block.split("following output(s):")
        tensor = r"(inputs|outputs)\['([^']+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\)|unknown_rank)"
        inputs = {m[1]: (m[2], m[3]) for m in re.findall(tensor, inputs_part)}
        outputs = {m[1]: (m[2], m[3]) for m in re.findall(tensor, outputs_part)}
        table[name] = (method, inputs, outputs)
    return table


@pytest.fixture(scope="module")
def saved_model_cli_output(exports):
    """``saved_model_cli show --all`` on both exports (run in parallel: each start imports TF)."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    procs = {task: subprocess.Popen([cli, "show", "--all", "--dir", exports[key]], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for task, key in ((CLASSIFICATION, "clf_export"), (NER, "ner_export"))}
    results = {}
    for task, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        results[task] = stdout
    return results


@pytest.mark.parametrize("task", [CLASSIFICATION, NER])
def test_saved_model_cli_lists_documented_signatures(saved_model_cli_output, task):
    table = parse_saved_model_cli(saved_model_cli_output[task])
    table.pop("__saved_model_init_op", None)
    assert table == EXPECTED[task]
    if task == CLASSIFICATION:
        assert table["classify"][0] == "tensorflow/serving/classify"


def test_export_layout_and_metadata(exports):
    from tfpipeline.export import read_export_metadata

    path = exports["clf_export"]
    assert os.path.basename(path) == "1" and os.path.dirname(path).endswith(CLF_NAME)
    for rel in ("saved_model.pb", "variables/variables.index", "assets/vocab.txt", "assets/labels.json",
                "assets.extra/tf_serving_warmup_requests", "assets.extra/tfpipeline.json"):
        assert os.path.isfile(os.path.join(path, rel)), rel
    with open(os.path.join(path, "assets", "labels.json")) as f:
        assert json.load(f)["labels"] == CLF_LABELS
    meta = read_export_metadata(path)
    assert meta["task"] == CLASSIFICATION and meta["labels"] == CLF_LABELS and meta["max_length"] == 32
    assert meta["version"] == 1 and meta["model_name"] == CLF_NAME and meta["tfpipeline_version"]
    assert os.path.isfile(os.path.join(path, "assets", "tokenizer_config.json"))
    assert meta["signatures"]["classify"]["method"] == CLASSIFY
    assert meta["signatures"]["serving_default"]["outputs"]["scores"] == {"dtype": "float32", "shape": [-1, 2]}
    assert read_export_metadata(exports["ner_export"])["source_model_dir"] == os.path.abspath(exports["ner_dir"])


def test_export_holds_model_weights_only(exports):
    """The model's weights, each once (the default compact graph fuses some of them: count elements), and no
    optimizer slots or step counter."""
    variables = tf.train.list_variables(os.path.join(exports["clf_export"], "variables", "variables"))
    weights = [int(np.prod(shape)) for name, shape in variables if name.startswith("model_variables/")]
    assert sum(weights) == exports["clf_weight_count"]
    assert not [n for n, _ in variables if "optimizer" in n.lower() or "iter" in n.lower()]


@pytest.mark.parametrize("key", ["clf_export", "ner_export"])
def test_only_allowed_custom_ops(exports, key):
    from tfpipeline.export import CUSTOM_OPS_ALLOWED, custom_ops, saved_model_ops

    ops = saved_model_ops(exports[key])
    assert "RoundRobinTrim" not in ops
    assert custom_ops(ops) <= CUSTOM_OPS_ALLOWED
    assert {"NormalizeUTF8", "FastWordpieceTokenizeWithOffsets"} <= custom_ops(saved_model_ops(exports[key],
                                                                                                "serving_default"))
    assert custom_ops(saved_model_ops(exports[key], "predict_ids")) == set(), "predict_ids must be core-TF only"


# --------------------------------------------------------------------------- parity: classification
def test_classification_matches_keras_predictor(clf_saved, clf_predictor):
    out = clf_saved.signatures["serving_default"](text=tf.constant(TEXTS))
    expected = clf_predictor.class_probabilities(TEXTS)
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
    assert out["label_id"].dtype == tf.int32
    assert list(out["label_id"].numpy()) == list(expected.argmax(-1))
    assert [x.decode() for x in out["label"].numpy()] == [CLF_LABELS[i] for i in expected.argmax(-1)]


def test_pair_signature_matches_keras_predictor(clf_saved, clf_predictor):
    pairs = ["second segment " * (i + 1) for i in range(len(TEXTS))]
    out = clf_saved.signatures["predict_pair"](text=tf.constant(TEXTS), text_pair=tf.constant(pairs))
    np.testing.assert_allclose(out["scores"].numpy(), clf_predictor.class_probabilities(TEXTS, pairs), atol=1e-5)


def test_classify_and_predict_ids_agree_with_serving_default(clf_saved, exports):
    from tfpipeline.export.warmup import text_example

    default = clf_saved.signatures["serving_default"](text=tf.constant(TEXTS))
    examples = tf.constant([text_example(t).SerializeToString() for t in TEXTS])
    classified = clf_saved.signatures["classify"](inputs=examples)
    assert classified["classes"].numpy().tolist() == [[b"neg", b"pos"]] * len(TEXTS)
    np.testing.assert_allclose(classified["scores"].numpy(), default["scores"].numpy(), atol=1e-6)

    encoder = TextEncoder.from_directory(exports["clf_dir"])
    features = encoder.pad(encoder.encode(tf.constant(TEXTS)))
    by_ids = clf_saved.signatures["predict_ids"](input_ids=features["input_ids"],
                                                 attention_mask=features["attention_mask"])
    np.testing.assert_allclose(by_ids["scores"].numpy(), default["scores"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(by_ids["label_id"].numpy(), default["label_id"].numpy())


def test_classify_requires_the_text_feature(clf_saved):
    empty = tf.train.Example().SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError):
        clf_saved.signatures["classify"](inputs=tf.constant([empty]))


# --------------------------------------------------------------------------- parity: NER
def _row(out, i, key, count_key="num_tokens"):
    n = int(out[count_key][i])
    values = out[key][i, :n].numpy().tolist()
    return [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]


def test_ner_matches_keras_predictor(ner_saved, ner_predictor):
    from tfpipeline.decoding import word_scores

    out = ner_saved.signatures["serving_default"](text=tf.constant(TEXTS))
    expected = ner_predictor.extract(TEXTS)
    for i, result in enumerate(expected):
        tokens = result["tokens"]
        assert _row(out, i, "tokens") == [t["text"] for t in tokens]
        assert _row(out, i, "labels") == [t["label"] for t in tokens]
        assert _row(out, i, "start") == [t["start"] for t in tokens]
        assert _row(out, i, "end") == [t["end"] for t in tokens]
        spans = [{"type": t, "text": x, "start": s, "end": e} for t, x, s, e in zip(
            *(_row(out, i, k, "num_entities") for k in ("entity_type", "entity_text", "entity_start", "entity_end")))]
        assert spans == [{k: ent[k] for k in ("type", "text", "start", "end")} for ent in result["entities"]]
    assert any(r["entities"] for r in expected), "the random tagger should produce some entities"

    # word scores = the Keras model's first-piece probabilities, recomputed here independently
    encoder = ner_predictor.encoder
    words, _, _ = encoder.split_words(tf.constant(TEXTS))
    features, word_ids = encoder.encode_words(words)
    probs = word_scores(ner_predictor.model(encoder.pad(features)), word_ids.to_tensor(default_value=-1),
                        words.row_lengths()).numpy()
    for i in range(len(TEXTS)):
        n = int(out["num_tokens"][i])
        np.testing.assert_allclose(out["scores"][i, :n].numpy(), probs[i, :n].max(-1), atol=1e-5)
        assert (out["scores"][i, n:].numpy() == 0).all() and (out["start"][i, n:].numpy() == -1).all()


def test_ner_truncated_words_are_outside(ner_saved):
    """Words past max_length pieces get no prediction: label O, score 0 (same rule as Predictor)."""
    out = ner_saved.signatures["serving_default"](text=tf.constant(["word " * 60]))
    assert int(out["num_tokens"][0]) == 60
    assert _row(out, 0, "labels")[40:] == ["O"] * 20 and (out["scores"][0, 40:].numpy() == 0).all()


def test_ner_predict_ids_agrees_with_serving_default(ner_saved, exports):
    from tfpipeline.export import encoder_from_export

    encoder = encoder_from_export(exports["ner_export"])          # the tokenizer shipped in assets/
    out = ner_saved.signatures["serving_default"](text=tf.constant(TEXTS))
    words, _, _ = encoder.split_words(tf.constant(TEXTS))
    features, word_ids = encoder.encode_words(words)
    padded = encoder.pad(features)
    by_ids = ner_saved.signatures["predict_ids"](input_ids=padded["input_ids"],
                                                 attention_mask=padded["attention_mask"])
    word_ids = word_ids.to_tensor(default_value=-1).numpy()
    for i in range(len(TEXTS)):
        n = int(out["num_tokens"][i])
        firsts = {int(w): p for p, w in enumerate(word_ids[i]) if w >= 0}
        ids = [int(by_ids["label_id"][i, firsts[w]]) if w in firsts else 0 for w in range(n)]
        assert [NER_LABELS[j] for j in ids] == _row(out, i, "labels")


@pytest.mark.parametrize("tags", [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["I-PER", "I-PER", "I-LOC", "B-LOC", "B-LOC", "I-LOC"],   # stray I-, type switch, B right after B
    ["O", "O"], [], ["I-LOC"], ["B-PER", "O", "I-PER"], ["B-MISC", "I-MISC", "X", "I-MISC"],
])
def test_merge_bio_matches_python_merge_entities(tags):
    from tfpipeline.decoding import bio_tables, merge_bio
    from tfpipeline.decoding import merge_entities

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "X"]
    prefixes, kinds, types = bio_tables(names)
    rows = [tags, list(reversed(tags))]             # two rows: merging must not leak across rows
    texts = [" ".join(f"w{j}" for j in range(len(r))) for r in rows]
    ids = tf.ragged.constant([[names.index(t) for t in r] for r in rows], dtype=tf.int32, ragged_rank=1)
    starts = tf.ragged.constant([[3 * j for j in range(len(r))] for r in rows], dtype=tf.int64, ragged_rank=1)
    ends = starts + 2
    merged = merge_bio(ids, starts, ends, tf.constant(prefixes), tf.constant(kinds))
    for i, (row, text) in enumerate(zip(rows, texts)):
        tokens = [{"label": t, "start": 3 * j, "end": 3 * j + 2} for j, t in enumerate(row)]
        expected = [(e["type"], e["start"], e["end"]) for e in merge_entities(text, tokens)]
        got = list(zip([types[k] for k in merged["kind"][i].numpy()], merged["start"][i].numpy().tolist(),
                       merged["end"][i].numpy().tolist()))
        assert got == expected


# --------------------------------------------------------------------------- warmup
def test_warmup_requests_replay_against_the_export(exports, clf_saved):
    from tfpipeline.export.warmup import read_warmup_requests

    logs = read_warmup_requests(os.path.join(exports["clf_export"], "assets.extra", "tf_serving_warmup_requests"))
    kinds = [(log.WhichOneof("log_type"), (log.predict_log.request.model_spec.signature_name
                                           or log.classify_log.request.model_spec.signature_name)) for log in logs]
    assert kinds == [("predict_log", "serving_default"), ("predict_log", "predict_ids"), ("classify_log", "classify")]
    for log in logs[:2]:
        request = log.predict_log.request
        assert request.model_spec.name == CLF_NAME
        feeds = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert clf_saved.signatures[request.model_spec.signature_name](**feeds)["scores"].shape[0] == 3
    examples = logs[2].classify_log.request.input.example_list.examples
    result = clf_saved.signatures["classify"](inputs=tf.constant([e.SerializeToString() for e in examples]))
    assert result["scores"].shape == (3, 2)


# --------------------------------------------------------------------------- versioning
def _listing(root):
    return sorted(os.listdir(root))


def test_versions_increment_and_are_never_overwritten(exports, tmp_path, monkeypatch):
    from tfpipeline.bundle import ModelBundle
    from tfpipeline.errors import ExportError

    base = str(tmp_path / "base")
    shutil.copytree(os.path.dirname(exports["ner_export"]), os.path.join(base, NER_NAME))
    root = os.path.join(base, NER_NAME)
    before = os.stat(os.path.join(root, "1", "saved_model.pb")).st_mtime_ns
    bundle = ModelBundle.load(exports["ner_dir"])

    second = bundle.export(base, NER_NAME)
    assert second == os.path.join(root, "2") and _listing(root) == ["1", "2"]
    assert json.load(open(os.path.join(second, "assets.extra", "tfpipeline.json")))["source_model_dir"] \
        == os.path.abspath(exports["ner_dir"])

    for bad in (1, 2, 0, -3, "3", True):
        with pytest.raises(ExportError):
            bundle.export(base, NER_NAME, version=bad)
    assert _listing(root) == ["1", "2"]
    assert os.stat(os.path.join(root, "1", "saved_model.pb")).st_mtime_ns == before

    # a failure half-way leaves nothing behind (no version 7, no staging folder)
    def half_written(module, path, *args, **kwargs):
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", half_written)
    with pytest.raises(RuntimeError, match="disk full"):
        bundle.export(base, NER_NAME, version=7)
    assert _listing(root) == ["1", "2"]


def test_cli_export_refuses_an_existing_version(exports, capsys):
    from tfpipeline.cli import main

    base = os.path.dirname(os.path.dirname(exports["ner_export"]))
    assert main(["export", "--model-dir", exports["ner_dir"], "--base-dir", base, "--name", NER_NAME,
                 "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_rejects_bad_sources_and_names(tmp_path, exports):
    from tfpipeline.bundle import ModelBundle
    from tfpipeline.errors import CheckpointError, ExportError

    with pytest.raises(CheckpointError, match="not a tfpipeline model folder"):
        ModelBundle.load(str(tmp_path))
    bundle = ModelBundle.load(exports["ner_dir"])
    for name in ("../escape", "", ".hidden", "a/b"):
        with pytest.raises(ExportError, match="invalid model name"):
            bundle.export(str(tmp_path), name)
    assert os.listdir(tmp_path) == []
