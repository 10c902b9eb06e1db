"""Run a signature on request tensors, after checking them against the signature and the limits.

Both front ends (gRPC, REST) turn requests into ``{name: numpy array}`` (or
tf.Examples) and call ``predict`` / ``classify`` / ``regress`` here, so
validation and error codes are identical across protocols. Classify and
Regress are the same path (``run_examples``: method-name check, limits,
serialized examples on the ``inputs`` tensor) and differ only in how the
outputs are read. Every problem with a request is an
INVALID_ARGUMENT that names the input; TF runtime errors caused by the input
(e.g. token ids outside the vocabulary) are INVALID_ARGUMENT too.

With server-side batching (``serving.batching``), a request is validated here
first, alone, and only then queued: a bad request is refused without touching
the batch it would have joined.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from serving.batching import Batching
from serving.errors import ServingError, invalid, not_found
from serving.repository import Servable
from tfpipeline.errors import op_error_text

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
EXAMPLES_INPUT = "inputs"       # TF Serving's name for the serialized tf.Example input of classify/regress
REGRESS_OUTPUT = "outputs"


@dataclass(frozen=True)
class ExampleApi:
    """A tf.Example API (TF Serving's Classify or Regress): the signature method it needs and the outputs it reads."""

    kind: str                   # "classification" / "regression", as TF Serving's errors say
    method: str
    outputs: Tuple[str, ...]
    exported_as: str            # the signature name(s) tfpipeline exports for it, for the error hint


CLASSIFY_API = ExampleApi("classification", CLASSIFY_METHOD, ("classes", "scores"), "'classify'")
REGRESS_API = ExampleApi("regression", REGRESS_METHOD, (REGRESS_OUTPUT,), "'regress' (or 'regress_<target>')")


@dataclass(frozen=True)
class Limits:
    """Per-request limits: requests over them are refused, not truncated."""

    max_batch_size: int = 64
    max_text_bytes: int = 10_000      # per string element (a text, or a tf.Example feature value)
    max_binary_bytes: int = 20 << 20  # per binary element: an encoded image (see ``is_binary_input``)

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_text_bytes < 1 or self.max_binary_bytes < 1:
            raise ValueError("limits must be positive")

    def string_limit(self, name: str) -> int:
        return self.max_binary_bytes if is_binary_input(name) else self.max_text_bytes


def is_binary_input(name: str) -> bool:
    """Encoded images: a Predict input named ``*_bytes`` (the Google serving convention for binary inputs,
    ``image_bytes`` in tfpipeline's image exports) or a tf.Example feature named ``image``."""
    return name.endswith("_bytes") or name.rsplit(".", 1)[-1] == "image"


def input_specs(servable: Servable, signature_name: str) -> Dict[str, tf.TensorSpec]:
    """{input name: TensorSpec} of a signature; NOT_FOUND if the signature does not exist."""
    return dict(_function(servable, signature_name).structured_input_signature[1])


def _function(servable: Servable, signature_name: str):
    name = signature_name or DEFAULT_SIGNATURE
    try:
        return servable.signatures[name]
    except KeyError:
        raise not_found(f"Serving signature key {name!r} not found in {servable.name} version "
                        f"{servable.version} (signatures: {', '.join(sorted(servable.signature_defs))})") from None


def check_inputs(inputs: Dict[str, np.ndarray], specs: Dict[str, tf.TensorSpec], limits: Limits) -> int:
    """Names, dtypes, ranks, batch size and text sizes; returns the batch size."""
    missing, extra = sorted(set(specs) - set(inputs)), sorted(set(inputs) - set(specs))
    if missing or extra:
        raise invalid(f"inputs do not match the signature: expected {sorted(specs)}"
                      + (f", missing {missing}" if missing else "") + (f", unexpected {extra}" if extra else ""))
    batch = None
    for name, spec in specs.items():
        value = inputs[name]
        if not _dtype_matches(value, spec.dtype):
            raise invalid(f"input {name!r}: expects {spec.dtype.name} but got {_dtype_name(value)}")
        if spec.shape.rank is not None and value.ndim != spec.shape.rank:
            raise invalid(f"input {name!r}: expects rank {spec.shape.rank} (shape {spec.shape}) "
                          f"but got shape {list(value.shape)}")
        if not spec.shape.is_compatible_with(value.shape):
            raise invalid(f"input {name!r}: shape {list(value.shape)} is not compatible with {spec.shape}")
        rows = value.shape[0] if value.ndim else 1
        if batch is not None and rows != batch:
            raise invalid(f"all inputs must have the same batch size: {name!r} has {rows}, others {batch}")
        batch = rows
        if spec.dtype == tf.string:
            check_text_sizes(value.ravel(), limits, name)
    batch = batch or 0
    check_batch(batch, limits)
    return batch


def check_batch(batch: int, limits: Limits) -> None:
    if batch == 0:
        raise invalid("the batch is empty")
    if batch > limits.max_batch_size:
        raise invalid(f"batch size {batch} exceeds the server limit of {limits.max_batch_size}")


def check_text_sizes(values, limits: Limits, name: str) -> None:
    limit = limits.string_limit(name)
    for i, v in enumerate(values):
        size = len(v) if isinstance(v, (bytes, str)) else 0
        if size > limit:
            raise invalid(f"input {name!r} element {i} is {size} bytes; the server limit is {limit}")


def _dtype_matches(value: np.ndarray, dtype: tf.DType) -> bool:
    if dtype == tf.string:
        return value.dtype.kind in "OSU" and all(isinstance(v, (bytes, str)) for v in value.ravel())
    return value.dtype == dtype.as_numpy_dtype


def _dtype_name(value: np.ndarray) -> str:
    return "string" if value.dtype.kind in "OSU" else value.dtype.name


def run(fn, feeds: Dict[str, tf.Tensor]) -> Dict[str, np.ndarray]:
    """Call a signature function (SavedModel or ``serving.tflite_pool``); input-caused errors become
    INVALID_ARGUMENT."""
    try:
        outputs = fn(**feeds)
    except tf.errors.InvalidArgumentError as e:
        raise invalid(f"the model rejected the input: {op_error_text(e.message)}") from None
    except tf.errors.OpError as e:
        raise ServingError("INTERNAL", f"model execution failed: {op_error_text(e.message)}") from None
    return {k: v if isinstance(v, np.ndarray) else v.numpy() for k, v in outputs.items()}   # ndarray: TFLite


def signature_runner(fn, specs: Dict[str, tf.TensorSpec]) -> Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]:
    """The signature as a numpy -> numpy function: what a batching queue calls with merged inputs."""
    def run_arrays(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return run(fn, {k: tf.constant(inputs[k], dtype=spec.dtype) for k, spec in specs.items()})
    return run_arrays


def _execute(servable: Servable, signature_name: str, fn, specs: Dict[str, tf.TensorSpec],
             inputs: Dict[str, np.ndarray], batching: Optional[Batching]) -> Dict[str, np.ndarray]:
    """Run validated inputs: through the signature's batching queue when batching is on, else directly.

    One queue per (model, version, signature) and all outputs are computed, so
    requests with different output filters share batches (each filters its own rows).
    """
    if batching is not None and all(np.ndim(v) >= 1 for v in inputs.values()):
        queue = batching.queue((servable.name, servable.version, signature_name), servable,
                               lambda: signature_runner(fn, specs))
        if queue is not None:         # None: this version was unloaded while the request was in flight
            return queue.submit(inputs)
    return signature_runner(fn, specs)(inputs)


def predict(servable: Servable, signature_name: str, inputs: Dict[str, np.ndarray], limits: Limits,
            output_filter: Sequence[str] = (), batching: Optional[Batching] = None) -> Dict[str, np.ndarray]:
    """Predict API: named input arrays -> named output arrays (all outputs unless filtered)."""
    name = signature_name or DEFAULT_SIGNATURE
    fn = _function(servable, name)
    specs = dict(fn.structured_input_signature[1])
    check_inputs(inputs, specs, limits)
    outputs_known = set(fn.structured_outputs)
    unknown = sorted(set(output_filter) - outputs_known)
    if unknown:
        raise invalid(f"output_filter names unknown outputs {unknown} (outputs: {sorted(outputs_known)})")
    outputs = _execute(servable, name, fn, specs, inputs, batching)
    return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}


