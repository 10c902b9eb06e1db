"""``export --optimize compact|compact+xla|compact+bf16``: the compact BERT graph gives the Keras model's outputs
(``compact+bf16``: within bfloat16 rounding).

Parity is checked where it matters, through the exported signatures
(``serving_default`` and ``predict_ids`` against the Keras model on the same
texts: padded batches of varied length, pairs, truncation), plus the heads
that have no export of their own here (zero-shot label vectors, unmerged
LoRA) directly, and MiniLM's real weights once. The tiny random BERT's heads
get N(0, 1/fan_in) kernels and centred heads, so logits are O(0.1..1) and
labels differ between texts: a wrong head or pooling would not hide in tiny
logits.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import CLF_LABELS, NER_LABELS, TEXTS
from tfpipeline.bundle import ModelBundle
from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import TargetScaling
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.decoding import word_scores
from tfpipeline.errors import ExportError
from tfpipeline.export import read_export_metadata, signature_table
from tfpipeline.export.compact_encoder import CompactBertModel, inference_model
from tfpipeline.models.task_model import build_task_model

ATOL = 1e-4          # the brief's bound on |compact - Keras| logits; measured ~1e-7 (tiny), ~5e-6 (MiniLM NER)
BF16_ATOL = 0.05     # bfloat16 keeps 8 mantissa bits: ~0.4% per matmul; measured ~1e-2 on logits of size ~1
PAIRS = ["second segment " * (i + 1) for i in range(len(TEXTS))]


def randomize(model, seed: int) -> None:
    """Every dense kernel ~ N(0, 1/fan_in): with the checkpoint's 0.02-std init the tiny BERT's [CLS] state
    differs between texts by ~0.3%, so any head that told texts apart would amplify float rounding too."""
    rng = np.random.RandomState(seed)
    for weight in model.weights:
        if weight.name.endswith("kernel:0"):
            weight.assign(rng.normal(scale=weight.shape[0] ** -0.5, size=weight.shape).astype(np.float32))


def center_head(model, dense, features) -> None:
    """Head bias = minus the mean logit over ``features``: every label wins somewhere."""
    logits = model(features, training=False).numpy().reshape(-1, dense.bias.shape[0])
    dense.bias.assign(dense.bias.numpy() - logits.mean(axis=0))


def text_features(encoder, texts=TEXTS, pairs=None):
    return encoder.pad(encoder.encode(tf.constant(texts), None if pairs is None else tf.constant(pairs)))


@pytest.fixture(scope="module")
def bundles(tiny_checkpoint):
    from tfpipeline.models.embedding_model import build_embedding_model, similarity_labels

    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=32)
    clf = build_task_model(tiny_checkpoint, CLASSIFICATION, LabelMap(CLF_LABELS))
    ner = build_task_model(tiny_checkpoint, NER, LabelMap(NER_LABELS))
    reg = build_task_model(tiny_checkpoint, REGRESSION, LabelMap(["score"]))
    embedding = build_embedding_model(tiny_checkpoint)
    for seed, model in enumerate((clf, ner, reg, embedding)):
        randomize(model, seed)
    for model in (clf, ner):
        center_head(model, model.backbone.classifier, text_features(encoder))
    scaling = TargetScaling((3.0,), (2.0,)).as_dict()
    return {CLASSIFICATION: ModelBundle(clf, encoder, LabelMap(CLF_LABELS), CLASSIFICATION),
            NER: ModelBundle(ner, encoder, LabelMap(NER_LABELS), NER),
            REGRESSION: ModelBundle(reg, encoder, LabelMap(["score"]), REGRESSION, {"target_scaling": scaling}),
            EMBEDDING: ModelBundle(embedding, encoder, similarity_labels(), EMBEDDING)}


@pytest.fixture(scope="module")
def compact_exports(bundles, tmp_path_factory):
    """Each text task exported with --optimize compact (NER through the CLI), classification also +xla, +bf16."""
    from tfpipeline.cli import main

    base = str(tmp_path_factory.mktemp("compact_exports"))
    paths = {task: bundles[task].export(base, task, optimize="compact")
             for task in (CLASSIFICATION, REGRESSION, EMBEDDING)}
    ner_dir = bundles[NER].save(os.path.join(base, "..", "ner_model"))
    assert main(["export", "--model-dir", ner_dir, "--base-dir", base, "--name", NER, "--optimize", "compact"]) == 0
    paths[NER] = os.path.join(base, NER, "1")
    paths["xla"] = bundles[CLASSIFICATION].export(base, "xla", optimize="compact+xla")
    paths["bf16"] = bundles[CLASSIFICATION].export(base, "bf16", optimize="compact+bf16")
    return paths


def keras_logits(bundle, texts, pairs=None):
    features = text_features(bundle.encoder, texts, pairs)
    return features, bundle.model(features, training=False).numpy()


def ids_outputs(loaded, features):
    return loaded.signatures["predict_ids"](input_ids=features["input_ids"],
                                            attention_mask=features["attention_mask"])


@pytest.mark.parametrize("key", [CLASSIFICATION, "xla"])
def test_classification_signatures_match_keras(bundles, compact_exports, key):
    bundle = bundles[CLASSIFICATION]
    loaded = tf.saved_model.load(compact_exports[key])
    features, logits = keras_logits(bundle, TEXTS)
    expected = tf.nn.softmax(logits).numpy()
    assert len(set(expected.argmax(-1))) == 2, "the centred head should give both labels"
    out = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=ATOL)
    assert [x.decode() for x in out["label"].numpy()] == [CLF_LABELS[i] for i in expected.argmax(-1)]
    by_ids = ids_outputs(loaded, features)
    np.testing.assert_allclose(by_ids["scores"].numpy(), expected, atol=ATOL)
    np.testing.assert_array_equal(by_ids["label_id"].numpy(), expected.argmax(-1))
    _, pair_logits = keras_logits(bundle, TEXTS, PAIRS)
    pair = loaded.signatures["predict_pair"](text=tf.constant(TEXTS), text_pair=tf.constant(PAIRS))
    np.testing.assert_allclose(pair["scores"].numpy(), tf.nn.softmax(pair_logits).numpy(), atol=ATOL)
    batch_one = loaded.signatures["serving_default"](text=tf.constant(TEXTS[:1]))   # another (bucketed) shape
    np.testing.assert_allclose(batch_one["scores"].numpy(), expected[:1], atol=ATOL)


def test_bf16_export_stores_bfloat16_weights_and_stays_close(bundles, compact_exports):
    """compact+bf16: the encoder's dense kernels are saved as bfloat16 (half the bytes), everything else float32;
    scores move by bfloat16 rounding only, in eager and in a TF1 session as TF Serving runs it."""
    path = compact_exports["bf16"]
    assert read_export_metadata(path)["optimize"] == "compact+bf16"
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    shapes, saved = reader.get_variable_to_shape_map(), {tf.bfloat16: 0, tf.float32: 0}
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if name.startswith("model_variables/"):
            saved[dtype] += int(np.prod(shapes[name]))
    model = bundles[CLASSIFICATION].model
    encoder_dense = [dense for layer in model.backbone.bert.encoder.layer
                     for dense in (layer.attention.self_attention.query, layer.attention.self_attention.key,
                                   layer.attention.self_attention.value, layer.attention.dense_output.dense,
                                   layer.intermediate.dense, layer.bert_output.dense)]
    in_bf16 = sum(int(np.prod(w.shape)) for dense in encoder_dense for w in (dense.kernel, dense.bias))
    assert saved[tf.bfloat16] == in_bf16 > 0
    assert saved[tf.float32] == sum(int(np.prod(v.shape)) for v in model.variables) - in_bf16
    _, logits = keras_logits(bundles[CLASSIFICATION], TEXTS)
    expected = tf.nn.softmax(logits).numpy()
    eager = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(TEXTS))["scores"].numpy()
    np.testing.assert_allclose(eager, expected, atol=BF16_ATOL)
    assert np.abs(eager - expected).max() > 1e-6, "bfloat16 matmuls should not give float32's exact scores"
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], path).signature_def["serving_default"]
        graph = session.run(signature.outputs["scores"].name,
                            {signature.inputs["text"].name: np.array([t.encode() for t in TEXTS], dtype=object)})
    np.testing.assert_allclose(graph, eager, atol=1e-6)


def test_compact_exports_keep_the_signatures_and_record_the_optimisation(compact_exports, exports, bundles):
    """Same signature names, dtypes and shapes as the Keras-graph export; each weight saved once."""
    for key, reference in ((CLASSIFICATION, exports["clf_export"]), ("xla", exports["clf_export"]),
                           ("bf16", exports["clf_export"]), (NER, exports["ner_export"])):
        assert signature_table(compact_exports[key]) == signature_table(reference)
    regression, embedding = signature_table(compact_exports[REGRESSION]), signature_table(compact_exports[EMBEDDING])
    assert {"serving_default", "predict", "predict_pair", "predict_ids", "regress"} <= set(regression)
    assert regression["predict_ids"]["outputs"]["predictions"] == {"dtype": "float32", "shape": [-1, 1]}
    assert regression["regress"]["outputs"]["outputs"] == {"dtype": "float32", "shape": [-1]}
    assert {"serving_default", "embed", "predict_ids"} <= set(embedding)
    assert embedding["serving_default"]["outputs"]["embedding"] == {"dtype": "float32", "shape": [-1, 32]}
    assert read_export_metadata(compact_exports[CLASSIFICATION])["optimize"] == "compact"
    assert read_export_metadata(exports["clf_export"])["optimize"] == "compact"   # the default, auto
    meta = read_export_metadata(compact_exports["xla"])
    assert meta["optimize"] == "compact+xla" and meta["tf_serving_flags"] == ["--xla_cpu_compilation_enabled"]

    def weights(path):
        return sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(
            os.path.join(path, "variables", "variables")) if name.startswith("model_variables/"))
    keras_weights = sum(int(np.prod(v.shape)) for v in bundles[CLASSIFICATION].model.variables)
    assert weights(compact_exports[CLASSIFICATION]) == keras_weights   # fused, not doubled


@pytest.mark.parametrize("key", [CLASSIFICATION, "xla"])
def test_compact_export_runs_in_tf1_graph_mode(bundles, compact_exports, key):
    """Loaded the way TF Serving loads it (a TF1 graph in a Session). For compact+xla this works in the
    Python TF runtime (XLA's CPU JIT is linked in); TF Serving additionally needs --xla_cpu_compilation_enabled."""
    _, logits = keras_logits(bundles[CLASSIFICATION], TEXTS)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], compact_exports[key]) \
            .signature_def["serving_default"]
        out = session.run({k: v.name for k, v in signature.outputs.items()},
                          {signature.inputs["text"].name: np.array([t.encode() for t in TEXTS], dtype=object)})
    np.testing.assert_allclose(out["scores"], tf.nn.softmax(logits).numpy(), atol=ATOL)


