"""Checkpoints and task models: h5 and safetensors loading, save/load round trips, errors,
and the MiniLM sentence embedding checked against an independent numpy BERT."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfpipeline.data.examples import CLASSIFICATION, NER
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.models.checkpoint import resolve_checkpoint, weights_file
from tfpipeline.errors import CheckpointError, ConfigError
from tfpipeline.bundle import ModelBundle
from tfpipeline.models.task_model import TaskModel, build_task_model, count_params

LABELS = LabelMap(["neg", "pos"])
TAGS = LabelMap(["O", "B-PER", "I-PER"])


def features_for(encoder: TextEncoder, texts):
    return encoder.pad(encoder.encode(tf.constant(list(texts))))


def hidden(model: TaskModel, features) -> np.ndarray:
    return model.backbone.bert(features, training=False).last_hidden_state.numpy()


def tf_to_safetensors(h5_dir: str, out_dir: str) -> str:
    """Convert a TF BERT checkpoint folder to PyTorch-named model.safetensors (no torch needed)."""
    from safetensors.numpy import save_file
    from transformers import TFBertModel
    from transformers.modeling_tf_pytorch_utils import convert_tf_weight_name_to_pt_weight_name

    model = TFBertModel.from_pretrained(h5_dir)
    state = {}
    for w in model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(
            w.name, start_prefix_to_remove="bert.", tf_weight_shape=w.shape)
        value = w.numpy()
        if transpose.name != "NO":
            value = value.T
        state[name] = np.ascontiguousarray(value)
    os.makedirs(out_dir, exist_ok=True)
    for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(h5_dir, f), out_dir)
    save_file(state, os.path.join(out_dir, "model.safetensors"))
    return out_dir


@pytest.fixture(scope="module")
def tiny_encoder(tiny_checkpoint):
    return TextEncoder.from_directory(tiny_checkpoint, max_length=32)


@pytest.fixture(scope="module")
def safetensors_checkpoint(tiny_checkpoint, tmp_path_factory):
    return tf_to_safetensors(tiny_checkpoint, str(tmp_path_factory.mktemp("tiny_safetensors")))


# --------------------------------------------------------------------------- building
def test_tiny_checkpoint_files(tiny_checkpoint):
    assert {"config.json", "vocab.txt", "tf_model.h5", "tokenizer_config.json"} <= set(os.listdir(tiny_checkpoint))
    assert weights_file(tiny_checkpoint) == ("tf", os.path.join(tiny_checkpoint, "tf_model.h5"))
    assert resolve_checkpoint(tiny_checkpoint) == os.path.abspath(tiny_checkpoint)


@pytest.mark.parametrize("task,labels", [(CLASSIFICATION, LABELS), (NER, TAGS)])
def test_build_task_model_from_h5(tiny_checkpoint, tiny_encoder, task, labels):
    model = build_task_model(tiny_checkpoint, task, labels)
    f = features_for(tiny_encoder, ["a short text", "a somewhat longer text with more words"])
    logits = model(f)
    assert logits.dtype == tf.float32
    if task == CLASSIFICATION:
        assert logits.shape == (2, len(labels))
    else:
        assert logits.shape == (2, f["input_ids"].shape[1], len(labels))
    # extra features are ignored
    np.testing.assert_array_equal(model({**f, "row_id": tf.constant([0, 1])}).numpy(), logits.numpy())
    assert model.backbone.config.id2label == dict(enumerate(labels.names))
    params = count_params(model)
    assert 0 < params["trainable"] <= params["total"]


def test_pretrained_weights_are_loaded_not_random(tiny_checkpoint, tiny_encoder):
    f = features_for(tiny_encoder, ["weights should match the checkpoint"])
    a = build_task_model(tiny_checkpoint, CLASSIFICATION, LABELS)
    b = build_task_model(tiny_checkpoint, NER, TAGS)
    np.testing.assert_allclose(hidden(a, f), hidden(b, f), atol=1e-6)  # same backbone, different heads
    random_model = build_task_model(tiny_checkpoint, CLASSIFICATION, LABELS, pretrained=False)
    assert np.abs(hidden(random_model, f) - hidden(a, f)).max() > 1e-2


def test_safetensors_checkpoint_gives_same_backbone(tiny_checkpoint, safetensors_checkpoint, tiny_encoder):
    assert weights_file(safetensors_checkpoint)[0] == "safetensors"
    f = features_for(tiny_encoder, ["the safetensors path", "must reproduce the h5 weights exactly"])
    from_h5 = build_task_model(tiny_checkpoint, CLASSIFICATION, LABELS)
    from_st = build_task_model(safetensors_checkpoint, CLASSIFICATION, LABELS)
    np.testing.assert_allclose(hidden(from_st, f), hidden(from_h5, f), atol=1e-6)
    ner = build_task_model(safetensors_checkpoint, NER, TAGS)
    np.testing.assert_allclose(hidden(ner, f), hidden(from_h5, f), atol=1e-6)


def test_safetensors_missing_backbone_weight_is_an_error(safetensors_checkpoint, tmp_path):
    from safetensors.numpy import load_file, save_file

    broken = str(tmp_path / "broken")
    shutil.copytree(safetensors_checkpoint, broken)
    state = load_file(os.path.join(broken, "model.safetensors"))
    del state["encoder.layer.0.attention.self.query.weight"]
    save_file(state, os.path.join(broken, "model.safetensors"))
    with pytest.raises(CheckpointError, match="weights missing"):
        build_task_model(broken, CLASSIFICATION, LABELS)


def test_dropout_override(tiny_checkpoint):
    model = build_task_model(tiny_checkpoint, CLASSIFICATION, LABELS, dropout=0.3)
    assert model.backbone.config.hidden_dropout_prob == pytest.approx(0.3)


def test_unknown_task_rejected(tiny_checkpoint):
    with pytest.raises(ValueError, match="unknown task"):
        TaskModel(object(), "qa")


# --------------------------------------------------------------------------- errors
def test_checkpoint_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "missing"))
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    shutil.copy(os.path.join(tiny_checkpoint, "config.json"), only_config)
    with pytest.raises(CheckpointError, match="lacks vocab.txt"):
        build_task_model(str(only_config), CLASSIFICATION, LABELS)
    torch_only = tmp_path / "torch_only"
    torch_only.mkdir()
    for f in ("config.json", "vocab.txt"):
        shutil.copy(os.path.join(tiny_checkpoint, f), torch_only)
    with pytest.raises(CheckpointError, match="no weights"):
        build_task_model(str(torch_only), CLASSIFICATION, LABELS)
    (torch_only / "pytorch_model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="only pytorch_model.bin"):
        build_task_model(str(torch_only), CLASSIFICATION, LABELS)
    with pytest.raises(CheckpointError, match="not a tfpipeline model folder"):
        ModelBundle.load(tiny_checkpoint)


# --------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("task,labels", [(CLASSIFICATION, LABELS), (NER, TAGS)])
def test_save_load_round_trip_identical_logits(tmp_path, tiny_checkpoint, tiny_encoder, task, labels):
    model = build_task_model(tiny_checkpoint, task, labels)
    # move the weights away from the checkpoint so the round trip cannot pass by reloading it
    for w in model.trainable_weights:
        w.assign(w + tf.random.stateless_normal(w.shape, seed=[1, 2], stddev=0.05))
    out = ModelBundle(model, tiny_encoder, labels, task, {"note": "hi"}).save(str(tmp_path / "m"))
    assert {"config.json", "tf_model.h5", "vocab.txt", "labels.json", "tfpipeline.json"} <= set(os.listdir(out))
    with open(os.path.join(out, "tfpipeline.json"), encoding="utf-8") as f:   # the folder format, key order too
        assert list(json.load(f).items()) == [("task", task), ("max_length", 32), ("note", "hi")]
    loaded = ModelBundle.load(out)
    assert loaded.labels == labels and loaded.task == task and loaded.meta == {"note": "hi"}
    assert loaded.kind == "task" and loaded.directory == out and loaded.peft is None
    assert loaded.encoder.max_length == tiny_encoder.max_length
    f = features_for(loaded.encoder, ["round trip text", "another one, longer than the first"])
    np.testing.assert_allclose(loaded.model(f).numpy(), model(f).numpy(), rtol=0, atol=1e-6)
    assert loaded.model.task == task


def test_save_refuses_existing_folder_and_leaves_nothing_half_written(tmp_path, tiny_checkpoint, tiny_encoder):
    bundle = ModelBundle(build_task_model(tiny_checkpoint, CLASSIFICATION, LABELS), tiny_encoder, LABELS,
                         CLASSIFICATION)
    out = bundle.save(str(tmp_path / "m"))
    before = sorted(os.listdir(out))
    with pytest.raises(ConfigError, match="not empty"):
        bundle.save(out)
    assert sorted(os.listdir(out)) == before and not os.path.exists(out + ".partial")
    bundle.meta["kept"] = 1
    bundle.save(out, overwrite=True)
    assert ModelBundle.load(out).meta == {"kept": 1}


def test_unknown_model_kind_is_a_clear_error(tmp_path, tiny_checkpoint, tiny_encoder):
    out = ModelBundle(build_task_model(tiny_checkpoint, CLASSIFICATION, LABELS), tiny_encoder, LABELS,
                      CLASSIFICATION).save(str(tmp_path / "m"))
    meta_file = os.path.join(out, "tfpipeline.json")
    with open(meta_file, encoding="utf-8") as f:
        meta = json.load(f)
    with open(meta_file, "w", encoding="utf-8") as f:      # as a newer tfpipeline might write it
        json.dump({**meta, "head": "hologram"}, f)
    with pytest.raises(CheckpointError, match="unknown model kind 'hologram'"):
        ModelBundle.load(out)


def test_trained_model_folder_reloads_with_same_predictions(trained_classifier):
    texts = ["this movie was great", "really awful plot", "the story"]
    fresh = ModelBundle.load(trained_classifier.output_dir).predictor()
    np.testing.assert_allclose(fresh.class_probabilities(texts),
                               trained_classifier.bundle.predictor().class_probabilities(texts), atol=1e-6)


def test_fine_tuned_folder_as_checkpoint_with_new_head(trained_classifier, tiny_encoder):
    """A fine-tuned folder can start a new task: the backbone is kept, a different-size head is re-made."""
    three = LabelMap(["a", "b", "c"])
    model = build_task_model(trained_classifier.output_dir, CLASSIFICATION, three)
    f = features_for(tiny_encoder, ["keep the backbone"])
    assert model(f).shape == (1, 3)
    np.testing.assert_allclose(hidden(model, f), hidden(trained_classifier.bundle.model, f), atol=1e-5)


# --------------------------------------------------------------------------- MiniLM vs numpy BERT
def _layer_norm(x, weight, bias, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def numpy_bert(state, config, input_ids, token_type_ids, attention_mask):
    """Independent BERT encoder forward pass from PyTorch-layout weights (float64)."""
    p = {k: v.astype(np.float64) for k, v in state.items() if v.dtype.kind == "f"}
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    batch, length = input_ids.shape
    positions = np.arange(length)
    x = (p["embeddings.word_embeddings.weight"][input_ids]
         + p["embeddings.position_embeddings.weight"][positions][None]
         + p["embeddings.token_type_embeddings.weight"][token_type_ids])
    x = _layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    hidden_size = x.shape[-1]
    head_dim = hidden_size // heads
    additive = (1.0 - attention_mask[:, None, None, :]) * -1e9

    def linear(t, name):
        return t @ p[name + ".weight"].T + p[name + ".bias"]

    def split(t):
        return t.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

    for i in range(config["num_hidden_layers"]):
        pre = f"encoder.layer.{i}."
        q, k, v = (split(linear(x, pre + f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + additive
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden_size)
        x = _layer_norm(linear(context, pre + "attention.output.dense") + x,
                        p[pre + "attention.output.LayerNorm.weight"], p[pre + "attention.output.LayerNorm.bias"], eps)
        inter = _gelu(linear(x, pre + "intermediate.dense"))
        x = _layer_norm(linear(inter, pre + "output.dense") + x,
                        p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], eps)
    return x


def mean_pool_normalise(token_states, mask):
    mask = mask[..., None].astype(np.float64)
    pooled = (token_states * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse.",
             "Café au lait, s'il vous plaît — très bien!"]


@pytest.mark.integration
def test_minilm_embeddings_match_numpy_bert(minilm_dir, minilm_encoder):
    from safetensors.numpy import load_file

    assert minilm_encoder.lower_case and minilm_encoder.pad_id == 0
    with open(os.path.join(minilm_dir, "config.json")) as f:
        config = json.load(f)
    assert config["hidden_act"] == "gelu"  # exact erf GELU
    with open(os.path.join(minilm_dir, "1_Pooling", "config.json")) as f:
        assert json.load(f)["pooling_mode_mean_tokens"]  # the sentence-transformers recipe: mean pooling
    state = load_file(os.path.join(minilm_dir, "model.safetensors"))

    model = build_task_model("minilm", CLASSIFICATION, LABELS)
    f = features_for(minilm_encoder, SENTENCES)  # padded batch: exercises the attention mask
    mask = f["attention_mask"].numpy()
    assert (mask == 0).any()
    tf_states = hidden(model, f)
    tf_emb = mean_pool_normalise(tf_states, mask)
    np_states = numpy_bert(state, config, f["input_ids"].numpy(), f["token_type_ids"].numpy(), mask)
    np_emb = mean_pool_normalise(np_states, mask)

    real = mask.astype(bool)
    np.testing.assert_allclose(tf_states[real], np_states[real], atol=2e-4)
    np.testing.assert_allclose(tf_emb, np_emb, atol=1e-4)
    assert np.allclose(np.linalg.norm(tf_emb, axis=1), 1.0, atol=1e-5)

    # padding does not change a sentence's embedding
    alone = features_for(minilm_encoder, SENTENCES[:1])
    single = mean_pool_normalise(hidden(model, alone), alone["attention_mask"].numpy())
    np.testing.assert_allclose(single[0], tf_emb[0], atol=1e-5)

    cos = tf_emb @ tf_emb.T
    assert cos[0, 1] > cos[0, 2] + 0.2  # eating food ~ eating bread >> riding a horse
    assert cos[0, 1] > 0.5 and cos[0, 3] < cos[0, 1]


@pytest.mark.integration
def test_minilm_ner_model_shares_the_backbone(minilm_encoder):
    f = features_for(minilm_encoder, SENTENCES[:2])
    clf = build_task_model("minilm", CLASSIFICATION, LABELS)
    ner = build_task_model("default", NER, TAGS)
    np.testing.assert_allclose(hidden(ner, f), hidden(clf, f), atol=1e-5)
    assert ner(f).shape == (2, f["input_ids"].shape[1], 3)
