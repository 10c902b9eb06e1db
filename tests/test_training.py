"""Training: learning on synthetic tasks, the optimizer recipe, best-epoch restoration, output-folder
atomicity, static shapes and a 2-replica MirroredStrategy run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfpipeline.data.examples import CLASSIFICATION, NER, TaskData, TextExample, TokenExample
from tfpipeline.bundle import ModelBundle
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import batches_per_epoch, make_dataset, sequence_lengths
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import ConfigError, DataError
from tfpipeline.models.losses import MaskedAccuracy, MaskedSparseCategoricalCrossentropy
from tfpipeline.models.optimization import (AnnealableWarmupLinearDecay, WarmupLinearDecay, create_optimizer,
                                            schedule_of)
from tfpipeline.models.task_model import build_task_model
from tfpipeline.training.trainer import REPORT_FILE, train

from conftest import TINY_TRAIN, keyword_examples, ner_examples

IGNORE = -100


# --------------------------------------------------------------------------- learning
def test_classifier_learns_the_keyword_task(trained_classifier):
    h = trained_classifier.history
    assert len(h["loss"]) == TINY_TRAIN["epochs"]
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["val_accuracy"][-1] > h["val_accuracy"][0]
    report = trained_classifier.report
    assert report["split"] == "validation" and report["examples"] == 32
    assert report["accuracy"] >= 0.9
    results = trained_classifier.bundle.predictor().classify(["the plot was great", "the music was awful",
                                                       "great", "awful"])
    assert [r["label"] for r in results] == ["pos", "neg", "pos", "neg"]
    for r in results:
        assert r["score"] == pytest.approx(max(r["scores"].values())) and sum(r["scores"].values()) == pytest.approx(1.0)


def test_classifier_output_folder(trained_classifier):
    out = trained_classifier.output_dir
    files = set(os.listdir(out))
    assert {"config.json", "tf_model.h5", "vocab.txt", "labels.json", "tfpipeline.json", REPORT_FILE,
            "history.csv", "logs"} <= files
    assert "checkpoints" not in files  # the temporary best-weights checkpoint is cleaned up
    assert not os.path.exists(out + ".partial")
    with open(os.path.join(out, REPORT_FILE)) as f:
        assert json.load(f)["accuracy"] == pytest.approx(trained_classifier.report["accuracy"])
    bundle = ModelBundle.load(out)
    assert bundle.labels.names == ["neg", "pos"] and bundle.encoder.max_length == TINY_TRAIN["max_length"]
    assert bundle.meta["config"]["learning_rate"] == TINY_TRAIN["learning_rate"]
    with open(os.path.join(out, "history.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + TINY_TRAIN["epochs"]


def test_ner_learns_names_and_places(trained_ner):
    h = trained_ner.history
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert trained_ner.bundle.labels.names == ["O", "B-LOC", "B-PER", "I-PER"]
    assert trained_ner.report["task"] == "ner" and trained_ner.report["f1"] >= 0.8
    (result,) = trained_ner.bundle.predictor().extract(["yesterday alice smith visited paris ."])
    spans = [(e["type"], e["text"]) for e in result["entities"]]
    assert spans == [("PER", "alice smith"), ("LOC", "paris")]
    for tok in result["tokens"]:
        assert result["text"][tok["start"]:tok["end"]] == tok["text"]


# --------------------------------------------------------------------------- losses, schedule, optimizer
def test_masked_loss_and_accuracy_ignore_minus_100():
    y_true = tf.constant([[1, IGNORE, 0, IGNORE]])
    logits = tf.constant([[[0.0, 5.0], [9.0, -9.0], [0.0, 5.0], [3.0, 1.0]]])
    loss = MaskedSparseCategoricalCrossentropy(reduction="none")(y_true, logits).numpy()
    expected = np.mean([np.log1p(np.exp(-5.0)), np.log1p(np.exp(5.0))])  # positions 0 and 2 only
    assert loss == pytest.approx([expected], rel=1e-5)
    acc = MaskedAccuracy()
    acc.update_state(y_true, logits)
    assert float(acc.result()) == pytest.approx(0.5)


def test_warmup_linear_decay_shape():
    sched = WarmupLinearDecay(peak=1.0, total_steps=100, warmup_steps=10)
    lr = np.array([float(sched(s)) for s in range(0, 121)])
    assert lr[0] == pytest.approx(0.1) and lr[0] > 0
    assert np.all(np.diff(lr[:10]) > 0)  # warmup rises
    assert lr[9] == pytest.approx(1.0) and lr[10] == pytest.approx(1.0) and lr.max() == pytest.approx(1.0)
    assert np.all(np.diff(lr[10:101]) < 0)  # linear decay
    assert lr[55] == pytest.approx(0.5) and lr[100] == pytest.approx(0.0, abs=1e-7)
    assert np.allclose(lr[100:], 0.0, atol=1e-7)  # stays at the end value
    assert np.allclose(np.diff(lr[10:101]), -1 / 90, atol=1e-6)
    no_warmup = WarmupLinearDecay(peak=2.0, total_steps=10)
    assert float(no_warmup(0)) == pytest.approx(2.0) and float(no_warmup(5)) == pytest.approx(1.0)
    # serialisable with the model
    again = WarmupLinearDecay.from_config(sched.get_config())
    assert float(again(37)) == pytest.approx(float(sched(37)))


def test_create_optimizer_schedule_and_validation():
    opt = create_optimizer(3e-4, total_steps=200, warmup_ratio=0.1)
    config = opt.get_config()["learning_rate"]
    assert config["class_name"].endswith("WarmupLinearDecay")
    sched = WarmupLinearDecay.from_config(config["config"])
    assert (sched.peak, sched.total_steps, sched.warmup_steps) == (3e-4, 200, 20)
    with pytest.raises(ConfigError, match="learning_rate"):
        create_optimizer(0.0, 10)
    with pytest.raises(ConfigError, match="warmup_ratio"):
        create_optimizer(1e-3, 10, warmup_ratio=1.0)


def test_weight_decay_skips_layer_norm_and_bias(tiny_checkpoint):
    """Zero gradients: Adam moves nothing, so only decayed weights change (kernels/embeddings shrink)."""
    model = build_task_model(tiny_checkpoint, CLASSIFICATION, LabelMap(["a", "b"]))
    opt = create_optimizer(0.1, total_steps=10, warmup_ratio=0.0, weight_decay=0.5)
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    opt.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    decayed = kept = 0
    for v, old in zip(variables, before):
        new = v.numpy()
        if "LayerNorm" in v.name or v.name.split("/")[-1].startswith("bias"):
            np.testing.assert_array_equal(new, old, err_msg=v.name)
            kept += 1
        else:
            np.testing.assert_allclose(new, old * (1 - 0.1 * 0.5), rtol=1e-5, err_msg=v.name)
            decayed += 1
    assert kept > 5 and decayed > 5
    assert any("LayerNorm/gamma" in v.name for v in variables)


def varied_length_examples(short: int, long: int) -> list:
    """``short`` examples under 16 tokens and ``long`` ones over it: two length buckets at max_length 32."""
    base = keyword_examples(short + long, seed=5)
    return base[:short] + [TextExample(ex.text + " and the story was told " * 3, ex.label, origin=ex.origin)
                           for ex in base[short:]]


def test_batches_per_epoch_counts_what_the_dataset_yields(tiny_checkpoint):
    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=32)
    examples = varied_length_examples(20, 20)
    labels = LabelMap(["neg", "pos"])
    for kwargs, expected in [(dict(), 4), (dict(bucket=False), 3), (dict(static_shapes=True), 2)]:
        ds = make_dataset(examples, encoder, labels, CLASSIFICATION, batch_size=16, training=True, **kwargs)
        assert sum(1 for _ in ds) == expected, kwargs   # 20 + 20 in two buckets: 2 + 2 batches, not ceil(40/16)
        assert int(ds.cardinality()) == expected        # ... and Keras is told so (known epoch length)
        assert batches_per_epoch(examples, encoder, CLASSIFICATION, 16, **kwargs) == expected
    sentences = ner_examples(60, seed=7) + [TokenExample(("word",) * 20, ("O",) * 20, origin="long")] * 5
    tags = LabelMap.from_examples(sentences, NER)
    ds = make_dataset(sentences, encoder, tags, NER, batch_size=16)
    assert sum(1 for _ in ds) == int(ds.cardinality()) == batches_per_epoch(sentences, encoder, NER, 16) == 5


def test_lengths_at_a_longer_cap_count_the_same_batches(tiny_checkpoint):
    """resolve_recipe tokenizes once at the recipe's cap and reuses those lengths at the chosen max length."""
    long_encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=128)
    texts = varied_length_examples(20, 20) + [TextExample("word " * 60, "pos")] * 3
    pairs = [TextExample(ex.text, ex.label, text_pair="more words " * n) for n, ex in enumerate(texts)]
    words = ner_examples(30, seed=7) + [TokenExample(("word",) * 50, ("O",) * 50, origin="long")] * 3
    for examples, task in [(texts, CLASSIFICATION), (pairs, CLASSIFICATION), (words, NER)]:
        at_cap = sequence_lengths(examples, long_encoder, task)
        for max_length in (16, 24, 32):
            encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=max_length)
            assert [min(n, max_length) for n in at_cap] == sequence_lengths(examples, encoder, task)
            assert batches_per_epoch(examples, encoder, task, 8, lengths=at_cap) == \
                batches_per_epoch(examples, encoder, task, 8)
    with pytest.raises(ValueError, match="2 lengths for 43 examples"):
        batches_per_epoch(texts, long_encoder, CLASSIFICATION, 8, lengths=[3, 4])