def test_ner_signatures_match_keras(bundles, compact_exports):
    bundle = bundles[NER]
    loaded = tf.saved_model.load(compact_exports[NER])
    out = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    words, _, _ = bundle.encoder.split_words(tf.constant(TEXTS))
    features, word_ids = bundle.encoder.encode_words(words)
    padded = bundle.encoder.pad(features)
    logits = bundle.model(padded, training=False).numpy()
    probs = word_scores(logits, word_ids.to_tensor(default_value=-1), words.row_lengths()).numpy()
    labels_seen = set()
    for i in range(len(TEXTS)):
        n = int(out["num_tokens"][i])
        expected = [NER_LABELS[j] for j in probs[i, :n].argmax(-1)]
        assert [x.decode() for x in out["labels"][i, :n].numpy()] == expected
        np.testing.assert_allclose(out["scores"][i, :n].numpy(), probs[i, :n].max(-1), atol=ATOL)
        labels_seen.update(expected)
    assert len(labels_seen) > 2, "the centred head should tag with several labels"
    by_ids = ids_outputs(loaded, padded)
    mask = padded["attention_mask"].numpy().astype(bool)
    np.testing.assert_allclose(by_ids["scores"].numpy()[mask], tf.nn.softmax(logits).numpy()[mask], atol=ATOL)


