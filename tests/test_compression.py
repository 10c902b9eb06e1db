"""Compression: TFLite export (dynamic-range and full-integer int8) agrees with the float model,
and tfmot magnitude pruning reaches its target sparsity and leaves a plain, smaller-zipping model."""
import json
import os

import numpy as np
import pytest

from conftest import keyword_examples, write_csv
from tfpipeline.models.compression import (TFLiteClassifier, evaluate_tflite, export_tflite, kernel_sparsity,
                                           zipped_size)
from tfpipeline.models.task_model import count_params, load_task_model, save_task_model


@pytest.fixture(scope="module")
def eval_examples():
    return keyword_examples(64, seed=5, origin="test.csv")


def test_dynamic_range_tflite_agrees_with_the_float_model(tmp_path, trained_classifier, clf_files, capsys):
    """Through ``tfpipeline compress``: export, reload from the folder, score against the Keras model."""
    from tfpipeline.cli import main

    out = str(tmp_path / "dynamic")
    test_file = write_csv(tmp_path / "test.csv", keyword_examples(64, seed=5))
    rc = main(["compress", "--model-dir", trained_classifier.output_dir, "--output", out, "--quantize", "dynamic",
               "--max-length", "32", "--train-file", clf_files["train"], "--validation-file",
               clf_files["validation"], "--test-file", test_file])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    result = summary["evaluation"]
    assert result["examples"] == 64 and result["agreement"] >= 0.9, result
    assert result["accuracy"] >= 0.8 and result["latency_ms_mean"] > 0
    float_bytes = 4 * count_params(trained_classifier.model)["total"]
    assert result["size_bytes"] < 0.4 * float_bytes  # int8 weights: ~4x smaller
    assert summary["tflite"] == os.path.join(out, "model.tflite")
    with open(os.path.join(out, "tflite.json")) as f:
        assert json.load(f)["quantize"] == "dynamic"
    assert os.path.isfile(os.path.join(out, "compression_report.json"))
    classifier = TFLiteClassifier.from_directory(out)
    assert classifier.max_length == 32 and classifier.labels == trained_classifier.labels
    # int8 without any data to calibrate on is a clear error, not a crash
    assert main(["compress", "--model-dir", trained_classifier.output_dir, "--output", out,
                 "--quantize", "int8"]) == 2


def test_full_integer_export_runs(tmp_path, trained_classifier, clf_data, eval_examples):
    out = str(tmp_path / "int8" / "classifier.tflite")
    export_tflite(trained_classifier.model, trained_classifier.encoder, trained_classifier.labels, out,
                  quantize="int8", max_length=32, representative_texts=[ex.text for ex in clf_data.train],
                  calibration_examples=64)
    with open(os.path.join(os.path.dirname(out), "tflite.json")) as f:
        meta = json.load(f)
    assert meta["quantize"] == "int8" and meta["calibration_examples"] == 64 and "integer_only" in meta
    classifier = TFLiteClassifier.from_directory(out)
    probs = classifier.class_probabilities([ex.text for ex in eval_examples[:8]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    result = evaluate_tflite(classifier, eval_examples, reference=trained_classifier.predictor())
    assert result["agreement"] >= 0.8, result  # softened attention mask keeps int8 usable (see serving_function)


def test_int8_needs_calibration_texts(tmp_path, trained_classifier):
    with pytest.raises(ValueError, match="representative"):
        export_tflite(trained_classifier.model, trained_classifier.encoder, trained_classifier.labels,
                      str(tmp_path / "x"), quantize="int8", max_length=32)


def test_pruning_reaches_the_target_sparsity(tmp_path, trained_classifier, clf_data, eval_examples):
    pytest.importorskip("tensorflow_model_optimization")
    from tfpipeline.evaluation.evaluate import evaluate_examples
    from tfpipeline.inference import Predictor
    from tfpipeline.models.compression import prune_model

    model, encoder, labels, _ = load_task_model(trained_classifier.output_dir)
    assert kernel_sparsity(model)["sparsity"] < 0.01
    report = prune_model(model, encoder, labels, clf_data.train[:64], clf_data.validation, target_sparsity=0.6,
                         epochs=2, learning_rate=1e-3, batch_size=16)
    assert report["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert report["min_layer_sparsity"] >= 0.59 and report["pruned_layers"] == 12
    assert not any("prune" in w.name or "mask" in w.name for w in model.weights)  # wrappers stripped
    accuracy = evaluate_examples(Predictor(model, encoder, labels, "classification"), eval_examples)["accuracy"]
    assert accuracy >= 0.8
    out = save_task_model(model, encoder, labels, str(tmp_path / "pruned"))
    reloaded, *_ = load_task_model(out)
    assert kernel_sparsity(reloaded)["sparsity"] == pytest.approx(report["sparsity"], abs=1e-6)
    assert zipped_size(os.path.join(out, "tf_model.h5")) < zipped_size(
        os.path.join(trained_classifier.output_dir, "tf_model.h5"))



@pytest.mark.integration  # the TFLite (MLIR) conversion alone takes 15-25 s on 2 cores
def test_float32_tflite_matches_the_served_saved_model(tmp_path, trained_classifier):
    """Same model, two deployment paths: the on-device float32 TFLite and the SavedModel's raw-text signature."""
    import tensorflow as tf

    from tfpipeline.export import export_model

    texts = ["a great film", "an awful plot", "the story was really quite awful " * 10, "", "naïve café déjà vu"]
    saved = tf.saved_model.load(export_model(trained_classifier.output_dir, str(tmp_path / "exports"), "clf"))
    served = saved.signatures["serving_default"](text=tf.constant(texts))["scores"].numpy()
    path = export_tflite(trained_classifier.model, trained_classifier.encoder, trained_classifier.labels,
                         str(tmp_path / "float32"), quantize="float32")
    lite = TFLiteClassifier.from_directory(path).class_probabilities(texts)
    np.testing.assert_allclose(lite, served, atol=1e-4)
