"""image_classification end to end on a tiny random ViT: encoder, tf.data, train, model folder, export, serving.

The data is learnable by colour (red / green / blue pictures of random sizes,
PNG and JPEG, some grey or with alpha), so a two-layer ViT reaches high
accuracy in a few seconds; the checks are about plumbing and parity: the
same ``ImageEncoder`` in training, prediction and every serving signature.
"""
from __future__ import annotations

import base64
import io
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from serving import Limits, ModelServer, RestClient
from tfpipeline.bundle import ModelBundle
from tfpipeline.cli import main
from tfpipeline.data.examples import IMAGE_CLASSIFICATION, ImageExample
from tfpipeline.data.image_pipeline import make_image_dataset
from tfpipeline.data.images import PIXELS, ImageEncoder
from tfpipeline.data.labels import LabelMap
from tfpipeline.export import read_export_metadata, signature_table
from tfpipeline.export.warmup import WARMUP_FILE, read_warmup_requests
from tfpipeline.models.image_model import save_random_vit_checkpoint
from tfpipeline.training.trainer import train

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
IMAGE_SIZE = 32


def picture(label: str, rng: random.Random, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A noisy picture dominated by the label's colour, of random size, encoded as ``fmt``."""
    width, height = rng.randint(20, 48), rng.randint(20, 48)
    base = np.array(COLOURS[label], np.float32)
    noise = np.random.default_rng(rng.randint(0, 10**6)).normal(0, 25, (height, width, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def write_folder(root, n_per_class: int, seed: int) -> str:
    rng = random.Random(seed)
    for label in COLOURS:
        os.makedirs(root / label, exist_ok=True)
        for i in range(n_per_class):
            fmt, suffix = (("JPEG", "jpg") if i % 3 == 0 else ("PNG", "png"))
            mode = "RGBA" if (fmt == "PNG" and i % 5 == 1) else "RGB"
            (root / label / f"{i:03d}.{suffix}").write_bytes(picture(label, rng, fmt, mode))
    return str(root)


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory) -> str:
    return save_random_vit_checkpoint(str(tmp_path_factory.mktemp("vit")), image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, vit_checkpoint):
    root = tmp_path_factory.mktemp("images")
    train_dir = write_folder(root / "train", 24, seed=1)
    test_dir = write_folder(root / "test", 6, seed=2)
    out = str(root / "run")
    result = train(task=IMAGE_CLASSIFICATION, train_file=train_dir, test_file=test_dir, model=vit_checkpoint,
                   output_dir=out, epochs=4, batch_size=16, learning_rate=2e-3, verbose=0,
                   early_stopping_patience=0, dataset=None)
    return dict(result=result, out=out, train_dir=train_dir, test_dir=test_dir, root=root)


# --------------------------------------------------------------------------- encoder and pipeline
def test_encoder_decodes_any_format_to_normalised_rgb():
    rng = random.Random(0)
    encoder = ImageEncoder(IMAGE_SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    for fmt, mode in (("PNG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("BMP", "RGB"),
                      ("GIF", "P")):
        pixels = encoder.encode(tf.constant(picture("red", rng, fmt, mode))).numpy()
        assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3), (fmt, mode)
        assert pixels.min() >= -2.0 - 1e-5 and pixels.max() <= 2.0 + 1e-5   # (0..1 - 0.5) / 0.25
    white = Image.new("RGB", (10, 7), (255, 255, 255))
    out = io.BytesIO()
    white.save(out, format="PNG")
    np.testing.assert_allclose(encoder.encode(tf.constant(out.getvalue())).numpy(), 2.0, atol=1e-4)


def test_encoder_config_round_trip(tmp_path):
    encoder = ImageEncoder(48, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    encoder.save(str(tmp_path))
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["size"] == {"height": 48, "width": 48} and config["image_mean"] == [0.1, 0.2, 0.3]
    back = ImageEncoder.from_directory(str(tmp_path))
    assert (back.image_size, back.mean, back.std) == (48, encoder.mean, encoder.std)


def test_pipeline_batches_bytes_and_files_alike(tmp_path):
    folder = write_folder(tmp_path, 5, seed=3)
    files = [ImageExample(os.path.join(folder, label, name), label)
             for label in sorted(COLOURS) for name in sorted(os.listdir(os.path.join(folder, label)))]
    in_memory = [ImageExample(open(ex.image, "rb").read(), ex.label) for ex in files]
    labels = LabelMap(sorted(COLOURS))
    encoder = ImageEncoder(IMAGE_SIZE)
    batches = [list(make_image_dataset(examples, encoder, labels, batch_size=4)) for examples in (files, in_memory)]
    assert len(batches[0]) == len(batches[1]) == 4                        # 15 examples -> 4 batches
    for (fa, ya), (fb, yb) in zip(*batches):
        assert fa[PIXELS].shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3)
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        np.testing.assert_allclose(fa[PIXELS].numpy(), fb[PIXELS].numpy())
    augmented = make_image_dataset(files, encoder, labels, batch_size=4, training=True, static_shapes=True)
    shapes = [tuple(f[PIXELS].shape) for f, _ in augmented]
    assert shapes == [(4, IMAGE_SIZE, IMAGE_SIZE, 3)] * 3                   # static: the partial batch is dropped


# --------------------------------------------------------------------------- training and the model folder
def test_training_learns_and_writes_an_image_model_folder(image_run):
    result = image_run["result"]
    assert result.report["accuracy"] >= 0.9, result.report
    meta = json.loads(open(os.path.join(image_run["out"], "tfpipeline.json")).read())
    assert meta["task"] == IMAGE_CLASSIFICATION and meta["image_size"] == IMAGE_SIZE
    assert meta["recipe"]["image_size"]["source"] == "the checkpoint's own"
    assert {"config.json", "labels.json", "preprocessor_config.json", "tf_model.h5", "tfpipeline.json",
            "report.html"} <= set(os.listdir(image_run["out"]))


def test_model_folder_reloads_with_identical_predictions(image_run):
    test_dir = image_run["test_dir"]
    paths = [os.path.join(test_dir, "blue", name) for name in sorted(os.listdir(os.path.join(test_dir, "blue")))]
    before = image_run["result"].bundle.predictor().class_probabilities(paths)
    bundle = ModelBundle.load(image_run["out"])
    assert bundle.kind == "image" and bundle.encoder.image_size == IMAGE_SIZE
    np.testing.assert_allclose(bundle.predictor().class_probabilities(paths), before, atol=1e-5)
    assert [r["label"] for r in bundle.predictor().classify(paths)].count("blue") >= len(paths) - 1


def test_cli_evaluate_and_predict_on_images(image_run, capsys):
    assert main(["evaluate", "--model-dir", image_run["out"], "--file", image_run["test_dir"]]) == 0
    assert "accuracy" in capsys.readouterr().out
    path = os.path.join(image_run["test_dir"], "green", "000.jpg")
    assert main(["predict", "--model-dir", image_run["out"], path]) == 0
    label, score, shown = capsys.readouterr().out.strip().split("\t")
    assert label == "green" and shown == path and 0 < float(score) <= 1


# --------------------------------------------------------------------------- export and serving
@pytest.fixture(scope="module")
def image_export(image_run):
    base = str(image_run["root"] / "exports")
    path = ModelBundle.load(image_run["out"]).export(base, "colours")
    return dict(base=base, path=path)


def sample_bytes(image_run, n: int = 3) -> list:
    test_dir = image_run["test_dir"]
    return [open(os.path.join(test_dir, label, "001.png"), "rb").read() for label in sorted(COLOURS)][:n]


def test_export_signatures_and_parity(image_run, image_export):
    table = signature_table(image_export["path"])
    assert table["serving_default"]["inputs"] == {"image_bytes": {"dtype": "string", "shape": [-1]}}
    assert table["classify"]["method"] == tf.saved_model.CLASSIFY_METHOD_NAME
    assert table["predict_pixels"]["inputs"]["pixels"] == {"dtype": "float32", "shape": [-1, -1, -1, 3]}
    assert read_export_metadata(image_export["path"])["image_size"] == IMAGE_SIZE

    images = sample_bytes(image_run)
    expected = image_run["result"].bundle.predictor().class_probabilities(images)
    loaded = tf.saved_model.load(image_export["path"])
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
    assert [x.decode() for x in out["label"].numpy()] == sorted(COLOURS)

    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))})).SerializeToString() for b in images]
    classified = loaded.signatures["classify"](inputs=tf.constant(examples))
    np.testing.assert_allclose(classified["scores"].numpy(), expected, atol=1e-5)

    decoded = [tf.io.decode_image(b, channels=3).numpy().astype(np.float32) for b in images]
    for pixels, row in zip(decoded, expected):
        out = loaded.signatures["predict_pixels"](pixels=tf.constant(pixels[None]))
        np.testing.assert_allclose(out["scores"].numpy()[0], row, atol=1e-4)