def test_regression_and_embedding_signatures_match_keras(bundles, compact_exports):
    reg = bundles[REGRESSION]
    loaded = tf.saved_model.load(compact_exports[REGRESSION])
    features, logits = keras_logits(reg, TEXTS)
    expected = logits * 2.0 + 3.0
    assert np.ptp(expected) > 0.1
    np.testing.assert_allclose(loaded.signatures["serving_default"](text=tf.constant(TEXTS))["predictions"].numpy(),
                               expected, atol=ATOL)
    np.testing.assert_allclose(ids_outputs(loaded, features)["predictions"].numpy(), expected, atol=ATOL)

    emb = bundles[EMBEDDING]
    loaded = tf.saved_model.load(compact_exports[EMBEDDING])
    features, vectors = keras_logits(emb, TEXTS)
    np.testing.assert_allclose(loaded.signatures["serving_default"](text=tf.constant(TEXTS))["embedding"].numpy(),
                               vectors, atol=ATOL)
    np.testing.assert_allclose(ids_outputs(loaded, features)["embedding"].numpy(), vectors, atol=ATOL)


def test_label_vector_and_unmerged_lora_models_get_the_same_logits(tiny_checkpoint, bundles):
    from tfpipeline.config import PeftOptions
    from tfpipeline.models.peft import apply_peft
    from tfpipeline.models.zeroshot import LabelVectorClassifier

    features = text_features(bundles[CLASSIFICATION].encoder, TEXTS, PAIRS)
    vectors = np.random.RandomState(3).normal(size=(3, 32)).astype(np.float32)
    zeroshot = LabelVectorClassifier(bundles[EMBEDDING].model.backbone, vectors / np.linalg.norm(vectors, axis=1,
                                                                                                keepdims=True), 0.05)
    lora = build_task_model(tiny_checkpoint, CLASSIFICATION, LabelMap(CLF_LABELS))
    apply_peft(lora, PeftOptions(peft="lora", lora_rank=4))
    randomize(lora, 5)
    for w in lora.trainable_weights:       # lora_b starts at zero: give the update a real effect
        if "lora_b" in w.name:
            w.assign(np.random.RandomState(5).normal(scale=0.05, size=w.shape).astype(np.float32))
    for model in (zeroshot, lora):
        expected = model(features, training=False).numpy()
        assert np.ptp(expected) > 0.1
        np.testing.assert_allclose(CompactBertModel.from_keras(model, CLASSIFICATION)(features).numpy(), expected,
                                   atol=ATOL)


