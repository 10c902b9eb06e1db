"""Where ``predict`` and ``explain`` get their texts: arguments, then ``--file`` (one per line), else stdin."""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from tfpipeline.data.readers import read_lines
from tfpipeline.errors import DataError


def input_texts(arguments: Sequence[str], file: Optional[str], command: str) -> List[str]:
    """The texts given as arguments plus those of ``file``; with neither, the non-empty lines of a piped stdin."""
    texts = list(arguments)
    if file:
        texts += read_lines(file)
    if not texts and not sys.stdin.isatty():
        texts = [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise DataError(f"nothing to {command}: pass texts as arguments, --file, or on stdin")
    return texts