class OptimizerSteps(tf_keras.callbacks.Callback):
    """Records the optimizer's step counter after each epoch and at the end of training."""

    def __init__(self):
        super().__init__()
        self.per_epoch, self.final = [], None

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(int(self.model.optimizer.iterations))

    def on_train_end(self, logs=None):
        self.final = int(self.model.optimizer.iterations)


def test_learning_rate_schedule_ends_at_the_last_step(tmp_path, tiny_checkpoint):
    """The warmup/decay schedule is planned over exactly the steps taken, so it reaches 0 at the end."""
    data = TaskData("lengths", CLASSIFICATION, train=varied_length_examples(20, 20),
                    validation=keyword_examples(8, seed=6))
    steps = OptimizerSteps()
    result = train(data=data, model=tiny_checkpoint, output_dir=str(tmp_path / "m"), callbacks=[steps],
                   **{**TINY_TRAIN, "epochs": 2, "batch_size": 16})
    schedule = WarmupLinearDecay.from_config(result.bundle.model.optimizer.get_config()["learning_rate"]["config"])
    assert steps.per_epoch == [4, 8] and steps.final == schedule.total_steps == 2 * 4
    assert float(schedule(schedule.total_steps - 1)) > 0 and float(schedule(schedule.total_steps)) == 0


