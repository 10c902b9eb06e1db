"""The project's errors: one base class, one subclass per kind of problem.

Every message names what is wrong and where (file:line, field, folder), so the
CLI can print it as is (``tfpipeline: error: ...``, exit 2) and a Python caller
can catch ``TfpipelineError`` without also catching unrelated ``ValueError``s
from TensorFlow. The base derives from ``ValueError`` because every one of these
is a bad value handed in by the user (a file, a flag, a folder).

This module imports nothing, so every layer may use it.
"""
from __future__ import annotations


class TfpipelineError(ValueError):
    """Base class of every error tfpipeline raises on purpose."""


class DataError(TfpipelineError):
    """Bad input data: the message names the file (and line/field when known)."""


class ConfigError(TfpipelineError):
    """A bad option: unknown key, out-of-range value, contradictory flags, unreadable config file."""


class CheckpointError(TfpipelineError):
    """A checkpoint or model folder is missing, incomplete or of an unsupported kind."""


class ExportError(TfpipelineError):
    """An export cannot be written (bad name or version, existing version)."""


class MissingPackageError(TfpipelineError):
    """An optional package (offline weights, tensorflow-model-optimization, ...) is not installed."""


def op_error_text(message: str) -> str:
    """The line of a TensorFlow op error that says what was wrong with the input.

    A graph-mode error reads "Graph execution error:", then the Python stack of
    the node, then the op's own message (e.g. "Unknown image file format. One of
    JPEG, PNG, GIF, BMP required."), then the node name: only the op's message helps a client.
    """
    for line in message.splitlines():
        text = line.strip()
        if text and not line[:1].isspace() and not text.startswith(OP_ERROR_NOISE) and not text.endswith(":"):
            return text
    return message.splitlines()[0] if message else message


OP_ERROR_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "File ", "[[")