def test_export_runs_in_tf1_graph_mode_like_tf_serving(image_run, image_export):
    """TF Serving loads SavedModels as TF1 graphs and feeds signature tensors by name."""
    images = sample_bytes(image_run)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], image_export["path"])
        signature = meta_graph.signature_def["serving_default"]
        scores = session.run(signature.outputs["scores"].name,
                             {signature.inputs["image_bytes"].name: np.array(images, dtype=object)})
    assert scores.shape == (3, 3) and [int(i) for i in scores.argmax(1)] == [0, 1, 2]


def test_export_warmup_requests_cover_every_signature(image_export):
    logs = read_warmup_requests(os.path.join(image_export["path"], "assets.extra", WARMUP_FILE))
    kinds = sorted(log.WhichOneof("log_type") + ":" + (log.predict_log.request.model_spec.signature_name
                                                        or log.classify_log.request.model_spec.signature_name)
                   for log in logs)
    assert kinds == ["classify_log:classify", "predict_log:predict_pixels", "predict_log:serving_default"]


def test_embedded_server_takes_base64_images_over_rest(image_run, image_export):
    server = ModelServer(image_export["base"], grpc_port=-1, rest_port=0, poll_seconds=0,
                         limits=Limits(max_batch_size=8, max_text_bytes=64))   # images are not texts: no 64-byte cap
    server.start()
    try:
        client = RestClient(server.rest_url, "colours", timeout=30)
        images = sample_bytes(image_run)
        instances = [{"b64": base64.b64encode(b).decode("ascii")} for b in images]
        predictions = client.predict(instances=instances)["predictions"]
        assert [p["label"] for p in predictions] == sorted(COLOURS)
        body = {"signature_name": "classify",
                "examples": [{"image": {"b64": base64.b64encode(b).decode("ascii")}} for b in images]}
        result = client.request(client.url(None, ":classify"), body)["result"]
        assert [max(row, key=lambda pair: pair[1])[0] for row in result] == sorted(COLOURS)
        with pytest.raises(Exception, match="decode|image|Invalid|invalid"):
            client.predict(instances=[{"b64": base64.b64encode(b"not an image").decode("ascii")}])
    finally:
        server.stop()