def test_auto_epochs_end_with_an_annealed_epoch(tmp_path, tiny_checkpoint, clf_data):
    """epochs auto: a run that stalls before its cap spends one last epoch annealing from the best weights."""
    steps = OptimizerSteps()
    result = train(data=clf_data, model=tiny_checkpoint, output_dir=str(tmp_path / "auto"),
                   callbacks=[steps, BreakAfter(3)], **{**TINY_TRAIN, "epochs": None, "early_stopping_patience": 2})
    epochs, val = result.report["epochs"], result.history["val_accuracy"]
    per_epoch = steps.per_epoch[0]
    assert epochs["annealed"] == epochs["run"] == len(val) < epochs["cap"]      # stopped early, on an anneal
    assert "annealed the learning rate to 0" in epochs["stopped"]
    assert epochs["kept"] == int(np.argmax(val)) + 1 and result.report["accuracy"] == pytest.approx(max(val))
    schedule = schedule_of(result.bundle.model.optimizer)
    assert isinstance(schedule, AnnealableWarmupLinearDecay) and schedule.anneal_steps == per_epoch
    assert schedule.total_steps == epochs["cap"] * per_epoch                      # the decay is planned over the cap
    start = steps.final - per_epoch
    assert float(schedule.anneal_start) == start                                # the last epoch annealed ...
    assert float(schedule(start)) == pytest.approx(float(WarmupLinearDecay.from_config(
        {k: v for k, v in schedule.get_config().items() if k != "anneal_steps"})(start)))   # ... from the plan ...
    assert float(schedule(steps.final - 1)) <= 1e-2 / per_epoch + 1e-9               # ... to about 0


