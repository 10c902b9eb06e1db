"""Keep TensorFlow's start-up noise off a CPU user's terminal, without hiding real warnings or errors.

``tfpipeline`` sets ``TF_CPP_MIN_LOG_LEVEL=2`` (errors only) unless the user
set it, but TensorFlow 2.21 logs its CUDA probe before absl reads that level:
every command on a machine without CUDA printed "Could not find cuda drivers"
and "failed call to cuInit" (plus the oneDNN notice, twice). For the length of
a command, ``startup_noise_filtered`` routes file descriptor 2 through a pipe
and drops exactly these lines: absl-formatted INFO/WARNING lines (the level we
asked for would hide them anyway), absl's "before InitializeLog" notice, and
the CUDA-probe error lines. Everything else, including Python tracebacks and
absl ERROR lines, passes through unchanged. A user-set ``TF_CPP_MIN_LOG_LEVEL``
turns the filter off, so ``TF_CPP_MIN_LOG_LEVEL=0 tfpipeline ...`` shows all.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from typing import Iterator, Optional

from tfpipeline import _env

NOISE = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "                      # absl INFO / WARNING line
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*(?:cuInit|CUDA error|cuda drivers|"
    rb"Unable to register cu(?:DNN|FFT|BLAS) factory))")
ABSL_START = re.compile(rb"[IWE]\d{0,4}(?: |$)")
INIT_NOTICE = b"WARNING: All log messages before"
JOIN_SECONDS = 5.0


def is_noise(line: bytes) -> bool:
    return NOISE.match(line) is not None


def may_become_noise(partial: bytes) -> bool:
    """Could this unfinished line still turn out to be a noise line once its newline arrives?"""
    return bool(ABSL_START.match(partial)) or INIT_NOTICE.startswith(partial[:len(INIT_NOTICE)])


def filter_enabled() -> bool:
    """On unless the user set ``TF_CPP_MIN_LOG_LEVEL`` or stderr is not a real file descriptor."""
    if _env.USER_LOG_LEVEL is not None:
        return False
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _pump(read_fd: int, out_fd: int) -> None:
    """Copy ``read_fd`` to ``out_fd`` line by line, dropping noise lines.

    A trailing partial line is written at once unless it could be the start of
    an absl line (then it waits for its newline), so prompts and progress
    output are not delayed.
    """
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        kept = [line + b"\n" for line in lines if not is_noise(line)]
        if pending and not may_become_noise(pending):
            kept.append(pending)
            pending = b""
        if kept:
            os.write(out_fd, b"".join(kept))
    if pending and not is_noise(pending):
        os.write(out_fd, pending)
    os.close(read_fd)


@contextlib.contextmanager
def startup_noise_filtered(enabled: Optional[bool] = None) -> Iterator[None]:
    """Within the block, stderr (fd 2, so C++ logs too) passes through the noise filter."""
    if not (filter_enabled() if enabled is None else enabled):
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, original), name="stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)          # closes the pipe's last write end: the pump sees EOF and finishes
        pump.join(JOIN_SECONDS)
        os.close(original)