# --------------------------------------------------------------------------- the default CNN, PEFT
def test_default_mobilenet_trains_saves_and_reloads(image_run, tmp_path):
    """No model flag: the ImageNet MobileNetV2 (BatchNorm statistics, head, weights) round-trips its folder."""
    out = str(tmp_path / "cnn")
    result = train(task=IMAGE_CLASSIFICATION, train_file=image_run["train_dir"], output_dir=out, epochs=1,
                   image_size=32, batch_size=16, verbose=0, early_stopping_patience=0, dataset=None)
    assert result.report["recipe"]["model"] == {"value": "mobilenet_v2", "source": "image_classification default"}
    assert result.report["recipe"]["learning_rate"]["source"].startswith("mobilenet_v2 recipe")
    assert {"image_model.json", "tf_model.h5", "preprocessor_config.json"} <= set(os.listdir(out))
    paths = [os.path.join(image_run["test_dir"], "red", name) for name in ("000.jpg", "001.png", "002.png")]
    before = result.bundle.predictor().class_probabilities(paths)
    np.testing.assert_allclose(ModelBundle.load(out).predictor().class_probabilities(paths), before, atol=1e-5)


def test_lora_on_vit_trains_and_merges(image_run, vit_checkpoint, tmp_path):
    out = str(tmp_path / "lora")
    result = train(task=IMAGE_CLASSIFICATION, train_file=image_run["train_dir"], model=vit_checkpoint,
                   output_dir=out, epochs=1, batch_size=16, verbose=0, early_stopping_patience=0, dataset=None,
                   peft="lora", lora_rank=4)
    assert result.params["trainable"] < result.params["total"] / 2
    assert json.load(open(os.path.join(out, "tfpipeline.json")))["peft"]["merged"] is True
    paths = [os.path.join(image_run["test_dir"], "blue", "001.png")]
    np.testing.assert_allclose(ModelBundle.load(out).predictor().class_probabilities(paths),
                               result.bundle.predictor().class_probabilities(paths), atol=1e-5)


def test_peft_on_a_cnn_is_a_clear_error(image_run, tmp_path):
    from tfpipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="transformer attention layers"):
        train(task=IMAGE_CLASSIFICATION, train_file=image_run["train_dir"], output_dir=str(tmp_path / "x"),
              epochs=1, image_size=32, verbose=0, dataset=None, peft="lora")
    assert not os.path.exists(tmp_path / "x")
