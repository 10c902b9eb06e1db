"""Read a PyTorch ``.pth`` state dict into numpy arrays, without torch.

tfpipeline does not depend on torch (or on transformers' PyTorch loaders) but
some pretrained weights only exist as torch checkpoints, e.g. torchvision's
ImageNet MobileNetV2. A state dict is a pickle of an OrderedDict of tensors;
each tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)`` and each storage is a pickle *persistent id*
``('storage', storage_type, key, location, numel[, view_metadata])`` whose bytes
live outside the pickle. Two file layouts exist:

* modern (torch >= 1.6): a zip holding ``<archive>/data.pkl`` and one raw file
  ``<archive>/data/<key>`` per storage;
* legacy: one stream of pickles (magic number, protocol version, sys_info, the
  state dict, the list of storage keys), then for each key an int64
  little-endian element count followed by the raw data.

Unpickling runs code, so the unpickler only resolves the few globals a state
dict needs (the tensor rebuild functions, storage types and OrderedDict) and
refuses everything else.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from typing import IO, Dict, Optional, Tuple

import numpy as np

from tfpipeline.errors import CheckpointError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class StorageType:
    """Stands in for ``torch.FloatStorage`` & co: only the element type matters."""
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class StorageRef:
    """A storage named in the pickle; its bytes are read afterwards (``view``: (offset, numel) into it)."""
    key: str
    dtype: np.dtype
    numel: int
    view: Optional[Tuple[int, int]] = None


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it: a window (offset, size, stride in elements) onto a storage."""
    storage: StorageRef
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]


def rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> TensorRef:
    """``torch._utils._rebuild_tensor_v2`` (and the older ``_rebuild_tensor``)."""
    return TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def rebuild_parameter(data, _requires_grad=False, _backward_hooks=None, *_ignored) -> TensorRef:
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` saved as such is just its tensor."""
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict into TensorRefs; refuses any global a state dict does not need."""

    def __init__(self, file: IO[bytes], path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(f"{self.path}: refusing to unpickle {module}.{name} "
                                  "(only tensors, storages and OrderedDict are allowed in a state dict)") from None

    def persistent_load(self, saved_id) -> StorageRef:
        if not (isinstance(saved_id, tuple) and saved_id[0] == "storage" and 5 <= len(saved_id) <= 6):
            raise CheckpointError(f"{self.path}: unsupported persistent id {saved_id!r:.80}")
        storage_type, key, _location, numel = saved_id[1:5]
        view_metadata = saved_id[5] if len(saved_id) == 6 else None  # legacy only: (view key, offset, numel)
        if not isinstance(storage_type, StorageType):
            raise CheckpointError(f"{self.path}: storage {key} has unsupported type {storage_type!r}")
        view = (int(view_metadata[1]), int(view_metadata[2])) if view_metadata else None
        return StorageRef(str(key), storage_type.dtype, int(numel), view)


def load_torch_state_dict(path: str) -> Dict[str, np.ndarray]:
    """Read a torch ``.pth``/``.pt`` state dict (zip or legacy format) as {name: numpy array}."""
    try:
        if zipfile.is_zipfile(path):
            tensors, storages = read_zip_checkpoint(path)
        else:
            tensors, storages = read_legacy_checkpoint(path)
    except CheckpointError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable torch state dict ({type(err).__name__}: {err})") from err
    if not isinstance(tensors, dict):
        raise CheckpointError(f"{path}: holds a {type(tensors).__name__}, not a state dict")
    return {name: tensor_array(path, name, tensor, storages) for name, tensor in tensors.items()}


def read_zip_checkpoint(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    """Modern format: ``<archive>/data.pkl`` plus ``<archive>/data/<key>`` (optionally ``<archive>/byteorder``)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one */data.pkl in the zip, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        endian = "<" if byteorder == "little" else ">"
        with archive.open(pickles[0]) as file:
            tensors = StateDictUnpickler(file, path).load()
        storages = {ref.key: np.frombuffer(archive.read(f"{prefix}data/{ref.key}"), ref.dtype.newbyteorder(endian))
                    for ref in storage_refs(tensors)}
    return tensors, storages


def read_legacy_checkpoint(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    """Pre-1.6 format: header pickles, the state dict, the storage keys, then each storage's count and bytes."""
    with open(path, "rb") as file:
        header = StateDictUnpickler(file, path)
        magic = header.load()
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(f"{path}: neither a zip nor a legacy torch file (magic number {magic!r:.40})")
        header.load()  # protocol version
        header.load()  # sys_info: endianness and type sizes, always little-endian in practice
        tensors = StateDictUnpickler(file, path).load()
        keys = StateDictUnpickler(file, path).load()
        dtypes = {ref.key: ref.dtype for ref in storage_refs(tensors)}
        storages = {}
        for key in keys:
            (count,) = np.frombuffer(read_exactly(file, 8, path), dtype="<i8")
            dtype = dtypes[key].newbyteorder("<")
            storages[key] = np.frombuffer(read_exactly(file, int(count) * dtype.itemsize, path), dtype=dtype)
    return tensors, storages


def read_exactly(file: IO[bytes], size: int, path: str) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise CheckpointError(f"{path}: file ends inside a storage (wanted {size} bytes, got {len(data)})")
    return data


def storage_refs(tensors) -> list:
    """The storages the state dict's tensors point at."""
    if not isinstance(tensors, dict):
        return []
    return [tensor.storage for tensor in tensors.values() if isinstance(tensor, TensorRef)]


def tensor_array(path: str, name: str, tensor, storages: Dict[str, np.ndarray]) -> np.ndarray:
    """Cut one tensor out of its storage (honouring offset and strides) as a fresh, native-endian array."""
    if not isinstance(tensor, TensorRef):
        raise CheckpointError(f"{path}: entry {name} is a {type(tensor).__name__}, not a tensor")
    storage = storage_data(path, tensor.storage, storages)
    if 0 in tensor.size:
        return np.zeros(tensor.size, dtype=storage.dtype.newbyteorder("="))
    extent = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride)) + 1
    if tensor.offset < 0 or min(tensor.stride, default=0) < 0 or extent > storage.size:
        raise CheckpointError(f"{path}: tensor {name} (size {tensor.size}, stride {tensor.stride}, "
                              f"offset {tensor.offset}) does not fit its storage of {storage.size} elements")
    window = np.lib.stride_tricks.as_strided(
        storage[tensor.offset:], shape=tensor.size, strides=[s * storage.itemsize for s in tensor.stride])
    return np.array(window, dtype=storage.dtype.newbyteorder("="))


def storage_data(path: str, ref: StorageRef, storages: Dict[str, np.ndarray]) -> np.ndarray:
    """The elements of one storage (a slice of it when a legacy file saved a view onto it)."""
    offset, numel = ref.view if ref.view else (0, ref.numel)
    if ref.key not in storages or storages[ref.key].size < offset + numel:
        raise CheckpointError(f"{path}: storage {ref.key} is missing or shorter than {offset + numel} elements")
    return storages[ref.key][offset: offset + numel]
