"""Cloze (masked-LM prompt + verbalizer) zero-/few-shot classification on a tiny random BERT MLM.

The in-graph prompt is checked against an independent path (HF ``BertTokenizer``
on the filled-in template string, full-vocabulary MLM logits at the mask);
fine-tuning, save/load, export and the CLI are checked end to end.
"""
import os

import numpy as np
import pytest

from conftest import keyword_examples, write_csv
from tfpipeline.bundle import ModelBundle, read_metadata
from tfpipeline.errors import CheckpointError, ConfigError, DataError

import tensorflow as tf

# The keywords of the synthetic data are 'great' (pos) / 'awful' (neg). The label words are different
# single pieces: with a *random* MLM, using the keywords themselves ties the input and output embedding
# of the same token and makes few-shot learning noticeably less stable.
VERBALIZER = {"pos": ["good"], "neg": ["bad"]}
MAX_POSITIONS = 64


@pytest.fixture(scope="module")
def mlm_checkpoint(tmp_path_factory):
    """A tiny random TFBertForMaskedLM (hidden 32, 2 layers, 64 positions) with the MiniLM vocabulary."""
    import tf_keras
    from transformers import BertConfig, TFBertForMaskedLM

    from tfpipeline.data.tokenization import TextEncoder, read_vocab
    from tfpipeline.models.checkpoint import minilm_path

    directory = str(tmp_path_factory.mktemp("tiny_mlm"))
    vocab = read_vocab(os.path.join(minilm_path(), "vocab.txt"))
    tf_keras.utils.set_random_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=MAX_POSITIONS)
    model = TFBertForMaskedLM(config)
    model(model.dummy_inputs, training=False)
    model.save_pretrained(directory)
    TextEncoder(vocab).save(directory)
    return directory


@pytest.fixture(scope="module")
def hf_tokenizer(mlm_checkpoint):
    from transformers import BertTokenizer

    return BertTokenizer(os.path.join(mlm_checkpoint, "vocab.txt"))


def make_classifier(path, **kwargs):
    from tfpipeline.training.prompting import ClozeClassifier

    kwargs.setdefault("verbalizer", VERBALIZER)
    return ClozeClassifier.from_checkpoint(["neg", "pos"], path, max_length=kwargs.pop("max_length", 32), **kwargs)


def direct_label_logits(clf, ids):
    """Independent path: full MLM on one unpadded prompted sequence -> log-softmax at [MASK] -> label words."""
    ids = np.asarray(ids, np.int32)[None]
    logits = clf.backbone({"input_ids": ids, "attention_mask": np.ones_like(ids),
                           "token_type_ids": np.zeros_like(ids)}, training=False).logits[0]
    at_mask = tf.nn.log_softmax(logits[int(np.flatnonzero(ids[0] == clf.encoder.mask_id)[0])]).numpy()
    return np.array([at_mask[row].mean() for row in clf.label_word_ids])


def text_features(clf, texts):
    return clf.encoder.pad(clf.encoder.encode(tf.constant(texts)))


@pytest.mark.parametrize("template", ["{text} It was [MASK].", "Review: {text} All in all, it was [MASK]!",
                                      "[MASK] news: {text}"])
def test_in_graph_prompt_equals_tokenizing_the_filled_template(mlm_checkpoint, hf_tokenizer, template):
    clf = make_classifier(mlm_checkpoint, template=template)
    texts = ["a great film", "x", "an awful plot and a very long scene with music", "a [MASK] trick"]
    features = text_features(clf, texts)
    prompted, mask_pos = clf.model.prompt_features(features)
    ids, attention = prompted["input_ids"].numpy(), prompted["attention_mask"].numpy()
    assert ids.shape[0] == len(texts) and not prompted["token_type_ids"].numpy().any()
    # HF's tokenizer would read a '[MASK]' typed in the text as the special token; ours reads it as '[ mask ]'
    filled = [template.replace("{text}", t.replace("[MASK]", "[ mask ]")) for t in texts]
    for row, text in enumerate(texts):
        expected = hf_tokenizer(filled[row])["input_ids"]
        n = int(attention[row].sum())
        assert ids[row, :n].tolist() == expected, (text, hf_tokenizer.convert_ids_to_tokens(ids[row, :n]))
        assert (ids[row, n:] == clf.encoder.pad_id).all()
        assert (ids[row] == clf.encoder.mask_id).sum() == 1       # a '[MASK]' typed in the text is plain text
        assert ids[row, int(mask_pos[row])] == clf.encoder.mask_id
    # the features -> logits model (padded batch, fast mask-only MLM head) == the independent full-MLM path
    logits = clf.model(features, training=False).numpy()
    direct = np.stack([direct_label_logits(clf, hf_tokenizer(f)["input_ids"]) for f in filled])
    np.testing.assert_allclose(logits, direct, atol=1e-4)
    spec = {k: tf.TensorSpec([None, None], tf.int32) for k in features}
    traced = tf.function(lambda f: clf.model(f, training=False), input_signature=[spec])
    np.testing.assert_allclose(traced(features).numpy(), logits, atol=1e-5)


