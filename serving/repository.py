"""The model repository: every ``<base>/<model>/<version>/`` SavedModel, reloaded as folders change.

Same layout and rules as TF Serving's file-system source: a model is a
sub-folder of the base folder, a version is an integer-named sub-folder of
the model (anything else, such as an exporter's hidden ``.tmp-*`` staging
folder, is ignored). The newest loaded version answers requests that name no
version. Loading happens outside the lock, so requests keep being served by
the old versions while a new one loads; a version is published only after its
warmup records have run (``warm_up``, as TF Serving does: predict, classify
and regress logs), so the first real requests to it do not pay for
instantiating and optimising its graphs.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers FastBertTokenizer / RegexSplit ops the exports use)

from tfpipeline.errors import ConfigError
from tfpipeline.export import ASSETS_EXTRA, METADATA_FILE, read_saved_model_proto
from tfpipeline.export.warmup import WARMUP_FILE, read_warmup_requests

from serving.errors import invalid, not_found
from serving.tflite_pool import tflite_signatures

log = logging.getLogger(__name__)

AVAILABLE, END = "AVAILABLE", "END"
LOADER_NICENESS = 10             # added to the loading thread's OS niceness (Linux: per thread)
LOADING_SWITCH_INTERVAL = 0.0005  # seconds; Python's default GIL slice is 0.005
EXAMPLE_LOGS = ("classify_log", "regress_log")   # PredictionLog kinds whose request is a list of tf.Examples


@dataclass
class Servable:
    """One loaded model version: its signature functions and SignatureDefs."""

    name: str
    version: int
    path: str
    loaded: object                      # keeps the restored object (and its variables) alive
    signature_defs: Dict[str, object]   # name -> SignatureDef proto (method names as exported)
    metadata: dict = field(default_factory=dict)
    warmup_requests: int = 0            # warmup records replayed before the version was published
    tflite: Dict[str, object] = field(default_factory=dict)   # model.tflite signatures (--prefer-tflite-model)

    def __post_init__(self):
        self._signatures = {**dict(self.loaded.signatures), **self.tflite} if self.tflite else None

    @property
    def signatures(self):
        """Signature functions by name: the SavedModel's, each replaced by ``model.tflite``'s of the same name
        when the version was loaded preferring TFLite."""
        return self._signatures if self._signatures is not None else self.loaded.signatures


@dataclass
class VersionStatus:
    version: int
    state: str                 # AVAILABLE or END (failed to load / unloaded)
    error: str = ""            # empty when OK


def _stamp(path: str) -> float:
    """Changes when a version folder is (re)written: newest mtime of its key files."""
    files = [os.path.join(path, "saved_model.pb"), os.path.join(path, "variables", "variables.index")]
    return max((os.path.getmtime(f) for f in files if os.path.exists(f)), default=0.0)


def load_servable(name: str, version: int, path: str, *, prefer_tflite: bool = False,
                  tflite_interpreters: int = 1) -> Servable:
    """tf.saved_model.load one version (tensorflow_text, imported above, registers the tokenizer ops);
    ``prefer_tflite``: its ``model.tflite`` signatures, if it has one, answer in place of the SavedModel's."""
    loaded = tf.saved_model.load(path)
    defs = dict(read_saved_model_proto(path).meta_graphs[0].signature_def)
    defs = {k: v for k, v in defs.items() if not k.startswith("__")}
    meta_path = os.path.join(path, ASSETS_EXTRA, METADATA_FILE)
    metadata = {}
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            metadata = json.load(f)
    tflite = tflite_signatures(path, tflite_interpreters) if prefer_tflite else {}
    servable = Servable(name, version, path, loaded, defs, metadata, tflite=tflite)
    servable.warmup_requests = warm_up(servable)
    return servable