def run_examples(servable: Servable, signature_name: str, examples: List[tf.train.Example], api: ExampleApi,
                 limits: Limits, batching: Optional[Batching] = None) -> Dict[str, np.ndarray]:
    """Classify / Regress: check the signature is the API's kind, check the examples, run them serialized."""
    name = signature_name or DEFAULT_SIGNATURE
    fn = _function(servable, name)
    check_example_signature(servable, name, fn, api)
    check_examples(examples, limits)
    specs = dict(fn.structured_input_signature[1])
    return _execute(servable, name, fn, specs, {EXAMPLES_INPUT: serialize_examples(examples)}, batching)


def check_example_signature(servable: Servable, name: str, fn, api: ExampleApi) -> None:
    """Method name, the one ``inputs`` tensor and the outputs the API reads, as TF Serving checks them."""
    method = servable.signature_defs[name].method_name
    if method != api.method:
        raise invalid(f"Expected {api.kind} signature method_name to be {api.method}. Was: {method} "
                      f"(signature {name!r}; tfpipeline exports it as signature_name {api.exported_as})")
    inputs = sorted(fn.structured_input_signature[1])
    if inputs != [EXAMPLES_INPUT]:
        raise invalid(f"No {api.kind} inputs found in signature {name!r}: expected the one input "
                      f"{EXAMPLES_INPUT!r}, got {inputs}")
    missing = [k for k in api.outputs if k not in fn.structured_outputs]
    if missing:
        raise invalid(f"No {api.kind} outputs {missing} found in signature {name!r} "
                      f"(outputs: {sorted(fn.structured_outputs)})")


