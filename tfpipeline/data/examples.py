"""Plain-Python containers for labelled data, shared by readers, catalog and pipelines.

Every example remembers where it came from (``origin``: ``"file:line"``) so
that errors found later (an unknown label, say) can name the offending line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from tfpipeline.config import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION  # noqa: F401
from tfpipeline.errors import DataError


@dataclass(frozen=True)
class TextExample:
    """One sentence (or sentence pair) with an optional class label."""

    text: str
    label: Optional[str] = None
    text_pair: Optional[str] = None
    origin: str = ""


@dataclass(frozen=True)
class ScoreExample:
    """One sentence (or pair) with numeric targets (``regression``: a rating, an intensity, ...)."""

    text: str
    targets: Optional[Tuple[float, ...]] = None
    text_pair: Optional[str] = None
    origin: str = ""


@dataclass(frozen=True)
class TokenExample:
    """One pre-split sentence with one BIO tag per token (tags optional at predict time)."""

    tokens: Sequence[str]
    tags: Optional[Sequence[str]] = None
    origin: str = ""


@dataclass(frozen=True)
class ImageExample:
    """One image with an optional class label.

    ``image`` is a file path (user folders and lists: read in the tf.data graph,
    so a large photo set is never held in memory) or encoded PNG/JPEG bytes
    (built-in datasets decoded from archives).
    """

    image: Union[str, bytes]
    label: Optional[str] = None
    origin: str = ""


@dataclass(frozen=True)
class PairExample:
    """A query and a text that matches it (an FAQ question and its answer, a user and an item they liked),
    optionally with a text that does not (a hard negative): one training row of the ``embedding`` task.

    ``group`` names what the positive is, when several queries share one
    (the answer's id): retrieval metrics count any text of the group as a hit.
    """

    query: str
    positive: str
    negative: Optional[str] = None
    group: Optional[str] = None
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
    files: Dict[str, str] = field(default_factory=dict)   # split -> the file it was read from (user data)
    skipped_rows: List[str] = field(default_factory=list)  # "file:line: problem" of rows skipped as malformed

    def source(self, split: str) -> str:
        """Where a split came from, for reports: its file, else the dataset name."""
        return self.files.get(split) or self.name

    def split(self, name: str) -> List:
        if name not in ("train", "validation", "test"):
            raise DataError(f"{self.name}: unknown split {name!r} (use train, validation or test)")
        return getattr(self, name)