def test_truncation_keeps_the_template_and_the_mask(mlm_checkpoint, hf_tokenizer):
    from tfpipeline.training.prompting import ClozeClassifier

    clf = make_classifier(mlm_checkpoint, max_length=16)
    assert clf.max_length == 16 and clf.model.text_budget == 16 - 2 - 4     # 'it was [MASK] .'
    long_text = " ".join(["the movie was really great"] * 6)
    features = text_features(clf, [long_text, "a great film"])
    assert features["input_ids"].shape[1] == 16                              # the encoder truncated to 14 pieces
    prompted, mask_pos = clf.model.prompt_features(features)
    ids = prompted["input_ids"].numpy()
    pieces = hf_tokenizer(long_text, add_special_tokens=False)["input_ids"][:clf.model.text_budget]
    expected = [clf.encoder.cls_id] + pieces + hf_tokenizer("It was [MASK].", add_special_tokens=False)["input_ids"] \
        + [clf.encoder.sep_id]
    assert ids.shape[1] == 16 and ids[0].tolist() == expected
    assert ids[0, int(mask_pos[0])] == clf.encoder.mask_id and int(mask_pos[0]) == 13
    np.testing.assert_allclose(clf.model(features).numpy()[0], direct_label_logits(clf, expected), atol=1e-4)
    # the prompted length never exceeds the checkpoint's position embeddings
    wide = ClozeClassifier(clf.backbone, type(clf.encoder)(clf.encoder.vocab, max_length=128), ["neg", "pos"],
                           verbalizer=VERBALIZER)
    assert wide.max_length == MAX_POSITIONS
    very_long = wide.model.prompt_features(text_features(wide, [long_text * 4]))[0]["input_ids"]
    assert very_long.shape[1] == MAX_POSITIONS
    with pytest.raises(ConfigError, match="no room for the text"):
        make_classifier(mlm_checkpoint, max_length=8, template="{text} " + "it was really very [MASK] .")


