"""Write a folder completely or not at all: work in a staging folder, then one rename.

Model folders, run folders and export versions are all published this way, so
a crash, Ctrl-C or failed evaluation never leaves a half-written folder where
a later command (or a model server polling for new versions) would find it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Callable, Iterator, Optional, Type

from tfpipeline.errors import ConfigError, TfpipelineError


def check_output(path: str, overwrite: bool, *, error: Type[TfpipelineError] = ConfigError) -> None:
    """Refuse a path that is a file, or a non-empty folder unless ``overwrite``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise error(f"{path}: output exists and is a file, not a folder")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise error(f"{path}: output folder exists and is not empty (pass overwrite=True / --overwrite)")


def partial_path(path: str) -> str:
    """Where ``staged_output`` builds ``path`` (unless ``hidden``)."""
    return path.rstrip("/\\") + ".partial"


@contextlib.contextmanager
def staged_output(path: str, *, overwrite: bool = False, hidden: bool = False,
                  error: Type[TfpipelineError] = ConfigError, resume: bool = False,
                  keep_on_error: Optional[Callable[[str], bool]] = None) -> Iterator[str]:
    """Yield an empty staging folder; on success it becomes ``path`` in one rename.

    The check runs on entry, so a clash fails before any expensive work, and
    again before the rename (another writer may have published meanwhile). On
    any exception the staging folder is removed and ``path`` is untouched.
    ``hidden`` stages in a dot-folder beside ``path`` (what a model server
    polling the parent must not see); otherwise in ``<path>.partial``.

    For runs that can be resumed: ``resume`` continues in an existing
    ``<path>.partial`` instead of emptying it, and when the body fails (Ctrl-C
    included) ``keep_on_error(staging)`` returning True keeps the staging folder
    for that later run. It is still never published until the body succeeds.
    """
    check_output(path, overwrite, error=error)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if hidden:
        staging = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
    else:
        staging = partial_path(path)
        if not (resume and os.path.isdir(staging)):
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging)
    try:
        yield staging
        check_output(path, overwrite, error=error)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        if keep_on_error is None or not keep_on_error(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def scratch_output(prefix: str = "tfpipeline-") -> Iterator[str]:
    """A temporary folder that is never published and always removed: where a non-chief worker of a cluster
    writes what every worker must write but only the chief keeps (TensorFlow's multi-worker saving rule)."""
    scratch = tempfile.mkdtemp(prefix=prefix)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
