"""Distillation: the student copies the teacher's bottom layers, the KD loss is right and decreases,
the schedule ends on the last step, and the distilled student is an ordinary model folder."""
import math
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import FILLER, keyword_examples
from tfpipeline.bundle import ModelBundle
from tfpipeline.config import DistillConfig
from tfpipeline.data.examples import TaskData, TextExample
from tfpipeline.data.pipeline import batches_per_epoch
from tfpipeline.errors import ConfigError
from tfpipeline.models.task_model import count_params
from tfpipeline.models.weights import weight_key
from tfpipeline.training.distill import distill, distillation_loss, encoder_depth, make_student, student_layers


def test_student_copies_the_teachers_bottom_layers(trained_classifier):
    teacher = trained_classifier.bundle.model
    student, chosen = make_student(teacher, num_layers=1)  # default: the bottom layers
    assert chosen == [0]
    assert encoder_depth(teacher) == 2 and encoder_depth(student) == 1
    assert len(student.backbone.bert.encoder.layer) == 1
    assert count_params(student)["total"] < count_params(teacher)["total"]
    teacher_weights = {weight_key(w): w.numpy() for w in teacher.weights}
    copied = {weight_key(w): w.numpy() for w in student.weights}
    assert any("layer_._0" in n for n in copied) and not any("layer_._1" in n for n in copied)
    assert any("classifier" in n for n in copied) and any("embeddings" in n for n in copied)
    for name, value in copied.items():
        np.testing.assert_array_equal(value, teacher_weights[name], err_msg=name)
    with pytest.raises(ConfigError, match="num_layers"):
        make_student(teacher, num_layers=2)


def test_alternate_student_layers(trained_classifier):
    assert student_layers(6, 3, "bottom") == [0, 1, 2]
    assert student_layers(6, 3, "alternate") == [1, 3, 5]
    assert student_layers(12, 4, "alternate") == [2, 5, 8, 11]
    teacher = trained_classifier.bundle.model
    student, chosen = make_student(teacher, num_layers=1, layers="alternate")  # 2 -> 1: the top layer
    assert chosen == [1]
    top = {weight_key(w).replace("layer_._1/", "layer_._0/"): w.numpy() for w in teacher.weights
           if "layer_._1/" in w.name}
    copied = {weight_key(w): w.numpy() for w in student.weights if "layer_._0/" in w.name}
    assert copied and set(copied) == set(top)
    for name, value in copied.items():
        np.testing.assert_array_equal(value, top[name], err_msg=name)


def test_distillation_loss_matches_the_formula():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(4, 3)).astype(np.float32)
    student = rng.normal(size=(4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1])
    t, alpha = 2.0, 0.3
    total, hard, soft = distillation_loss(labels, student, teacher, temperature=t, alpha=alpha)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    expected_hard = -log_softmax(student)[np.arange(4), labels].mean()
    pt, lt, ls = np.exp(log_softmax(teacher / t)), log_softmax(teacher / t), log_softmax(student / t)
    expected_soft = (pt * (lt - ls)).sum(-1).mean() * t * t
    np.testing.assert_allclose(float(hard), expected_hard, rtol=1e-5)
    np.testing.assert_allclose(float(soft), expected_soft, rtol=1e-5)
    np.testing.assert_allclose(float(total), alpha * expected_hard + (1 - alpha) * expected_soft, rtol=1e-5)
    _, _, same = distillation_loss(labels, teacher, teacher, temperature=t, alpha=alpha)
    assert abs(float(same)) < 1e-6

    # NER: positions labelled -100 do not count
    token_labels = tf.constant([[1, -100], [0, -100]])
    a = distillation_loss(token_labels, student[None, :2].repeat(2, 0), teacher[None, :2].repeat(2, 0),
                          temperature=t, alpha=alpha)[0]
    changed = student[None, :2].repeat(2, 0).copy()
    changed[:, 1] += 5.0
    b = distillation_loss(token_labels, changed, teacher[None, :2].repeat(2, 0), temperature=t, alpha=alpha)[0]
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_distill_trains_and_saves_a_normal_model_folder(tmp_path, trained_classifier, clf_data):
    out = str(tmp_path / "student")
    config = DistillConfig(teacher_dir=trained_classifier.output_dir, output_dir=out, student_layers=1,
                           student_init="alternate", epochs=3, learning_rate=5e-3, batch_size=16, quiet=True)
    result = distill(config, data=clf_data)
    losses = result.history["loss"]
    assert losses[-1] < losses[0], losses
    assert result.report["distillation"]["student_layers"] == 1 and "accuracy" in result.report["teacher"]
    assert result.report["accuracy"] >= 0.75
    loaded = ModelBundle.load(out)
    assert encoder_depth(loaded.model) == 1 and loaded.labels == trained_classifier.bundle.labels
    assert loaded.meta["distillation"]["initialised_from_teacher_layers"] == [1]
    assert list(loaded.meta) == ["source_checkpoint", "dataset", "distillation"]   # the folder format
    texts = [ex.text for ex in clf_data.validation[:8]]
    np.testing.assert_allclose(loaded.predictor().class_probabilities(texts),
                               result.bundle.predictor().class_probabilities(texts), atol=1e-5)


def mixed_length_examples(n: int, seed: int) -> list:
    """Keyword sentences, every other one long (16+ pieces): two length buckets of the 32-piece encoder."""
    rng = random.Random(seed)
    out = []
    for i, ex in enumerate(keyword_examples(n, seed=seed)):
        text = ex.text if i % 2 else ex.text + " " + " ".join(rng.choice(FILLER) for _ in range(14))
        out.append(TextExample(text, ex.label, origin=ex.origin))
    return out


def test_the_learning_rate_schedule_ends_on_the_last_step(tmp_path, trained_classifier, clf_data):
    """Bucketing makes one partial batch per length bucket: the schedule must count them, not ceil(n / batch)."""
    bundle = trained_classifier.bundle
    data = TaskData("mixed", "classification", train=mixed_length_examples(40, seed=3),
                    validation=clf_data.validation[:16])
    batch, epochs = 16, 2
    per_epoch = batches_per_epoch(data.train, bundle.encoder, "classification", batch)
    assert per_epoch != math.ceil(len(data.train) / batch)      # the case the old step count got wrong
    config = DistillConfig(teacher_dir=trained_classifier.output_dir, output_dir=str(tmp_path / "student"),
                           student_layers=1, epochs=epochs, batch_size=batch, quiet=True)
    optimizer = distill(config, data=data).bundle.model.optimizer
    scheduled = optimizer.get_config()["learning_rate"]["config"]["total_steps"]
    assert int(optimizer.iterations) == scheduled == epochs * per_epoch


def test_distill_cli(tmp_path, trained_classifier, clf_files):
    from tfpipeline.cli import main

    out = str(tmp_path / "cli_student")
    rc = main(["distill", "--teacher-dir", trained_classifier.output_dir, "--output-dir", out,
               "--train-file", clf_files["train"], "--validation-file", clf_files["validation"],
               "--limit-train", "32", "--limit-eval", "16", "--student-layers", "1", "--student-init", "bottom",
               "--epochs", "1", "--learning-rate", "5e-3", "--batch-size", "16", "--quiet"])
    assert rc == 0
    loaded = ModelBundle.load(out)
    assert encoder_depth(loaded.model) == 1 and loaded.meta["distillation"]["student_layers"] == 1
    assert main(["distill", "--teacher-dir", str(tmp_path / "missing"), "--output-dir", out]) == 2
