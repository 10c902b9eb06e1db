"""LoRA and adapters: only PEFT parameters train, merging keeps predictions, weights round-trip."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import PeftOptions
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.errors import ConfigError
from tfpipeline.inference import Predictor
from tfpipeline.models.peft import applied_method, apply_peft, load_peft_weights, merge_lora, save_peft_weights
from tfpipeline.models.task_model import build_task_model, count_params
from tfpipeline.training.trainer import train

FEATURES = {"input_ids": tf.constant([[101, 2307, 3185, 102], [101, 9643, 3185, 102]]),
            "attention_mask": tf.ones([2, 4], tf.int32), "token_type_ids": tf.zeros([2, 4], tf.int32)}
TARGETS = tf.constant([0, 1])


def _train_steps(model, steps=5):
    optimizer = tf_keras.optimizers.Adam(1e-2)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            logits = model(FEATURES, training=True)
            loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(TARGETS, logits, from_logits=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
    return float(loss)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_only_peft_and_head_parameters_change(tiny_checkpoint, method):
    model = build_task_model(tiny_checkpoint, "classification", LabelMap(["neg", "pos"]))
    full = count_params(model)["trainable"]
    before_logits = model(FEATURES).numpy()
    counts = apply_peft(model, PeftOptions(peft=method, lora_rank=4, adapter_size=8))
    assert counts["trainable"] < 0.05 * full
    assert applied_method(model) == method
    with pytest.raises(ConfigError, match="already applied"):
        apply_peft(model, PeftOptions(peft=method))
    np.testing.assert_allclose(model(FEATURES).numpy(), before_logits, atol=1e-6)  # zero-init update

    trainable_ids = {id(w) for w in model.trainable_weights}
    before = [(w, w.numpy().copy()) for w in model.weights]
    _train_steps(model)
    for w, old in before:
        changed = not np.allclose(old, w.numpy())
        if id(w) not in trainable_ids:
            assert not changed, f"frozen weight {w.name} changed"
    changed_trainable = [w for w, old in before if id(w) in trainable_ids and not np.allclose(old, w.numpy())]
    assert changed_trainable, "PEFT parameters did not train"
    frozen_names = [w.name for w in model.non_trainable_weights]
    assert any("embeddings" in n for n in frozen_names) and any("query" in n for n in frozen_names)


def test_merged_lora_gives_the_same_predictions(tiny_checkpoint):
    model = build_task_model(tiny_checkpoint, "classification", LabelMap(["neg", "pos"]))
    apply_peft(model, PeftOptions(peft="lora", lora_rank=4))
    _train_steps(model)
    unmerged = model(FEATURES).numpy()
    merge_lora(model)
    np.testing.assert_allclose(model(FEATURES).numpy(), unmerged, atol=1e-5)
    assert not any("lora" in w.name for w in model.weights)
    assert applied_method(model) is None


def test_peft_weights_round_trip(tmp_path, tiny_checkpoint):
    model = build_task_model(tiny_checkpoint, "classification", LabelMap(["neg", "pos"]))
    apply_peft(model, PeftOptions(peft="adapter", adapter_size=8))
    _train_steps(model)
    path = save_peft_weights(model, str(tmp_path))
    fresh = build_task_model(tiny_checkpoint, "classification", LabelMap(["neg", "pos"]))
    apply_peft(fresh, PeftOptions(peft="adapter", adapter_size=8))
    assert not np.allclose(fresh(FEATURES).numpy(), model(FEATURES).numpy())
    load_peft_weights(fresh, path)
    np.testing.assert_allclose(fresh(FEATURES).numpy(), model(FEATURES).numpy(), atol=1e-6)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_train_with_peft_saves_a_reloadable_model(tmp_path, tiny_checkpoint, clf_data, method):
    result = train(data=clf_data, model=tiny_checkpoint, output_dir=str(tmp_path / method), peft=method,
                   epochs=2, batch_size=16, learning_rate=1e-2, max_length=32, verbose=0)
    assert result.params["trainable"] < result.params["total"] / 10
    texts = [ex.text for ex in clf_data.validation[:8]]
    reloaded = ModelBundle.load(str(tmp_path / method))
    assert reloaded.peft == PeftOptions(peft=method)
    assert applied_method(reloaded.model) == (None if method == "lora" else method)   # LoRA is merged
    assert reloaded.meta["peft"].get("merged", False) is (method == "lora")
    np.testing.assert_allclose(reloaded.predictor().class_probabilities(texts),
                               result.bundle.predictor().class_probabilities(texts), atol=1e-5)


def test_merged_lora_export_serves_the_unmerged_predictions(tiny_checkpoint, tmp_path):
    """The SavedModel of a merged LoRA model (what `train --peft lora` exports) scores like the LoRA model did."""
    labels = LabelMap(["neg", "pos"])
    model = build_task_model(tiny_checkpoint, "classification", labels)
    apply_peft(model, PeftOptions(peft="lora", lora_rank=4))
    _train_steps(model)
    encoder = TextEncoder.from_directory(tiny_checkpoint, max_length=32)
    texts = ["a great film", "an awful plot", "the story was really quite awful and very long", ""]
    unmerged = Predictor(model, encoder, labels, "classification").class_probabilities(texts)
    assert not np.allclose(unmerged[0], unmerged[1]), "training should have made the inputs distinguishable"

    merge_lora(model)
    path = ModelBundle(model, encoder, labels, "classification").export(str(tmp_path / "exports"), "lora")
    served = tf.saved_model.load(path)
    assert not any("lora" in v.name for v in served.model_variables)
    scores = served.signatures["serving_default"](text=tf.constant(texts))["scores"].numpy()
    np.testing.assert_allclose(scores, unmerged, atol=1e-5)