def check_examples(examples: Sequence[tf.train.Example], limits: Limits) -> None:
    """Batch size and the size of every bytes feature value."""
    check_batch(len(examples), limits)
    for i, example in enumerate(examples):
        for key, feature in example.features.feature.items():
            check_text_sizes(feature.bytes_list.value, limits, f"examples[{i}].{key}")


def serialize_examples(examples: Sequence[tf.train.Example]) -> np.ndarray:
    serialized = np.empty(len(examples), dtype=object)
    serialized[:] = [e.SerializeToString() for e in examples]
    return serialized


def classify(servable: Servable, signature_name: str, examples: List[tf.train.Example],
             limits: Limits, batching: Optional[Batching] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Classify API: tf.Examples -> (classes [B, C] bytes, scores [B, C] float)."""
    outputs = run_examples(servable, signature_name, examples, CLASSIFY_API, limits, batching)
    return outputs["classes"], outputs["scores"]


def regress(servable: Servable, signature_name: str, examples: List[tf.train.Example],
            limits: Limits, batching: Optional[Batching] = None) -> np.ndarray:
    """Regress API: tf.Examples -> one float32 value per example ([B])."""
    outputs = run_examples(servable, signature_name, examples, REGRESS_API, limits, batching)
    return regression_values(outputs[REGRESS_OUTPUT], len(examples))


def regression_values(values: np.ndarray, batch: int) -> np.ndarray:
    """TF Serving accepts a float32 ``outputs`` of shape [B] or [B, 1]; anything else is the model's error."""
    if values.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT. Got: {_dtype_name(values)} (regression output "
                      f"{REGRESS_OUTPUT!r})")
    if values.shape not in ((batch,), (batch, 1)):
        raise invalid(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                      f"{list(values.shape)} for {batch} examples")
    return values.reshape(batch)
