"""Row-level reading shared by the text and image readers: the bad-row rule and CSV/TSV/JSONL rows.

It sits below both ``readers`` (text files, and the per-task dispatch) and
``image_files`` (image folders and lists), so the two read tables the same way
(same file:line messages, same ``--on-bad-rows`` behaviour) without importing
each other.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Sequence, Tuple, Union

from tfpipeline.config.train import BAD_ROW_MODES
from tfpipeline.errors import DataError

SHOWN_BAD_ROWS = 5
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


@dataclass
class BadRows:
    """What to do with a malformed row: stop with its ``DataError`` (``error``) or skip and count it (``skip``).

    Only *row* problems can be skipped (a wrong field count, an empty field, a
    line that is not JSON, a CoNLL line that breaks its sentence, a bad tag, an
    unreadable image); problems with the whole file (missing, not UTF-8, no
    header, a column the header lacks) always stop the run.
    """

    mode: str = "error"
    skipped: List[str] = field(default_factory=list)   # "file:line: problem", in reading order

    def __post_init__(self):
        if self.mode not in BAD_ROW_MODES:
            raise DataError(f"on_bad_rows must be one of {', '.join(BAD_ROW_MODES)}, not {self.mode!r}")

    def bad(self, message: str, skipped: str = "") -> None:
        """Raise ``message`` (error mode) or record it, with what was dropped (skip mode)."""
        if self.mode == "error":
            raise DataError(message)
        self.skipped.append(f"{message} ({skipped})" if skipped else message)

    def summary(self) -> str:
        return summarize_bad_rows(self.skipped)


def summarize_bad_rows(skipped: List[str]) -> str:
    """'N bad row(s) skipped: first; second; ...' (the first few locations), or '' when none were."""
    if not skipped:
        return ""
    shown = "; ".join(skipped[:SHOWN_BAD_ROWS])
    more = f"; ... {len(skipped) - SHOWN_BAD_ROWS} more" if len(skipped) > SHOWN_BAD_ROWS else ""
    return f"{len(skipped)} bad row(s) skipped: {shown}{more}"


def read_text(path: str) -> str:
    """Read a whole file as UTF-8; bad bytes are reported with their line number."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start}); "
                        "re-encode the file as UTF-8") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def table_format(path: str, expected: str) -> str:
    """csv, tsv or jsonl from ``path``'s suffix; any other suffix is an error saying what was ``expected``."""
    fmt = TABLE_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise DataError(f"{path}: {expected}")
    return fmt


def table_rows(path: str, content: Union[str, Iterable[str]], fmt: str,
               bad_rows: BadRows) -> Iterator[Tuple[int, dict]]:
    """(line, {column: value}) of each data row of a csv, tsv (header row first) or jsonl file's ``content``:
    its whole text, or its lines read one at a time (``batch_predict`` streams files of any size)."""
    if fmt == "jsonl":
        return _jsonl_rows(path, content, bad_rows)
    return _delimited_rows(path, content, fmt, bad_rows)


def has_columns(path: str, line: int, row: dict, columns: Sequence[str], fmt: str, bad_rows: BadRows) -> bool:
    """Whether ``row`` has every column; a CSV/TSV header without one stops the read (no row can have it),
    a JSONL row without one is a bad row."""
    missing = [c for c in columns if c not in row]
    if not missing:
        return True
    message = f"{path}:{line}: missing column {missing[0]!r} (found: {', '.join(map(str, row))})"
    if fmt != "jsonl":
        raise DataError(message)
    bad_rows.bad(message)
    return False


def row_field(path: str, line: int, row: dict, column: str) -> str:
    """The stripped text of ``row[column]``; empty or non-scalar values are a ``DataError`` naming file:line."""
    value = row.get(column)
    if value is None or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise DataError(f"{path}:{line}: field {column!r} is empty or not a string")
    return str(value).strip()


def _delimited_rows(path: str, content: str, fmt: str, bad_rows: BadRows):
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.reader(io.StringIO(content, newline="") if isinstance(content, str) else content,
                        delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{path}:1: unreadable header ({e})") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(f"{path}:1: header row is empty")
    try:
        line = reader.line_num + 1  # rows may span lines (quoted newlines): report where a row starts
        for fields in reader:
            start, line = line, reader.line_num + 1
            if not fields or not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):   # also the stray second line of an unquoted multi-line text
                bad_rows.bad(f"{path}:{start}: expected {len(header)} fields ({', '.join(header)}), "
                             f"got {len(fields)}")
                continue
            yield start, dict(zip(header, fields))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({e})") from None


def _jsonl_rows(path: str, content: str, bad_rows: BadRows):
    for line, raw in enumerate(content.splitlines() if isinstance(content, str) else content, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            bad_rows.bad(f"{path}:{line}: invalid JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            bad_rows.bad(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
            continue
        yield line, row