def load_behind_requests(name: str, version: int, path: str, **options) -> Servable:
    """``load_servable`` in a thread of its own at a lower OS priority, with short GIL slices meanwhile.

    Why: loading a version restores its functions in Python and optimises its
    graphs on the first (warmup) calls, all in the loading thread. At equal
    priority that thread takes CPU and the GIL from the threads answering with
    the version being served: on 2 cores their p99 grew several-fold during a
    change (``bench/version_change.py``). TF Serving loads on threads of its
    own for the same reason. A lowered priority cannot be raised again without
    privileges, hence a fresh thread per load; the GIL slice is process-wide and
    restored when the load ends (``reload`` runs one load at a time).
    """
    outcome: Dict[str, object] = {}

    def load() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + LOADER_NICENESS)
        except (AttributeError, OSError):   # no per-thread priority here: load at the usual one
            pass
        try:
            outcome["servable"] = load_servable(name, version, path, **options)
        except BaseException as e:  # re-raised in the caller's thread
            outcome["error"] = e

    previous = sys.getswitchinterval()
    sys.setswitchinterval(LOADING_SWITCH_INTERVAL)
    try:
        thread = threading.Thread(target=load, name=f"load {name}/{version}", daemon=True)
        thread.start()
        thread.join()
    finally:
        sys.setswitchinterval(previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["servable"]


def warm_up(servable: Servable) -> int:
    """Replay the version's ``assets.extra/tf_serving_warmup_requests`` (TF Serving's warmup file) on its
    signatures; returns how many records ran.

    The first call of a restored signature instantiates and optimises its
    graph (seconds for a BERT export with the tokenizer inside): without this,
    the first requests after a version change waited for it. A record that
    fails fails the load, as in TF Serving, and the old versions keep serving.
    """
    path = os.path.join(servable.path, ASSETS_EXTRA, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    records = read_warmup_requests(path)
    for i, record in enumerate(records):
        signature, feeds = warmup_call(record, f"{path}: record {i}")
        if signature not in servable.signatures:
            raise ValueError(f"{path}: record {i} names signature {signature!r}, which the export lacks")
        servable.signatures[signature](**feeds)
    return len(records)


def warmup_call(record, where: str) -> Tuple[str, Dict[str, tf.Tensor]]:
    """(signature name, feeds) of one PredictionLog: a Predict request, or a Classify / Regress request
    (its examples, context merged, serialized on the ``inputs`` tensor as those APIs do)."""
    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        request = record.predict_log.request
        feeds = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
    elif kind in EXAMPLE_LOGS:
        request = getattr(record, kind).request
        serialized = [e.SerializeToString() for e in input_examples(request.input, where)]
        feeds = {"inputs": tf.constant(serialized, dtype=tf.string)}
    else:
        raise ValueError(f"{where} is a {kind}, which this server does not replay")
    return request.model_spec.signature_name or "serving_default", feeds


def input_examples(request_input, what: str) -> List[tf.train.Example]:
    """The tf.Examples of a Classify / Regress request's ``input`` (tensorflow.serving.Input), for the
    gRPC front end and warmup alike; INVALID_ARGUMENT (naming ``what``) if it holds neither kind of list."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return list(request_input.example_list.examples)
    if kind == "example_list_with_context":
        block = request_input.example_list_with_context
        return [with_context(e, block.context) for e in block.examples]
    raise invalid(f"{what}: input is empty: set example_list or example_list_with_context")


def with_context(example: tf.train.Example, context: tf.train.Example) -> tf.train.Example:
    """TF Serving semantics: context features are added to every example (example features win)."""
    merged = tf.train.Example()
    merged.CopyFrom(context)
    for key, feature in example.features.feature.items():
        merged.features.feature[key].CopyFrom(feature)
    return merged


class ModelRepository:
    """Thread-safe map of model name -> {version: Servable}, refreshed by ``reload()``.

    ``keep_versions`` = N serves only the newest N versions of each model
    (TF Serving's ``latest`` policy); None serves every version on disk.
    ``low_priority_loads``: load versions with ``load_behind_requests`` (False:
    in the reloading thread as is, the baseline ``bench/version_change.py`` compares).
    ``prefer_tflite_model``: versions with a ``model.tflite`` answer its signatures from a pool of
    ``tflite_interpreters`` interpreters (``serving.tflite_pool``; TF Serving's ``--prefer_tflite_model``).
    """

    def __init__(self, base_dir: str, *, keep_versions: Optional[int] = None, low_priority_loads: bool = True,
                 prefer_tflite_model: bool = False, tflite_interpreters: int = 1):
        if not os.path.isdir(base_dir):
            raise ConfigError(f"{base_dir}: model base folder not found")
        if keep_versions is not None and keep_versions < 1:
            raise ConfigError("keep_versions must be >= 1 (or None for all versions)")
        self.base_dir = base_dir
        self.keep_versions = keep_versions
        if tflite_interpreters < 1:
            raise ConfigError(f"tflite_interpreters must be >= 1, got {tflite_interpreters}")
        self._load = functools.partial(load_behind_requests if low_priority_loads else load_servable,
                                       prefer_tflite=prefer_tflite_model, tflite_interpreters=tflite_interpreters)
        self._models: Dict[str, Dict[int, Servable]] = {}
        self._stamps: Dict[Tuple[str, int], float] = {}
        self._failed: Dict[Tuple[str, int], Tuple[float, str]] = {}
        self._lock = threading.Lock()          # guards the maps above
        self._reload_lock = threading.Lock()   # one reload at a time (poller vs. manual)

    # ------------------------------------------------------------------ scanning
    def scan(self) -> Dict[str, Dict[int, str]]:
        """What is on disk now: {model: {version: path}} (only the versions that will be served)."""
        found: Dict[str, Dict[int, str]] = {}
        for name in sorted(os.listdir(self.base_dir)):
            root = os.path.join(self.base_dir, name)
            if name.startswith(".") or not os.path.isdir(root):
                continue
            versions = {int(v): os.path.join(root, v) for v in os.listdir(root)
                        if v.isdigit() and os.path.isfile(os.path.join(root, v, "saved_model.pb"))}
            if versions:
                keep = sorted(versions)[-self.keep_versions:] if self.keep_versions else sorted(versions)
                found[name] = {v: versions[v] for v in keep}
        return found

    def reload(self) -> Dict[str, List]:
        """Load new/changed versions, drop removed ones. Returns {"loaded": [...], "unloaded": [...], "failed": [...]}."""
        with self._reload_lock:
            wanted = self.scan()
            changes: Dict[str, List] = {"loaded": [], "unloaded": [], "failed": []}
            new_servables: Dict[Tuple[str, int], Servable] = {}
            for name, versions in wanted.items():
                for version, path in versions.items():
                    key, stamp = (name, version), _stamp(path)
                    if self._stamps.get(key) == stamp or self._failed.get(key, (None,))[0] == stamp:
                        continue
                    try:
                        new_servables[key] = self._load(name, version, path)
                        self._failed.pop(key, None)
                        self._stamps[key] = stamp
                        changes["loaded"].append(f"{name}/{version}")
                    except Exception as e:  # a broken version must not take the server down
                        log.error("failed to load %s version %s from %s: %s", name, version, path, e)
                        self._failed[key] = (stamp, f"{type(e).__name__}: {e}")
                        changes["failed"].append(f"{name}/{version}")
            with self._lock:
                for (name, version), servable in new_servables.items():
                    self._models.setdefault(name, {})[version] = servable
                for name in list(self._models):
                    for version in list(self._models[name]):
                        if version not in wanted.get(name, {}):
                            del self._models[name][version]
                            self._stamps.pop((name, version), None)
                            changes["unloaded"].append(f"{name}/{version}")
                    if not self._models[name]:
                        del self._models[name]
                for key in list(self._failed):
                    if key[1] not in wanted.get(key[0], {}):
                        del self._failed[key]
            for kind, items in changes.items():
                if items:
                    log.info("%s: %s", kind, ", ".join(items))
            return changes

    # ------------------------------------------------------------------ lookups
    def model_names(self) -> List[str]:
        with self._lock:
            return sorted(self._models)

    def get(self, name: str, version: Optional[int] = None) -> Servable:
        """The requested version, or the newest one; NOT_FOUND if absent."""
        if not name:
            raise invalid("model_spec.name is required")
        with self._lock:
            versions = self._models.get(name)
            if not versions:
                raise not_found(f"Servable not found for request: {'Latest' if version is None else 'Specific'}"
                                f"({name}{'' if version is None else f', {version}'}): no model named {name!r} "
                                f"(models: {', '.join(sorted(self._models)) or 'none'})")
            if version is None:
                return versions[max(versions)]
            if version not in versions:
                raise not_found(f"Servable not found for request: Specific({name}, {version}): model {name!r} "
                                f"has versions {sorted(versions)}")
            return versions[version]

    def status(self, name: str, version: Optional[int] = None) -> List[VersionStatus]:
        """Per-version state as GetModelStatus reports it (failed loads show as END with the error)."""
        with self._lock:
            loaded = {v: VersionStatus(v, AVAILABLE) for v in self._models.get(name, {})}
            failed = {k[1]: VersionStatus(k[1], END, err) for k, (_, err) in self._failed.items() if k[0] == name}
        states = {**failed, **loaded}
        if not states:
            raise not_found(f"Could not find any versions of model {name!r}")
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name!r}")
            return [states[version]]
        return [states[v] for v in sorted(states, reverse=True)]
