"""Plain-Python containers for labelled data, shared by readers, catalog and pipelines.

Every example remembers where it came from (``origin``: ``"file:line"``) so
that errors found later (an unknown label, say) can name the offending line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

CLASSIFICATION = "classification"
NER = "ner"
TASKS = (CLASSIFICATION, NER)


class DataError(ValueError):
    """Bad input data. The message always names the file (and line/field when known)."""


@dataclass(frozen=True)
class TextExample:
    """One sentence (or sentence pair) with an optional class label."""

    text: str
    label: Optional[str] = None
    text_pair: Optional[str] = None
    origin: str = ""


@dataclass(frozen=True)
class TokenExample:
    """One pre-split sentence with one BIO tag per token (tags optional at predict time)."""

    tokens: Sequence[str]
    tags: Optional[Sequence[str]] = None
    origin: str = ""


@dataclass
class TaskData:
    """A task's splits plus its ordered label names (the label map saved with the model)."""

    name: str
    task: str
    train: List = field(default_factory=list)
    validation: List = field(default_factory=list)
    test: List = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    description: str = ""

    def split(self, name: str) -> List:
        if name not in ("train", "validation", "test"):
            raise DataError(f"{self.name}: unknown split {name!r} (use train, validation or test)")
        return getattr(self, name)
