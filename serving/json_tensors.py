"""TF Serving's REST JSON encoding of tensors and tf.Examples.

Request tensors come as nested JSON lists; strings are JSON strings, or
``{"b64": "..."}`` for binary data. Responses use the same rules: string
outputs whose name ends in ``_bytes`` (or that are not valid UTF-8) are
base64 objects, everything else is plain JSON.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, List, Tuple

import numpy as np
import tensorflow as tf

from serving.errors import invalid


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _b64decode(value: dict, where: str) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise invalid(f"{where}: invalid base64 in {{\"b64\": ...}}") from None


def _flatten(value: Any, where: str) -> Tuple[List[Any], List[int]]:
    """Nested lists -> (leaves, shape); ragged nesting is an error (tensors are rectangular)."""
    if not isinstance(value, list):
        return [value], []
    if not value:
        return [], [0]
    parts = [_flatten(v, where) for v in value]
    shape = parts[0][1]
    if any(p[1] != shape for p in parts):
        raise invalid(f"{where}: nested lists have different lengths (tensors must be rectangular; pad them)")
    return [leaf for p in parts for leaf in p[0]], [len(value)] + shape


def json_to_array(value: Any, dtype: tf.DType, where: str) -> np.ndarray:
    """JSON value -> numpy array of the signature input's dtype (clear errors for the wrong kind)."""
    leaves, shape = _flatten(value, where)
    if dtype == tf.string:
        out = []
        for leaf in leaves:
            if isinstance(leaf, str):
                out.append(leaf.encode("utf-8"))
            elif is_b64(leaf):
                out.append(_b64decode(leaf, where))
            else:
                raise invalid(f"{where}: expects strings, got {type(leaf).__name__} {str(leaf)[:40]!r}")
        array = np.empty(len(out), dtype=object)
        array[:] = out
        return array.reshape(shape)
    if dtype == tf.bool:
        if not all(isinstance(x, bool) for x in leaves):
            raise invalid(f"{where}: expects booleans")
        return np.array(leaves, dtype=bool).reshape(shape)
    if dtype.is_integer:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in leaves):
            bad = next(x for x in leaves if not (isinstance(x, int) and not isinstance(x, bool)))
            raise invalid(f"{where}: expects {dtype.name} integers, got {type(bad).__name__} {str(bad)[:40]!r}")
        info = np.iinfo(dtype.as_numpy_dtype)
        if leaves and (min(leaves) < info.min or max(leaves) > info.max):
            raise invalid(f"{where}: value out of range for {dtype.name}")
        return np.array(leaves, dtype=dtype.as_numpy_dtype).reshape(shape)
    if dtype.is_floating:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in leaves):
            raise invalid(f"{where}: expects numbers")
        return np.array(leaves, dtype=dtype.as_numpy_dtype).reshape(shape)
    raise invalid(f"{where}: inputs of type {dtype.name} are not supported over REST")


def array_to_json(value: np.ndarray, name: str) -> Any:
    """numpy output -> JSON-ready value (strings decoded as UTF-8, else base64)."""
    if value.dtype.kind in "OS":
        binary = name.endswith("_bytes")

        def convert(x):
            if isinstance(x, list):
                return [convert(v) for v in x]
            if not binary:
                try:
                    return x.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(x).decode("ascii")}

        return convert(value.tolist())
    return value.tolist()


def example_from_json(features: Any, where: str) -> tf.train.Example:
    """``{"text": "...", "n": 3, "xs": [1.0, 2.0]}`` -> tf.train.Example (classify/regress REST input)."""
    if not isinstance(features, dict):
        raise invalid(f"{where}: each example must be a JSON object of feature name -> value")
    example = tf.train.Example()
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[key]
        if all(isinstance(v, str) or is_b64(v) for v in values):
            feature.bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else _b64decode(v, where)
                                            for v in values)
        elif all(isinstance(v, int) for v in values):
            feature.int64_list.value.extend(int(v) for v in values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise invalid(f"{where}: feature {key!r} must be strings, integers or numbers (not mixed)")
    return example


def named_inputs(body_value: Any, names: List[str], where: str) -> Dict[str, Any]:
    """Columnar ``inputs``: an object of name -> value, or a bare value for a one-input signature."""
    if isinstance(body_value, dict) and not is_b64(body_value):
        return body_value
    if len(names) != 1:
        raise invalid(f"{where}: this signature has inputs {names}; send an object keyed by input name")
    return {names[0]: body_value}


def rows_to_columns(instances: Any, names: List[str]) -> Dict[str, Any]:
    """Row format ``instances`` -> {name: [row values]} (a bare value per row for one-input signatures)."""
    if not isinstance(instances, list):
        raise invalid("'instances' must be a list (one entry per example)")
    if instances and all(isinstance(i, dict) and not is_b64(i) for i in instances):
        keys = set(instances[0])
        for i, inst in enumerate(instances):
            if set(inst) != keys:
                raise invalid(f"instances[{i}] has inputs {sorted(inst)}, instances[0] has {sorted(keys)}")
        return {k: [inst[k] for inst in instances] for k in keys}
    if any(isinstance(i, dict) and not is_b64(i) for i in instances):
        raise invalid("'instances' mixes objects and bare values")
    if len(names) != 1:
        raise invalid(f"this signature has inputs {names}; each instance must be an object keyed by input name")
    return {names[0]: instances}