def test_zero_shot_probabilities_and_label_word_reduction(mlm_checkpoint, clf_data):
    clf = make_classifier(mlm_checkpoint, verbalizer={"pos": ["good", "great"], "neg": ["bad"]})
    texts = [ex.text for ex in clf_data.validation[:6]]
    probs = clf.class_probabilities(texts)
    assert probs.shape == (6, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert [r["label"] for r in clf.classify(texts)] == [["neg", "pos"][i] for i in probs.argmax(axis=1)]
    report = clf.evaluate(clf_data.validation)
    assert report["examples"] == len(clf_data.validation) and 0.0 <= report["accuracy"] <= 1.0
    vocab_log_probs = tf.nn.log_softmax(clf.model.mask_logits(text_features(clf, texts))).numpy()
    good, great, bad = (clf.encoder.vocab.index(w) for w in ("good", "great", "bad"))
    mean = clf.model(text_features(clf, texts)).numpy()
    np.testing.assert_allclose(mean[:, 1], (vocab_log_probs[:, good] + vocab_log_probs[:, great]) / 2, atol=1e-5)
    np.testing.assert_allclose(mean[:, 0], vocab_log_probs[:, bad], atol=1e-5)
    lse = make_classifier(mlm_checkpoint, verbalizer={"pos": ["good", "great"], "neg": ["bad"]}, reduce="logsumexp")
    np.testing.assert_allclose(lse.model(text_features(lse, texts)).numpy()[:, 1],
                               np.logaddexp(vocab_log_probs[:, good], vocab_log_probs[:, great]), atol=1e-5)


def test_verbalizer_and_template_errors(mlm_checkpoint):
    with pytest.raises(ConfigError, match=r"'neg'.*\['ne', '##g'\]"):
        make_classifier(mlm_checkpoint, verbalizer={"pos": ["good"]})      # default word = label name 'neg'
    with pytest.raises(ConfigError, match="'very good'"):
        make_classifier(mlm_checkpoint, verbalizer={"pos": ["very good"], "neg": ["bad"]})
    with pytest.raises(ConfigError, match="unknown labels"):
        make_classifier(mlm_checkpoint, verbalizer={"happy": ["good"]})
    with pytest.raises(ConfigError, match="both"):
        make_classifier(mlm_checkpoint, verbalizer={"pos": ["good"], "neg": ["good"]})
    for bad in ("It was [MASK].", "{text} It was good.", "{text} [MASK] or [MASK]", "{text} {text} [MASK]"):
        with pytest.raises(ConfigError, match="exactly one"):
            make_classifier(mlm_checkpoint, template=bad)


def test_checkpoint_without_mlm_head_is_refused(mlm_checkpoint, tiny_checkpoint, minilm_dir):
    from tfpipeline.models.cloze import has_mlm_head, load_mlm

    assert has_mlm_head(mlm_checkpoint)
    assert not has_mlm_head(tiny_checkpoint)          # TFBertModel: encoder only
    assert not has_mlm_head("minilm")                 # sentence-transformers MiniLM: no cls.predictions.*
    for path in (tiny_checkpoint, "minilm"):
        with pytest.raises(CheckpointError, match="no masked-LM head.*ZeroShotClassifier"):
            make_classifier(path)
    with pytest.raises(CheckpointError, match=r"no masked-LM head \(missing \['mlm___cls'\]\)"):
        load_mlm(tiny_checkpoint)                     # the loader checks too, not only has_mlm_head
    with pytest.raises(CheckpointError, match=r"no masked-LM head \(missing \['cls\.predictions"):
        load_mlm(minilm_dir)                          # safetensors path


def test_safetensors_mlm_checkpoint(mlm_checkpoint, tmp_path):
    """A PyTorch-format (model.safetensors) MLM checkpoint loads with its head and gives the same logits."""
    import shutil

    from safetensors.numpy import save_file
    from transformers.modeling_tf_pytorch_utils import TransposeType, convert_tf_weight_name_to_pt_weight_name

    from tfpipeline.models.cloze import has_mlm_head, load_mlm

    reference = load_mlm(mlm_checkpoint)
    state = {}
    for w in reference.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(w.name, tf_weight_shape=w.shape)
        state[name] = np.ascontiguousarray(w.numpy().T if transpose == TransposeType.SIMPLE else w.numpy())
    assert "cls.predictions.bias" in state
    folder = tmp_path / "pt"
    folder.mkdir()
    for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(mlm_checkpoint, f), folder / f)
    save_file(state, str(folder / "model.safetensors"))
    assert has_mlm_head(str(folder))
    texts = ["a great film", "an awful plot"]
    expected = make_classifier(mlm_checkpoint).class_probabilities(texts)
    np.testing.assert_allclose(make_classifier(str(folder)).class_probabilities(texts), expected, atol=1e-5)
    headless = {k: v for k, v in state.items() if not k.startswith("cls.")}
    save_file(headless, str(folder / "model.safetensors"))
    assert not has_mlm_head(str(folder))
    with pytest.raises(CheckpointError, match="no masked-LM head"):
        load_mlm(str(folder))


SHOTS = keyword_examples(64, seed=5)        # 32 per class
HELD_OUT = keyword_examples(64, seed=7)


@pytest.fixture(scope="module")
def finetuned(mlm_checkpoint):
    clf = make_classifier(mlm_checkpoint)
    before = clf.evaluate(HELD_OUT)["accuracy"]
    history = clf.finetune(SHOTS, epochs=15, learning_rate=5e-3, batch_size=8, seed=13)
    return clf, before, history


