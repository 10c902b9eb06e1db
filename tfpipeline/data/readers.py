"""Readers for user files: CSV/TSV/JSONL (text, label[, text pair]) and CoNLL/BIO token files.

Readers are strict: an empty file, a missing column, bad UTF-8, an empty text
or a CoNLL line with the wrong number of fields raises ``DataError`` naming the
file and line, before anything is trained or written.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

from tfpipeline.config.train import BAD_ROW_MODES
from tfpipeline.data.examples import CLASSIFICATION, NER, TextExample, TokenExample
from tfpipeline.errors import DataError

SHOWN_BAD_ROWS = 5


@dataclass
class BadRows:
    """What to do with a malformed row: stop with its ``DataError`` (``error``) or skip and count it (``skip``).

    Only *row* problems can be skipped (a wrong field count, an empty field, a
    line that is not JSON, a CoNLL line that breaks its sentence, a bad tag);
    problems with the whole file (missing, not UTF-8, no header, a column the
    header lacks) always stop the run.
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


TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
CONLL_SUFFIXES = (".conll", ".bio", ".iob", ".conllu", ".txt")


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


def read_lines(path: str) -> List[str]:
    """The non-empty lines of a UTF-8 text file, stripped (texts to predict, warmup texts)."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def detect_format(path: str, fmt: Optional[str] = None) -> str:
    if fmt:
        fmt = fmt.lower()
        if fmt not in ("csv", "tsv", "jsonl", "conll"):
            raise DataError(f"{path}: unknown format {fmt!r} (use csv, tsv, jsonl or conll)")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext in TEXT_FORMATS:
        return TEXT_FORMATS[ext]
    if ext in CONLL_SUFFIXES or ext == "":
        return "conll"
    raise DataError(f"{path}: cannot tell the format from the extension {ext!r}; pass format=csv|tsv|jsonl|conll")


def read_classification_file(path: str, *, text_column: str = "text", label_column: Optional[str] = "label",
                             pair_column: Optional[str] = None, fmt: Optional[str] = None,
                             require_labels: bool = True, bad_rows: Optional[BadRows] = None) -> List[TextExample]:
    """Read (text, label[, text pair]) rows from CSV/TSV (with a header row) or JSONL.

    Malformed rows stop the read with a ``DataError`` naming file and line, unless
    ``bad_rows`` says to skip them (it then lists what was skipped).
    """
    bad_rows = bad_rows or BadRows()
    fmt = detect_format(path, fmt)
    if fmt == "conll":
        raise DataError(f"{path}: a classification file must be csv, tsv or jsonl")
    content = read_text(path)
    rows = _jsonl_rows(path, content, bad_rows) if fmt == "jsonl" else _delimited_rows(path, content, fmt, bad_rows)
    wanted = [text_column] + ([label_column] if label_column and require_labels else []) + \
             ([pair_column] if pair_column else [])
    examples = []
    for line, row in rows:
        missing = [c for c in wanted if c not in row]
        if missing:
            message = f"{path}:{line}: missing column {missing[0]!r} (found: {', '.join(map(str, row))})"
            if fmt != "jsonl":        # a CSV/TSV header without the column: no row can have it
                raise DataError(message)
            bad_rows.bad(message)
            continue
        try:
            text = _field(path, line, row, text_column)
            label = None
            if label_column and row.get(label_column) is not None:
                label = str(row[label_column]).strip()
                if require_labels and not label:
                    raise DataError(f"{path}:{line}: field {label_column!r} is empty")
            pair = _field(path, line, row, pair_column) if pair_column else None
        except DataError as e:
            bad_rows.bad(str(e))
            continue
        examples.append(TextExample(text=text, label=label or None, text_pair=pair, origin=f"{path}:{line}"))
    if not examples:
        raise DataError(f"{path}: no data rows" + (f" ({bad_rows.summary()})" if bad_rows.skipped else
                                                   " (only a header?)"))
    return examples


def _field(path: str, line: int, row: dict, column: str) -> str:
    value = row.get(column)
    if value is None or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise DataError(f"{path}:{line}: field {column!r} is empty or not a string")
    return str(value).strip()


def _delimited_rows(path: str, content: str, fmt: str, bad_rows: BadRows):
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
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
    for line, raw in enumerate(content.splitlines(), start=1):
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


def read_conll(path: str, *, token_column: int = 0, tag_column: int = -1, require_tags: bool = True,
               token_prefix: Optional[str] = None, bad_rows: Optional[BadRows] = None) -> List[TokenExample]:
    """Read a CoNLL/BIO file: one ``token<TAB or space>...tag`` per line, blank line between sentences.

    ``-DOCSTART-`` lines are skipped. ``token_prefix`` strips a prefix such as
    WikiANN's ``en:``. Every line of the file must have the same number of fields.
    A bad line stops the read, or with ``bad_rows`` in skip mode drops its whole
    sentence (a sentence with a hole would teach wrong tags).
    """
    bad_rows = bad_rows or BadRows()
    content = read_text(path)
    examples: List[TokenExample] = []
    tokens: List[str] = []
    tags: List[str] = []
    start_line = 0
    width = None
    broken = False

    def flush():
        if tokens and not broken:
            examples.append(TokenExample(tokens=tuple(tokens), tags=tuple(tags) if tags else None,
                                         origin=f"{path}:{start_line}"))
        tokens.clear()
        tags.clear()

    for line_no, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip()
        if not line:
            flush()
            broken = False
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if width is None:
            width = len(fields)
            if require_tags and width < 2:
                raise DataError(f"{path}:{line_no}: expected 'token<TAB>tag', got one field {line!r}")
        if not tokens:
            start_line = line_no
        try:
            if len(fields) != width:
                raise DataError(f"{path}:{line_no}: expected {width} fields like the first line, "
                                f"got {len(fields)}: {line!r}")
            if require_tags or width > 1:
                check_bio_tag(fields[tag_column].strip(), f"{path}:{line_no}")
        except DataError as e:
            bad_rows.bad(str(e), skipped=f"sentence from line {start_line} skipped")
            broken = True
        if broken:
            tokens.append("")            # keeps the sentence open until its blank line; never stored
            continue
        token = fields[token_column]
        if token_prefix and token.startswith(token_prefix):
            token = token[len(token_prefix):]
        tokens.append(token)
        if require_tags or width > 1:
            tags.append(fields[tag_column].strip())
    flush()
    if not examples:
        raise DataError(f"{path}: no sentences found" + (f" ({bad_rows.summary()})" if bad_rows.skipped else ""))
    return examples


def check_bio_tag(tag: str, where: str) -> None:
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I", "E", "S") or not kind:
        raise DataError(f"{where}: tag {tag!r} is not a BIO tag (expected O, B-TYPE or I-TYPE)")


TEXT_OPTIONS = ("text_column", "label_column", "pair_column")
CONLL_OPTIONS = ("token_column", "tag_column", "token_prefix")


def read_task_file(path: str, task: str, *, bad_rows: Optional[BadRows] = None, **options) -> list:
    """Read a user file for ``task`` (classification or ner) with the matching reader.

    Column options of the other task's reader are ignored, so a caller can pass
    one set of options (e.g. a config's) for either kind of file.
    """
    if task == CLASSIFICATION:
        return read_classification_file(path, bad_rows=bad_rows,
                                        **{k: v for k, v in options.items() if k in TEXT_OPTIONS})
    if task == NER:
        return read_conll(path, bad_rows=bad_rows, **{k: v for k, v in options.items() if k in CONLL_OPTIONS})
    raise DataError(f"unknown task {task!r} (use {CLASSIFICATION} or {NER})")