def test_unsupported_models_get_a_clear_error_and_nothing_written(tiny_checkpoint, bundles, tmp_path):
    from tfpipeline.config import PeftOptions
    from tfpipeline.models.peft import apply_peft

    adapter = build_task_model(tiny_checkpoint, CLASSIFICATION, LabelMap(CLF_LABELS))
    apply_peft(adapter, PeftOptions(peft="adapter", adapter_size=4))
    bundle = ModelBundle(adapter, bundles[CLASSIFICATION].encoder, LabelMap(CLF_LABELS), CLASSIFICATION)
    with pytest.raises(ExportError, match="adapters.*--optimize none"):
        bundle.export(str(tmp_path), "adapter", optimize="compact")
    assert not os.path.exists(tmp_path / "adapter" / "1")
    with pytest.raises(ExportError, match="image_classification"):
        inference_model(object(), IMAGE_CLASSIFICATION, "compact")
    with pytest.raises(ExportError, match="unknown export optimisation 'fast'"):
        inference_model(adapter, CLASSIFICATION, "fast")
    assert inference_model(adapter, CLASSIFICATION, "none") is adapter
    # auto (the default): the Keras graph where there is no compact one, and the export says so
    assert inference_model(adapter, CLASSIFICATION, "auto") is adapter
    image_model = object()
    assert inference_model(image_model, IMAGE_CLASSIFICATION, "auto") is image_model
    assert read_export_metadata(bundle.export(str(tmp_path), "adapter"))["optimize"] == "none"
    assert isinstance(inference_model(bundles[CLASSIFICATION].model, CLASSIFICATION, "auto"), CompactBertModel)


def test_non_bert_architecture_is_refused():
    from transformers import DistilBertConfig, TFDistilBertForSequenceClassification

    from tfpipeline.models.task_model import TaskModel

    config = DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    model = TaskModel(TFDistilBertForSequenceClassification(config), CLASSIFICATION)
    with pytest.raises(ExportError, match="'distilbert', not BERT"):
        inference_model(model, CLASSIFICATION, "compact+xla")


def test_minilm_classifier_real_weights(minilm_dir, minilm_encoder):
    """MiniLM-L6's real encoder weights (gelu, 12 heads, 6 layers) with a classification head."""
    model = build_task_model(minilm_dir, CLASSIFICATION, LabelMap(["a", "b", "c"]))
    features = text_features(minilm_encoder, TEXTS, PAIRS)
    randomize(model.backbone.classifier, 1)
    expected = model(features, training=False).numpy()
    got = CompactBertModel.from_keras(model, CLASSIFICATION)(features).numpy()
    np.testing.assert_allclose(got, expected, atol=ATOL)
    bf16 = CompactBertModel.from_keras(model, CLASSIFICATION, bf16=True)(features).numpy()
    np.testing.assert_allclose(bf16, expected, atol=BF16_ATOL)
    assert np.abs(bf16 - expected).max() > ATOL      # the bfloat16 path really ran
