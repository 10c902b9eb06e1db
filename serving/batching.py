"""Dynamic request batching, TF Serving style: concurrent requests to one signature become one model call.

``--enable_batching`` in TF Serving puts a queue in front of every signature:
requests wait up to ``batch_timeout_micros`` for others, are concatenated along
dimension 0, run once, and the outputs are split back by row count. A model call
costs about the same for 1 row as for 16 on most hardware, so under concurrency this
multiplies throughput; a lone request pays at most the timeout.

What is the same as TF Serving (``BatchingParameters`` text proto, same field names):

* a batch closes at ``max_batch_size`` rows, or once its first request has waited
  ``batch_timeout_micros`` *and* a batch thread is free (busy threads let batches
  fill up, so batching happens under load even with timeout 0);
* ``num_batch_threads`` threads run batches, shared by every queue of the server;
* a queue holds at most ``max_enqueued_batches`` batches (the one being filled
  included); a request that needs one more is refused at once with UNAVAILABLE;
* a request with more rows than ``max_batch_size`` is INVALID_ARGUMENT (no splitting);
* ``allowed_batch_sizes`` pads a merged batch up to the next allowed size by
  repeating its last row; callers never see the padding;
* outputs must have the batch dimension first; each request gets its rows back.
  Outputs whose width depends on the batch (NER rows padded to the longest text)
  keep the merged batch's width, as in TF Serving.

Where this module differs, on purpose:

* ``pad_variable_length_inputs`` pads with zeros (``b""`` for strings, ``False``
  for bools). TF Serving pads with each tensor's first element, which for
  ``predict_ids`` means attended ``[CLS]`` tokens (mask 1) instead of ``[PAD]``
  (mask 0). Without the option, requests whose non-batch shapes differ go to
  separate batches instead of failing the merge.
* When a merged call fails with INVALID_ARGUMENT (an input the model rejects,
  e.g. a token id outside the vocabulary), each request of the batch is re-run
  alone, so only the request that caused it gets the error. Other failures
  (INTERNAL) reach every request of the batch. Either way later batches run.

Defaults are TF Serving's where it has one (``SharedBatchScheduler``:
max_batch_size 1000, batch_timeout_micros 0, max_enqueued_batches 10,
num_batch_threads = number of CPUs). No TensorFlow here: the scheduler works on
``{name: numpy array}`` dicts and a ``run_batch`` callable, so it is tested without a model.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Hashable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from tfpipeline.errors import ConfigError

from serving.errors import ServingError, invalid

log = logging.getLogger(__name__)

Arrays = Dict[str, np.ndarray]
RunBatch = Callable[[Arrays], Arrays]
UNAVAILABLE, INVALID_ARGUMENT, INTERNAL = "UNAVAILABLE", "INVALID_ARGUMENT", "INTERNAL"


# ---------------------------------------------------------------------------------------------- parameters
def _cpu_count() -> int:
    return os.cpu_count() or 1


class _FieldError(ConfigError):
    """A bad value, with the field (and list index) it belongs to, so the parser can add the file line."""

    def __init__(self, field_name: str, message: str, index: Optional[int] = None):
        super().__init__(message)
        self.field_name, self.index = field_name, index


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters`` (the fields this server implements); defaults are TF Serving's."""

    max_batch_size: int = 1000            # rows per merged batch (and the largest request accepted)
    batch_timeout_micros: int = 0         # how long a batch's first request may wait for others
    max_enqueued_batches: int = 10        # per queue (= per model version and signature)
    num_batch_threads: int = field(default_factory=_cpu_count)   # model calls at the same time, all queues
    allowed_batch_sizes: Tuple[int, ...] = ()                     # pad merged batches to one of these sizes
    pad_variable_length_inputs: bool = False                      # merge [B, T] inputs of different T

    def __post_init__(self):
        object.__setattr__(self, "allowed_batch_sizes", tuple(self.allowed_batch_sizes))
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise _FieldError(name, f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise _FieldError("batch_timeout_micros", f"batch_timeout_micros must be >= 0, got "
                                                      f"{self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        for i, size in enumerate(sizes):
            if size < 1:
                raise _FieldError("allowed_batch_sizes", f"allowed_batch_sizes must be >= 1, got {size}", i)
            if i and size <= sizes[i - 1]:
                raise _FieldError("allowed_batch_sizes", f"allowed_batch_sizes must increase strictly: "
                                                         f"{size} after {sizes[i - 1]}", i)
        if sizes and sizes[-1] != self.max_batch_size:
            raise _FieldError("allowed_batch_sizes", f"the last allowed_batch_sizes entry ({sizes[-1]}) must equal "
                                                     f"max_batch_size ({self.max_batch_size})", len(sizes) - 1)

    @property
    def timeout_seconds(self) -> float:
        return self.batch_timeout_micros / 1e6

    def describe(self) -> str:
        """One line for the server's start-up message."""
        sizes = f", sizes {','.join(map(str, self.allowed_batch_sizes))}" if self.allowed_batch_sizes else ""
        return (f"max_batch_size {self.max_batch_size}, timeout {self.batch_timeout_micros} us, "
                f"{self.num_batch_threads} batch threads, queue {self.max_enqueued_batches} batches{sizes}"
                f"{', variable-length padding' if self.pad_variable_length_inputs else ''}")


# ------------------------------------------------------------------------------------- text-proto reader
_WRAPPED_INTS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
# TF Serving fields this server does not implement: named, so the error says so instead of "unknown"
_NOT_IMPLEMENTED = ("max_execution_batch_size", "batch_padding_policy", "enable_priority_queue",
                    "low_priority_max_batch_size", "low_priority_batch_timeout_micros",
                    "low_priority_max_enqueued_batches", "low_priority_allowed_batch_sizes",
                    "mixed_priority_batching_policy")
_KNOWN = _WRAPPED_INTS + ("allowed_batch_sizes", "pad_variable_length_inputs", "thread_pool_name",
                          "enable_large_batch_splitting")
_TOKEN = re.compile(r"""(?P<space>[ \t\r\f\v]+)|(?P<newline>\n)|(?P<comment>\#[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<number>[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>[{}<>:\[\],;])""", re.VERBOSE)
_TRUE, _FALSE = ("true", "True", "t", "1"), ("false", "False", "f", "0")


class _Token(NamedTuple):
    kind: str      # string, number, word, punct
    text: str
    line: int


class _Field(NamedTuple):
    name: str
    line: int
    value: Union[_Token, List[_Token], List["_Field"]]   # scalar, [a, b] list, or { sub-fields }
    kind: str                                              # scalar, list, message


def _tokenize(text: str, path: str) -> List[_Token]:
    tokens, line, pos = [], 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ConfigError(f"{path}:{line}: cannot read {text[pos:pos + 20].splitlines()[0]!r}")
        kind = match.lastgroup
        if kind == "newline":
            line += 1
        elif kind in ("string", "number", "word", "punct"):
            tokens.append(_Token(kind, match.group(), line))
        pos = match.end()
    return tokens


class _Reader:
    """Protobuf text format, the subset a BatchingParameters file uses: scalars, messages, [lists]."""

    def __init__(self, tokens: List[_Token], path: str):
        self.tokens, self.path, self.i = tokens, path, 0

    def error(self, line: int, message: str) -> ConfigError:
        return ConfigError(f"{self.path}:{line}: {message}")

    def _peek(self) -> Optional[_Token]:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            raise self.error(self.tokens[-1].line if self.tokens else 1, f"file ends where {expected} was expected")
        self.i += 1
        return token

    def fields(self, closing: Optional[str] = None) -> List[_Field]:
        out: List[_Field] = []
        while True:
            token = self._peek()
            if token is None:
                if closing:
                    raise self.error(self.tokens[-1].line, f"missing {closing!r}")
                return out
            if closing and token.text == closing:
                self.i += 1
                return out
            name = self._next("a field name")
            if name.kind != "word":
                raise self.error(name.line, f"expected a field name, got {name.text!r}")
            colon = self._peek() is not None and self._peek().text == ":"
            self.i += colon
            token = self._next(f"a value for {name.text}")
            if token.text in ("{", "<"):
                out.append(_Field(name.text, name.line, self.fields("}" if token.text == "{" else ">"), "message"))
            elif token.text == "[" and colon:
                out.append(_Field(name.text, name.line, self._list(), "list"))
            elif colon and token.kind != "punct":
                out.append(_Field(name.text, name.line, token, "scalar"))
            else:
                raise self.error(token.line, f"expected ': value' or '{{ ... }}' after {name.text}, got {token.text!r}")
            if self._peek() is not None and self._peek().text in (",", ";"):
                self.i += 1

    def _list(self) -> List[_Token]:
        items: List[_Token] = []
        while True:
            token = self._next("']'")
            if token.text == "]" and not items:
                return items
            if token.kind == "punct":
                raise self.error(token.line, f"expected a list item, got {token.text!r}")
            items.append(token)
            separator = self._next("',' or ']'")
            if separator.text == "]":
                return items
            if separator.text != ",":
                raise self.error(separator.line, f"expected ',' or ']', got {separator.text!r}")


def _int(token: _Token, name: str, path: str) -> int:
    if token.kind != "number" or not re.fullmatch(r"[-+]?\d+", token.text):
        raise ConfigError(f"{path}:{token.line}: {name} expects an integer, got {token.text}")
    return int(token.text)


def _bool(token: _Token, name: str, path: str) -> bool:
    if token.text in _TRUE or token.text in _FALSE:
        return token.text in _TRUE
    raise ConfigError(f"{path}:{token.line}: {name} expects true or false, got {token.text}")


def _wrapped(f: _Field, path: str) -> Optional[_Token]:
    """The ``value`` of a wrapper message (``name { value: X }``); None when it is left empty (= 0/false)."""
    if f.kind != "message":
        raise ConfigError(f"{path}:{f.line}: {f.name} is a wrapper message in TF Serving's format: "
                          f"write {f.name} {{ value: ... }}")
    inner = f.value
    for sub in inner:
        if sub.name != "value" or sub.kind != "scalar":
            raise ConfigError(f"{path}:{sub.line}: {f.name} holds only 'value: ...', got {sub.name}")
    if len(inner) > 1:
        raise ConfigError(f"{path}:{inner[1].line}: {f.name} has 'value' twice")
    return inner[0].value if inner else None


def parse_batching_parameters(text: str, path: str = "<batching parameters>") -> BatchingParameters:
    """A TF Serving ``--batching_parameters_file`` (BatchingParameters text proto) -> ``BatchingParameters``.

    Errors are ``ConfigError`` naming ``path`` and the line: unknown fields, TF Serving
    fields this server does not implement, bad values, allowed sizes out of order.
    """
    values: Dict[str, Any] = {}
    lines: Dict[str, int] = {}
    allowed: List[int] = []
    allowed_lines: List[int] = []
    for f in _Reader(_tokenize(text, path), path).fields():
        where = f"{path}:{f.line}"
        if f.name in lines and f.name != "allowed_batch_sizes":
            raise ConfigError(f"{where}: {f.name} is set twice (first on line {lines[f.name]})")
        lines.setdefault(f.name, f.line)
        if f.name in _WRAPPED_INTS:
            token = _wrapped(f, path)
            values[f.name] = 0 if token is None else _int(token, f.name, path)
        elif f.name == "allowed_batch_sizes":
            if f.kind == "message":
                raise ConfigError(f"{where}: allowed_batch_sizes is a plain list: write allowed_batch_sizes: N "
                                  "(once per size) or allowed_batch_sizes: [N, M]")
            tokens = f.value if f.kind == "list" else [f.value]
            allowed += [_int(t, f.name, path) for t in tokens]
            allowed_lines += [t.line for t in tokens]
        elif f.name == "pad_variable_length_inputs":
            if f.kind != "scalar":
                raise ConfigError(f"{where}: pad_variable_length_inputs is a plain bool: write "
                                  "pad_variable_length_inputs: true")
            values[f.name] = _bool(f.value, f.name, path)
        elif f.name == "thread_pool_name":
            _wrapped(f, path)          # accepted for compatibility: this server has one pool of batch threads
        elif f.name == "enable_large_batch_splitting":
            token = _wrapped(f, path)
            if token is not None and _bool(token, f.name, path):
                raise ConfigError(f"{where}: enable_large_batch_splitting is not implemented by the embedded "
                                  "server: requests larger than max_batch_size are refused (INVALID_ARGUMENT)")
        elif f.name in _NOT_IMPLEMENTED:
            raise ConfigError(f"{where}: {f.name} is a TF Serving option the embedded server does not implement "
                              f"(it implements {', '.join(_KNOWN)})")
        else:
            raise ConfigError(f"{where}: unknown field {f.name!r} (BatchingParameters fields: {', '.join(_KNOWN)})")
    if allowed:
        values["allowed_batch_sizes"] = tuple(allowed)
    try:
        return BatchingParameters(**values)
    except _FieldError as e:
        if e.field_name == "allowed_batch_sizes" and e.index is not None:
            line = allowed_lines[e.index]
        elif e.field_name in lines:
            line = lines[e.field_name]
        else:   # a default value in conflict with another field (e.g. sizes ending below the default 1000)
            raise ConfigError(f"{path}: {e} (max_batch_size is not set: the default is "
                              f"{BatchingParameters.max_batch_size})") from None
        raise ConfigError(f"{path}:{line}: {e}") from None


def load_batching_parameters(path: str) -> BatchingParameters:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: batching parameters file not found")
    with open(path, encoding="utf-8") as f:
        return parse_batching_parameters(f.read(), path)


# ---------------------------------------------------------------------------------------------- scheduler
class _Task:
    """One request waiting in a batch: its inputs, and the slot its caller waits on."""

    __slots__ = ("inputs", "rows", "done", "outputs", "error")

    def __init__(self, inputs: Arrays, rows: int):
        self.inputs, self.rows = inputs, rows
        self.done = threading.Event()
        self.outputs: Optional[Arrays] = None
        self.error: Optional[ServingError] = None

    def finish(self, outputs: Optional[Arrays] = None, error: Optional[ServingError] = None) -> None:
        if not self.done.is_set():
            self.outputs, self.error = outputs, error
            self.done.set()


class _Batch:
    __slots__ = ("key", "tasks", "rows", "created", "deadline")

    def __init__(self, key: Hashable, now: float, timeout: float):
        self.key, self.tasks, self.rows = key, [], 0
        self.created, self.deadline = now, now + timeout


class BatchQueue:
    """The queue of one signature function; ``submit`` blocks its caller until its rows are back."""

    def __init__(self, scheduler: "BatchScheduler", run_batch: RunBatch, name: str):
        self.scheduler, self.run_batch, self.name = scheduler, run_batch, name
        self.open: Dict[Hashable, _Batch] = {}      # batches being filled, by input shapes
        self.ready: Deque[_Batch] = deque()         # closed batches waiting for a thread
        self.closed = False
        self.calls = self.requests = self.rows = 0  # model calls made; requests and rows they answered

    def submit(self, inputs: Arrays) -> Arrays:
        return self.scheduler.submit(self, inputs)

    def close(self) -> None:
        """Refuse new requests (UNAVAILABLE); those already queued still run."""
        self.scheduler.close_queue(self)

    def stats(self) -> Dict[str, int]:
        with self.scheduler.lock:
            return {"calls": self.calls, "requests": self.requests, "rows": self.rows,
                    "enqueued_batches": len(self.open) + len(self.ready)}


class BatchScheduler:
    """``num_batch_threads`` threads running the batches of every queue, oldest batch first."""

    def __init__(self, params: BatchingParameters, name: str = "batch"):
        self.params = params
        self.lock = threading.Condition()
        self._queues: List[BatchQueue] = []
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"serving-{name}-{i}", daemon=True)
                         for i in range(params.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def queue(self, run_batch: RunBatch, name: str = "") -> BatchQueue:
        with self.lock:
            if self._closed:
                raise ServingError(UNAVAILABLE, "the server is stopping")
            queue = BatchQueue(self, run_batch, name or f"queue {len(self._queues)}")
            self._queues.append(queue)
            return queue

    # ------------------------------------------------------------------ requests
    def submit(self, queue: BatchQueue, inputs: Arrays) -> Arrays:
        """Add a request to the queue's open batch and wait for its outputs (its rows of the merged call)."""
        rows = batch_rows(inputs)
        p = self.params
        if rows > p.max_batch_size:
            raise invalid(f"Task size {rows} is larger than maximum input batch size {p.max_batch_size} "
                          "(batching max_batch_size)")
        key = _shape_key(inputs, p.pad_variable_length_inputs)
        task = _Task(inputs, rows)
        with self.lock:
            if self._closed or queue.closed:
                raise ServingError(UNAVAILABLE, f"the batching queue of {queue.name} is closed (the version was "
                                                "unloaded or the server is stopping); retry")
            batch = queue.open.get(key)
            if batch is not None and batch.rows + rows > p.max_batch_size:
                queue.ready.append(queue.open.pop(key))      # no room left: it goes as it is
                batch = None
            if batch is None:
                if len(queue.open) + len(queue.ready) >= p.max_enqueued_batches:
                    raise ServingError(UNAVAILABLE, "The batch scheduling queue to which this task was submitted is "
                                                    f"full ({queue.name}: {p.max_enqueued_batches} batches waiting, "
                                                    "max_enqueued_batches); retry later")
                batch = queue.open[key] = _Batch(key, time.monotonic(), p.timeout_seconds)
            batch.tasks.append(task)
            batch.rows += rows
            if batch.rows == p.max_batch_size:
                queue.ready.append(queue.open.pop(key))
            self.lock.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def close_queue(self, queue: BatchQueue) -> None:
        with self.lock:
            queue.closed = True
            queue.ready.extend(queue.open.values())    # run what was accepted, without waiting for more
            queue.open.clear()
            if not queue.ready and queue in self._queues:
                self._queues.remove(queue)
            self.lock.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Stop: every waiting request gets UNAVAILABLE; batches already running finish; threads are joined."""
        with self.lock:
            self._closed = True
            waiting = [task for q in self._queues for batch in list(q.open.values()) + list(q.ready)
                       for task in batch.tasks]
            for queue in self._queues:
                queue.closed = True
                queue.open.clear()
                queue.ready.clear()
            self._queues.clear()
            self.lock.notify_all()
        for task in waiting:
            task.finish(error=ServingError(UNAVAILABLE, "the server is stopping"))
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ batch threads
    def _work(self) -> None:
        while True:
            with self.lock:
                while True:
                    if self._closed:
                        return
                    picked, wait = self._pick(time.monotonic())
                    if picked is not None:
                        break
                    self.lock.wait(wait)
            queue, batch = picked
            try:
                self._execute(queue, batch.tasks)
            except BaseException as e:  # noqa: BLE001 - a caller must never wait forever
                log.exception("batch of %s failed", queue.name)
                for task in batch.tasks:
                    task.finish(error=ServingError(INTERNAL, f"batching failed: {type(e).__name__}: {e}"))

    def _pick(self, now: float) -> Tuple[Optional[Tuple[BatchQueue, _Batch]], Optional[float]]:
        """The oldest batch that may run now (full, or past its timeout), else how long to wait for one."""
        best: Optional[Tuple[BatchQueue, _Batch]] = None
        wait: Optional[float] = None
        for queue in self._queues:
            candidates = [queue.ready[0]] if queue.ready else []
            for batch in queue.open.values():
                if batch.deadline <= now:
                    candidates.append(batch)
                else:
                    wait = batch.deadline - now if wait is None else min(wait, batch.deadline - now)
            for batch in candidates:
                if best is None or batch.created < best[1].created:
                    best = (queue, batch)
        if best is None:
            return None, wait
        queue, batch = best
        if queue.ready and queue.ready[0] is batch:
            queue.ready.popleft()
        else:
            del queue.open[batch.key]
        if queue.closed and not queue.open and not queue.ready:
            self._queues.remove(queue)
        return best, None

    def _execute(self, queue: BatchQueue, tasks: List[_Task]) -> None:
        """One model call for ``tasks``; every task is finished (outputs or error) when this returns."""
        rows = sum(t.rows for t in tasks)
        size = _allowed_size(rows, self.params.allowed_batch_sizes)
        try:
            merged = merge_inputs([t.inputs for t in tasks], self.params.pad_variable_length_inputs)
            if size > rows:
                merged = {k: _repeat_last_row(v, size - rows) for k, v in merged.items()}
            outputs = queue.run_batch(merged)
            _check_outputs(outputs, size)
        except ServingError as e:
            if e.code == INVALID_ARGUMENT and len(tasks) > 1:
                self._count(queue, 0, 0)
                for task in tasks:          # find the request(s) the model rejects: only they get the error
                    self._execute(queue, [task])
                return
            self._count(queue, len(tasks), rows)
            for task in tasks:
                task.finish(error=ServingError(e.code, e.message))
            return
        except Exception as e:  # noqa: BLE001 - answered to the callers, logged once here
            self._count(queue, len(tasks), rows)
            log.exception("model call for a batch of %d requests (%d rows) to %s failed", len(tasks), rows, queue.name)
            for task in tasks:
                task.finish(error=ServingError(INTERNAL, f"model execution failed: {type(e).__name__}: {e}"))
            return
        self._count(queue, len(tasks), rows)
        start = 0
        for task in tasks:
            task.finish({k: v[start:start + task.rows] for k, v in outputs.items()})
            start += task.rows

    def _count(self, queue: BatchQueue, requests: int, rows: int) -> None:
        with self.lock:
            queue.calls += 1
            queue.requests += requests
            queue.rows += rows


# ---------------------------------------------------------------------------------------------- arrays
def batch_rows(inputs: Arrays) -> int:
    """Rows of a request: every input has the batch dimension first, the same for all (else INVALID_ARGUMENT)."""
    if not inputs:
        raise invalid("the request has no inputs")
    rows = None
    for name, value in inputs.items():
        if np.ndim(value) == 0:
            raise invalid(f"input {name!r} is a scalar: batching needs the batch dimension first")
        if rows is not None and value.shape[0] != rows:
            raise invalid(f"all inputs must have the same batch size: {name!r} has {value.shape[0]}, others {rows}")
        rows = value.shape[0]
    if not rows:
        raise invalid("the batch is empty")
    return rows


def _dtype_key(value: np.ndarray) -> str:
    return "string" if value.dtype.kind in "OSU" else value.dtype.str


def _shape_key(inputs: Arrays, pad: bool) -> Hashable:
    """Requests with equal keys can be concatenated: same names and dtypes, same non-batch shapes (ranks if padding)."""
    return tuple(sorted((name, _dtype_key(v), v.ndim if pad else v.shape[1:]) for name, v in inputs.items()))


def _pad_value(value: np.ndarray) -> Any:
    if value.dtype.kind == "O":
        first = value.flat[0] if value.size else b""
        return "" if isinstance(first, str) else b""
    return np.zeros((), value.dtype).item() if value.dtype.kind not in "SU" else value.dtype.type()


def _pad_to(value: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    if tuple(value.shape[1:]) == tuple(shape):
        return value
    out = np.full((value.shape[0],) + tuple(shape), _pad_value(value), dtype=value.dtype)
    out[tuple(slice(0, n) for n in value.shape)] = value
    return out


def merge_inputs(requests: Sequence[Arrays], pad: bool = False) -> Arrays:
    """Concatenate requests along dimension 0; with ``pad``, shorter non-batch dimensions are zero-padded first."""
    merged = {}
    for name in requests[0]:
        arrays = [r[name] for r in requests]
        if pad:
            shape = np.max([a.shape[1:] for a in arrays], axis=0) if arrays[0].ndim > 1 else ()
            arrays = [_pad_to(a, tuple(int(n) for n in shape)) for a in arrays]
        if len({a.dtype for a in arrays}) > 1 and arrays[0].dtype.kind in "OSU":
            arrays = [a.astype(object) for a in arrays]   # bytes and str arrays of different widths
        merged[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    return merged


def _allowed_size(rows: int, allowed: Sequence[int]) -> int:
    return next((size for size in allowed if size >= rows), rows)


def _repeat_last_row(value: np.ndarray, extra: int) -> np.ndarray:
    return np.concatenate([value, np.repeat(value[-1:], extra, axis=0)], axis=0)


def _check_outputs(outputs: Arrays, rows: int) -> None:
    for name, value in outputs.items():
        if np.ndim(value) == 0 or value.shape[0] != rows:
            raise ServingError(INTERNAL, f"output {name!r} has shape {list(np.shape(value))}, not {rows} rows first: "
                                         "this signature cannot be batched (serve it without --enable-batching)")


# ---------------------------------------------------------------------------------------------- per server
class Batching:
    """Batching for a whole server: one scheduler, one queue per (model, version, signature), made on first use.

    ``owner`` is the object a queue serves (a loaded version); ``is_current(owner)``
    tells whether it is still served. A request that holds a version unloaded
    meanwhile gets no queue (the caller runs it alone), and ``retire()`` closes
    the queues of unloaded versions after their queued requests have run.
    """

    def __init__(self, params: BatchingParameters, is_current: Callable[[Any], bool] = lambda owner: True,
                 name: str = "batch"):
        self.params = params
        self.scheduler = BatchScheduler(params, name)
        self._is_current = is_current
        self._queues: Dict[Hashable, Tuple[Any, BatchQueue]] = {}
        self._lock = threading.Lock()

    def queue(self, key: Hashable, owner: Any, make_run_batch: Callable[[], RunBatch]) -> Optional[BatchQueue]:
        with self._lock:
            entry = self._queues.get(key)
        if entry is not None and entry[0] is owner:
            return entry[1]
        if not self._is_current(owner):
            return None
        with self._lock:
            entry = self._queues.get(key)
            if entry is not None and entry[0] is owner:
                return entry[1]
            if entry is not None:          # the version was reloaded from a rewritten folder
                entry[1].close()
            name = "/".join(map(str, key)) if isinstance(key, tuple) else str(key)
            queue = self.scheduler.queue(make_run_batch(), name)
            self._queues[key] = (owner, queue)
            return queue

    def retire(self) -> List[Hashable]:
        """Close the queues whose owner is no longer served; returns their keys."""
        with self._lock:
            entries = list(self._queues.items())
        stale = [(key, queue) for key, (owner, queue) in entries if not self._is_current(owner)]
        with self._lock:
            for key, queue in stale:
                if key in self._queues and self._queues[key][1] is queue:
                    del self._queues[key]
        for _, queue in stale:
            queue.close()
        return [key for key, _ in stale]

    def stats(self) -> Dict[str, Dict[str, int]]:
        with self._lock:
            queues = [queue for _, queue in self._queues.values()]
        return {queue.name: queue.stats() for queue in queues}

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._queues.clear()
        self.scheduler.close(timeout)


def batching_workers(params: BatchingParameters, minimum: int = 8, maximum: int = 256) -> int:
    """Request threads that let every batch thread fill a whole batch of one-row requests (within bounds).

    Requests wait in their own (server) thread, as in TF Serving: many request
    threads, few batch threads. gRPC's pool creates threads only when needed.
    """
    return max(minimum, min(params.max_batch_size * params.num_batch_threads, maximum))


__all__ = ["BatchingParameters", "parse_batching_parameters", "load_batching_parameters", "BatchScheduler",
           "BatchQueue", "Batching", "merge_inputs", "batch_rows", "batching_workers"]
