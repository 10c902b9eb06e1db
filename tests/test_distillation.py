"""Distillation: the student copies the teacher's bottom layers, the KD loss is right and decreases,
and the distilled student is an ordinary model folder."""
import numpy as np
import pytest
import tensorflow as tf

from tfpipeline.models.distillation import (_strip_model_scope, distill, distillation_loss, encoder_depth,
                                            make_student, student_layers)
from tfpipeline.models.task_model import count_params, load_task_model


def test_student_copies_the_teachers_bottom_layers(trained_classifier):
    teacher = trained_classifier.model
    student = make_student(teacher, num_layers=1)  # default: the bottom layers
    assert encoder_depth(teacher) == 2 and encoder_depth(student) == 1
    assert len(student.backbone.bert.encoder.layer) == 1
    assert count_params(student)["total"] < count_params(teacher)["total"]
    teacher_weights = {_strip_model_scope(w.name): w.numpy() for w in teacher.weights}
    copied = {_strip_model_scope(w.name): w.numpy() for w in student.weights}
    assert any("layer_._0" in n for n in copied) and not any("layer_._1" in n for n in copied)
    assert any("classifier" in n for n in copied) and any("embeddings" in n for n in copied)
    for name, value in copied.items():
        np.testing.assert_array_equal(value, teacher_weights[name], err_msg=name)
    with pytest.raises(ValueError, match="num_layers"):
        make_student(teacher, num_layers=2)


def test_alternate_student_layers(trained_classifier):
    assert student_layers(6, 3, "bottom") == [0, 1, 2]
    assert student_layers(6, 3, "alternate") == [1, 3, 5]
    assert student_layers(12, 4, "alternate") == [2, 5, 8, 11]
    teacher = trained_classifier.model
    student = make_student(teacher, num_layers=1, layers="alternate")  # 2 -> 1: the top layer
    top = {_strip_model_scope(w.name).replace("layer_._1/", "layer_._0/"): w.numpy() for w in teacher.weights
           if "layer_._1/" in w.name}
    copied = {_strip_model_scope(w.name): w.numpy() for w in student.weights if "layer_._0/" in w.name}
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
    from tfpipeline.inference import Predictor

    out = str(tmp_path / "student")
    result = distill(trained_classifier.output_dir, clf_data, out, num_layers=1, epochs=3, learning_rate=5e-3,
                     batch_size=16, verbose=0)
    losses = result.history["loss"]
    assert losses[-1] < losses[0], losses
    assert result.report["distillation"]["student_layers"] == 1 and "accuracy" in result.report["teacher"]
    assert result.report["accuracy"] >= 0.75
    model, _, labels, meta = load_task_model(out)
    assert encoder_depth(model) == 1 and labels == trained_classifier.labels and meta["distillation"]
    texts = [ex.text for ex in clf_data.validation[:8]]
    in_memory = Predictor(result.model, result.encoder, result.labels, "classification")
    np.testing.assert_allclose(Predictor.from_directory(out).class_probabilities(texts),
                               in_memory.class_probabilities(texts), atol=1e-5)


def test_distill_cli(tmp_path, trained_classifier, clf_files):
    from tfpipeline.cli import main

    out = str(tmp_path / "cli_student")
    rc = main(["distill", "--teacher-dir", trained_classifier.output_dir, "--output-dir", out,
               "--train-file", clf_files["train"], "--validation-file", clf_files["validation"],
               "--limit-train", "32", "--limit-eval", "16", "--student-layers", "1", "--student-init", "bottom",
               "--epochs", "1", "--learning-rate", "5e-3", "--batch-size", "16", "--quiet"])
    assert rc == 0
    model, _, _, meta = load_task_model(out)
    assert encoder_depth(model) == 1 and meta["distillation"]["student_layers"] == 1
    assert main(["distill", "--teacher-dir", str(tmp_path / "missing"), "--output-dir", out]) == 2
