"""Compression: TFLite export (dynamic-range and full-integer int8) agrees with the float model,
and tfmot magnitude pruning reaches its target sparsity and leaves a plain, smaller-zipping model."""
import json
import os

import numpy as np
import pytest

from conftest import keyword_examples, write_csv
from tfpipeline.bundle import ModelBundle, read_metadata
from tfpipeline.config import CompressConfig
from tfpipeline.errors import DataError
from tfpipeline.evaluation.tflite import evaluate_tflite
from tfpipeline.export.tflite import TFLiteClassifier, export_tflite, zipped_size
from tfpipeline.models.task_model import count_params
from tfpipeline.training.compress import compress, kernel_sparsity, prune_model


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
    float_bytes = 4 * count_params(trained_classifier.bundle.model)["total"]
    assert result["size_bytes"] < 0.4 * float_bytes  # int8 weights: ~4x smaller
    assert summary["tflite"] == os.path.join(out, "model.tflite")
    with open(os.path.join(out, "tflite.json")) as f:
        assert json.load(f)["quantize"] == "dynamic"
    assert os.path.isfile(os.path.join(out, "compression_report.json"))
    classifier = TFLiteClassifier.from_directory(out)
    assert classifier.max_length == 32 and classifier.labels == trained_classifier.bundle.labels
    # int8 without any data to calibrate on is a clear error, not a crash
    assert main(["compress", "--model-dir", trained_classifier.output_dir, "--output", out,
                 "--quantize", "int8"]) == 2


def test_full_integer_export_runs(tmp_path, trained_classifier, clf_data, eval_examples):
    out = str(tmp_path / "int8" / "classifier.tflite")
    bundle = trained_classifier.bundle
    export_tflite(bundle.model, bundle.encoder, bundle.labels, out, quantize="int8", max_length=32,
                  representative_texts=[ex.text for ex in clf_data.train], calibration_examples=64)
    with open(os.path.join(os.path.dirname(out), "tflite.json")) as f:
        meta = json.load(f)
    assert meta["quantize"] == "int8" and meta["calibration_examples"] == 64 and "integer_only" in meta
    classifier = TFLiteClassifier.from_directory(out)
    probs = classifier.class_probabilities([ex.text for ex in eval_examples[:8]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    result = evaluate_tflite(classifier, eval_examples, reference=bundle.predictor())
    assert result["agreement"] >= 0.8, result  # softened attention mask keeps int8 usable (see serving_function)


def test_int8_needs_calibration_texts(tmp_path, trained_classifier):
    bundle = trained_classifier.bundle
    with pytest.raises(DataError, match="representative"):
        export_tflite(bundle.model, bundle.encoder, bundle.labels, str(tmp_path / "x"), quantize="int8",
                      max_length=32)


def test_pruning_reaches_the_target_sparsity(tmp_path, trained_classifier, clf_data, eval_examples):
    pytest.importorskip("tensorflow_model_optimization")
    from tfpipeline.evaluation.evaluate import evaluate_examples

    bundle = ModelBundle.load(trained_classifier.output_dir)
    assert kernel_sparsity(bundle.model)["sparsity"] < 0.01
    report = prune_model(bundle, clf_data.train[:64], clf_data.validation, target_sparsity=0.6, epochs=2,
                         learning_rate=1e-3, batch_size=16)
    assert report["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert report["min_layer_sparsity"] >= 0.59 and report["pruned_layers"] == 12
    assert not any("prune" in w.name or "mask" in w.name for w in bundle.model.weights)  # wrappers stripped
    assert evaluate_examples(bundle.predictor(), eval_examples)["accuracy"] >= 0.8
    out = bundle.save(str(tmp_path / "pruned"))
    reloaded = ModelBundle.load(out)
    assert kernel_sparsity(reloaded.model)["sparsity"] == pytest.approx(report["sparsity"], abs=1e-6)
    assert zipped_size(os.path.join(out, "tf_model.h5")) < zipped_size(
        os.path.join(trained_classifier.output_dir, "tf_model.h5"))



@pytest.mark.integration  # pruning fine-tune + a TFLite conversion: ~25 s on 2 cores
def test_compress_prunes_saves_and_exports(tmp_path, trained_classifier, clf_data):
    """``compress``: the pruned model is a model folder beside the .tflite (original metadata + pruning)."""
    pytest.importorskip("tensorflow_model_optimization")
    out = tmp_path / "lite" / "pruned.tflite"
    config = CompressConfig(model_dir=trained_classifier.output_dir, output=str(out), quantize="float32",
                            prune_sparsity=0.5, learning_rate=1e-3, batch_size=16, limit_train=32, evaluate=False)
    summary = compress(config, data=clf_data)
    assert summary["tflite"] == str(out) and os.path.isfile(out)
    assert summary["pruning"]["sparsity"] == pytest.approx(0.5, abs=0.01) and "evaluation" not in summary
    pruned = str(tmp_path / "lite" / "pruned_model")
    meta, original = read_metadata(pruned), read_metadata(trained_classifier.output_dir)
    assert list(meta) == list(original) + ["pruning"] and meta["config"] == original["config"]
    assert "history" not in meta["pruning"] and meta["pruning"]["pruned_layers"] == 12
    with open(tmp_path / "lite" / "tflite.json") as f:
        assert json.load(f)["source_model"] == pruned
    with open(tmp_path / "lite" / "compression_report.json") as f:
        assert json.load(f)["pruning"]["zipped_bytes"] == summary["pruning"]["zipped_bytes"]


@pytest.mark.integration  # the TFLite (MLIR) conversion alone takes 15-25 s on 2 cores
def test_float32_tflite_matches_the_served_saved_model(tmp_path, trained_classifier):
    """Same model, two deployment paths: the on-device float32 TFLite and the SavedModel's raw-text signature."""
    import tensorflow as tf

    texts = ["a great film", "an awful plot", "the story was really quite awful " * 10, "", "naïve café déjà vu"]
    bundle = ModelBundle.load(trained_classifier.output_dir)
    saved = tf.saved_model.load(bundle.export(str(tmp_path / "exports"), "clf"))
    served = saved.signatures["serving_default"](text=tf.constant(texts))["scores"].numpy()
    path = export_tflite(bundle.model, bundle.encoder, bundle.labels, str(tmp_path / "float32"), quantize="float32")
    lite = TFLiteClassifier.from_directory(path).class_probabilities(texts)
    np.testing.assert_allclose(lite, served, atol=1e-4)