# --------------------------------------------------------------------------- best epoch, early stopping
class BreakAfter(tf_keras.callbacks.Callback):
    """From epoch ``start`` on, wipe the word embeddings after every batch: validation collapses."""

    def __init__(self, start: int):
        super().__init__()
        self.start, self.epoch = start, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch >= self.start:
            emb = self.model.backbone.bert.embeddings.weight
            emb.assign(tf.zeros_like(emb))


def test_early_stopping_restores_best_epoch(tmp_path, tiny_checkpoint, clf_data):
    out = str(tmp_path / "early")
    cfg = {**TINY_TRAIN, "epochs": 12, "early_stopping_patience": 2}
    result = train(data=clf_data, model=tiny_checkpoint, output_dir=out, callbacks=[BreakAfter(4)], **cfg)
    val = result.history["val_accuracy"]
    best = max(val)
    assert len(val) < 12  # stopped early
    assert len(val) - 1 - int(np.argmax(val)) == 2  # ... exactly `patience` epochs after the best one
    assert val[-1] < best and best >= 0.9
    assert result.report["accuracy"] == pytest.approx(best)  # the returned model is the best epoch's
    reloaded = ModelBundle.load(out).predictor()
    probs = reloaded.class_probabilities([e.text for e in clf_data.validation])
    accuracy = np.mean([reloaded.labels.name(i) == e.label for i, e in zip(probs.argmax(1), clf_data.validation)])
    assert accuracy == pytest.approx(best)  # ... and so is the saved one


# --------------------------------------------------------------------------- output folder atomicity
def test_unknown_validation_label_fails_before_writing(tmp_path, tiny_checkpoint, clf_data):
    bad = TaskData("bad", CLASSIFICATION, train=clf_data.train,
                   validation=clf_data.validation[:3] + [TextExample("meh", "neutral", origin="valid.csv:40")])
    out = str(tmp_path / "never")
    with pytest.raises(DataError, match=r"valid\.csv:40: unknown label 'neutral'"):
        train(data=bad, model=tiny_checkpoint, output_dir=out, **TINY_TRAIN)
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")


def test_unknown_validation_label_in_file(tmp_path, tiny_checkpoint, clf_files):
    valid = tmp_path / "valid.csv"
    valid.write_text("text,label\nfine,pos\nnot fine,neutral\n", encoding="utf-8")
    out = str(tmp_path / "never")
    with pytest.raises(DataError, match=rf"{valid}:3: unknown label 'neutral'"):
        train(dataset=None, task=CLASSIFICATION, train_file=clf_files["train"], validation_file=str(valid),
              model=tiny_checkpoint, output_dir=out, **TINY_TRAIN)
    assert os.listdir(tmp_path) == ["valid.csv"]


