"""``tfpipeline`` command line: parse flags into a config, then call one library function.

``parser`` holds the command table (flags generated from the config dataclasses
by ``flags``); each command lives in its own module (``tfpipeline.cli.train``,
...), which only turns the config into a library call and prints the result.
The command's module is imported after parsing, by name, so ``--help`` and
``tfpipeline datasets`` never load TensorFlow. TensorFlow's CUDA-probe lines on
CPU-only machines are filtered out of stderr while a command runs (``quiet``).
"""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional

from tfpipeline.cli.parser import build_config, build_parser
from tfpipeline.cli.quiet import startup_noise_filtered
from tfpipeline.errors import TfpipelineError

__all__ = ["main", "build_parser"]


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; a ``TfpipelineError`` (bad data, option, folder, ...) is one stderr line and exit 2."""
    args = build_parser().parse_args(argv)
    with startup_noise_filtered():
        try:
            config = build_config(args.command, args)
            command = importlib.import_module(f"tfpipeline.cli.{args.command}")
            return command.run(config, args)
        except TfpipelineError as e:
            print(f"tfpipeline: error: {e}", file=sys.stderr)
            return 2