def test_few_shot_prompt_finetuning_learns_the_task(finetuned):
    clf, before, history = finetuned
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    after = clf.evaluate(HELD_OUT)["accuracy"]
    assert after >= 0.85 and after > before, (before, after)       # measured 1.0 (random MLM: ~0.5 before)
    assert clf.finetune_epochs == 15 and len(clf.shots) == 64
    with pytest.raises(DataError, match="text pairs"):
        from tfpipeline.data.examples import TextExample

        clf.finetune([TextExample("a", "pos", text_pair="b")], epochs=1)


def test_saved_cloze_classifier_loads_predicts_and_exports(finetuned, tmp_path):
    from tfpipeline.models.cloze import ClozeModel
    from tfpipeline.training.prompting import ClozeClassifier

    clf = finetuned[0]
    texts = [ex.text for ex in HELD_OUT[:12]] + ["x"]
    expected = clf.class_probabilities(texts)
    folder = clf.save(str(tmp_path / "cloze"), source_checkpoint="tiny")
    assert not os.path.exists(folder + ".partial")
    assert sorted(os.listdir(folder)) == ["config.json", "labels.json", "tf_model.h5", "tfpipeline.json",
                                          "tokenizer_config.json", "vocab.txt"]
    assert list(read_metadata(folder)) == ["task", "max_length", "head", "template", "verbalizer", "label_word_ids",
                                           "reduce", "prompt", "shots", "finetune_epochs", "source_checkpoint"]
    bundle = ModelBundle.load(folder)
    assert isinstance(bundle.model, ClozeModel) and bundle.kind == "cloze" and bundle.labels.names == ["neg", "pos"]
    meta = bundle.meta
    assert meta["head"] == "cloze" and meta["template"] == "{text} It was [MASK]." and meta["shots"] == 64
    assert meta["verbalizer"] == VERBALIZER and meta["label_word_ids"] == clf.label_word_ids
    np.testing.assert_allclose(bundle.predictor().class_probabilities(texts), expected, atol=1e-5)
    np.testing.assert_allclose(ClozeClassifier.from_directory(folder).class_probabilities(texts), expected, atol=1e-5)

    export = bundle.export(str(tmp_path / "exports"), "cloze")
    served = tf.saved_model.load(export).signatures["serving_default"](text=tf.constant(texts))
    np.testing.assert_allclose(served["scores"].numpy(), expected, atol=1e-5)
    assert [x.decode() for x in served["label"].numpy()] == [["neg", "pos"][i] for i in expected.argmax(axis=1)]
    with pytest.raises(ConfigError, match="not empty"):
        clf.save(folder)


def test_zeroshot_cli_cloze_method(mlm_checkpoint, tiny_checkpoint, tmp_path, capsys):
    from tfpipeline.cli import main

    shots = write_csv(tmp_path / "shots.csv", keyword_examples(8, seed=3))
    folder = str(tmp_path / "cloze")
    # auto picks cloze for a checkpoint with an MLM head; the similarity default template becomes a cloze one
    assert main(["zeroshot", "--labels", "pos,neg", "--model", mlm_checkpoint, "--verbalizer", "pos=good;neg=bad",
                 "--shots-file", shots, "--finetune-epochs", "1", "--learning-rate", "1e-3", "--max-length", "32",
                 "--output-dir", folder, "a great film", "an awful plot"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("pos", "neg") for line in lines)
    assert "cloze" in out.err
    meta = read_metadata(folder)
    assert meta["head"] == "cloze" and meta["template"] == "{text} It was [MASK]." and meta["finetune_epochs"] == 1
    assert main(["predict", "--model-dir", folder, "a great film"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("pos", "neg")
    # explicit cloze on a checkpoint without an MLM head: a clear error, exit code 2
    assert main(["zeroshot", "--method", "cloze", "--labels", "pos,neg", "--model", tiny_checkpoint,
                 "--verbalizer", "pos=good;neg=bad", "a great film"]) == 2
    assert "no masked-LM head" in capsys.readouterr().err
    assert main(["zeroshot", "--method", "cloze", "--labels", "pos,neg", "--model", mlm_checkpoint,
                 "--template", "it was {}", "--verbalizer", "pos=good;neg=bad", "a great film"]) == 2
    assert "[MASK]" in capsys.readouterr().err
    # similarity still works on an MLM checkpoint when asked for
    assert main(["zeroshot", "--method", "similarity", "--labels", "pos,neg", "--model", mlm_checkpoint,
                 "--template", "it was {}", "--max-length", "32", "a great film"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("pos", "neg")