class Boom(tf_keras.callbacks.Callback):
    """Fails in the middle of the first epoch."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise RuntimeError("boom")


def test_failure_during_training_leaves_no_partial_and_keeps_old_model(tmp_path, tiny_checkpoint, clf_data):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("previous run", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"):
        train(data=clf_data, model=tiny_checkpoint, output_dir=str(out), overwrite=True, callbacks=[Boom()],
              **{**TINY_TRAIN, "epochs": 1})
    assert not os.path.exists(str(out) + ".partial")
    assert os.listdir(out) == ["old.txt"]  # the previous model survives a failed overwrite

    fresh = str(tmp_path / "fresh")
    with pytest.raises(RuntimeError, match="boom"):
        train(data=clf_data, model=tiny_checkpoint, output_dir=fresh, callbacks=[Boom()], **{**TINY_TRAIN, "epochs": 1})
    assert not os.path.exists(fresh) and not os.path.exists(fresh + ".partial")


def test_existing_output_dir_needs_overwrite(tmp_path, tiny_checkpoint, clf_data):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{out}: output folder exists and is not empty"):
        train(data=clf_data, model=tiny_checkpoint, output_dir=str(out), **TINY_TRAIN)
    assert os.listdir(out) == ["keep.txt"] and not os.path.exists(str(out) + ".partial")


def test_static_shapes_training_with_overwrite(tmp_path, tiny_checkpoint, clf_data):
    out = tmp_path / "static"
    out.mkdir()
    (out / "stale.txt").write_text("old", encoding="utf-8")
    result = train(data=clf_data, model=tiny_checkpoint, output_dir=str(out), overwrite=True,
                   static_shapes=True, **{**TINY_TRAIN, "epochs": 2})
    assert "stale.txt" not in os.listdir(out) and "tf_model.h5" in os.listdir(out)
    assert len(result.history["loss"]) == 2 and all(np.isfinite(result.history["loss"]))
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.report["examples"] == len(clf_data.validation)  # evaluation still sees every example
    assert ModelBundle.load(str(out)).meta["config"]["static_shapes"] is True


def test_config_validation_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(ConfigError, match="task"):
        train(dataset=None, train_file="x.csv", output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="epochs"):
        train(epochs=0, output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="precision"):
        train(precision="float8", output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="unknown option"):
        train(learning_rat=0.1, output_dir=str(tmp_path / "o"))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- MirroredStrategy
MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tfpipeline  # legacy-Keras env first
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[3])
    from conftest import TINY_TRAIN, keyword_examples, ner_examples
    from tfpipeline.data.examples import TaskData
    from tfpipeline.training.trainer import train

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = TaskData("kw", "classification", train=keyword_examples(64, 1), validation=keyword_examples(16, 2))
    cfg = dict(TINY_TRAIN, epochs=1, batch_size=8, verbose=1)
    result = train(data=data, model=sys.argv[1], output_dir=sys.argv[2], strategy=strategy, **cfg)
    print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync,
                                  "loss": result.history["loss"], "examples": result.report["examples"],
                                  "variable_type": type(result.bundle.model.trainable_variables[0]).__name__}))
""")


def test_mirrored_strategy_two_cpu_replicas(tmp_path, tiny_checkpoint):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT, encoding="utf-8")
    out = tmp_path / "mirrored_model"
    proc = subprocess.run([sys.executable, str(script), tiny_checkpoint, str(out), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert result["replicas"] == 2
    assert len(result["loss"]) == 1 and np.isfinite(result["loss"][0])
    assert result["examples"] == 16
    assert "Mirrored" in result["variable_type"]
    assert "global batch 16" in proc.stdout
    assert os.path.isfile(out / "tf_model.h5")


def test_keyword_examples_are_balanced():
    labels = [e.label for e in keyword_examples(40, 0)]
    assert labels.count("pos") == labels.count("neg") == 20


def test_report_header_names_the_evaluated_file_and_skipped_rows(tmp_path, tiny_checkpoint, clf_files, capsys):
    train_file = tmp_path / "train.csv"
    rows = open(clf_files["train"], encoding="utf-8").read().splitlines()
    train_file.write_text("\n".join(rows[:40] + ["a,stray,row"] + rows[40:]) + "\n", encoding="utf-8")
    test_file = tmp_path / "held_out.csv"
    test_file.write_text("text,label\nthe film was great,pos\nawful,neg\n", encoding="utf-8")
    options = dict(dataset=None, task=CLASSIFICATION, train_file=str(train_file), test_file=str(test_file),
                   model=tiny_checkpoint, **{**TINY_TRAIN, "epochs": 1, "verbose": 1})
    with pytest.raises(DataError, match=rf"{train_file}:41: expected 2 fields"):
        train(output_dir=str(tmp_path / "strict"), **options)
    result = train(output_dir=str(tmp_path / "m"), on_bad_rows="skip", **options)
    out = capsys.readouterr().out
    assert f"1 bad row(s) skipped: {train_file}:41: expected 2 fields" in out
    assert f"evaluation on test ({test_file}):" in out
    assert result.report["skipped_rows"] == 1 and result.report["skipped_row_examples"][0].startswith(f"{train_file}:41")
