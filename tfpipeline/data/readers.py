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
from typing import List, Optional

from tfpipeline.data.examples import CLASSIFICATION, NER, DataError, TextExample, TokenExample

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
                             require_labels: bool = True) -> List[TextExample]:
    """Read (text, label[, text pair]) rows from CSV/TSV (with a header row) or JSONL."""
    fmt = detect_format(path, fmt)
    if fmt == "conll":
        raise DataError(f"{path}: a classification file must be csv, tsv or jsonl")
    content = read_text(path)
    rows = _jsonl_rows(path, content) if fmt == "jsonl" else _delimited_rows(path, content, fmt)
    wanted = [text_column] + ([label_column] if label_column and require_labels else []) + \
             ([pair_column] if pair_column else [])
    examples = []
    for line, row in rows:
        missing = [c for c in wanted if c not in row]
        if missing:
            raise DataError(f"{path}:{line}: missing column {missing[0]!r} (found: {', '.join(map(str, row))})")
        text = _field(path, line, row, text_column)
        label = None
        if label_column and row.get(label_column) is not None:
            label = str(row[label_column]).strip()
            if require_labels and not label:
                raise DataError(f"{path}:{line}: field {label_column!r} is empty")
        pair = _field(path, line, row, pair_column) if pair_column else None
        examples.append(TextExample(text=text, label=label or None, text_pair=pair, origin=f"{path}:{line}"))
    if not examples:
        raise DataError(f"{path}: no data rows (only a header?)")
    return examples


def _field(path: str, line: int, row: dict, column: str) -> str:
    value = row.get(column)
    if value is None or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise DataError(f"{path}:{line}: field {column!r} is empty or not a string")
    return str(value).strip()


def _delimited_rows(path: str, content: str, fmt: str):
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
            if len(fields) != len(header):
                raise DataError(f"{path}:{start}: expected {len(header)} fields ({', '.join(header)}), "
                                f"got {len(fields)}")
            yield start, dict(zip(header, fields))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({e})") from None


def _jsonl_rows(path: str, content: str):
    for line, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
        yield line, row


def read_conll(path: str, *, token_column: int = 0, tag_column: int = -1, require_tags: bool = True,
               token_prefix: Optional[str] = None) -> List[TokenExample]:
    """Read a CoNLL/BIO file: one ``token<TAB or space>...tag`` per line, blank line between sentences.

    ``-DOCSTART-`` lines are skipped. ``token_prefix`` strips a prefix such as
    WikiANN's ``en:``. Every line of the file must have the same number of fields.
    """
    content = read_text(path)
    examples: List[TokenExample] = []
    tokens: List[str] = []
    tags: List[str] = []
    start_line = 0
    width = None

    def flush():
        if tokens:
            examples.append(TokenExample(tokens=tuple(tokens), tags=tuple(tags) if tags else None,
                                         origin=f"{path}:{start_line}"))
        tokens.clear()
        tags.clear()

    for line_no, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip()
        if not line:
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if width is None:
            width = len(fields)
            if require_tags and width < 2:
                raise DataError(f"{path}:{line_no}: expected 'token<TAB>tag', got one field {line!r}")
        if len(fields) != width:
            raise DataError(f"{path}:{line_no}: expected {width} fields like the first line, "
                            f"got {len(fields)}: {line!r}")
        if not tokens:
            start_line = line_no
        token = fields[token_column]
        if token_prefix and token.startswith(token_prefix):
            token = token[len(token_prefix):]
        tokens.append(token)
        if require_tags or width > 1:
            tag = fields[tag_column].strip()
            check_bio_tag(tag, f"{path}:{line_no}")
            tags.append(tag)
    flush()
    if not examples:
        raise DataError(f"{path}: no sentences found")
    return examples


def check_bio_tag(tag: str, where: str) -> None:
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I", "E", "S") or not kind:
        raise DataError(f"{where}: tag {tag!r} is not a BIO tag (expected O, B-TYPE or I-TYPE)")


def read_task_file(path: str, task: str, **kwargs) -> list:
    """Read a user file for ``task`` (classification or ner) with the matching reader."""
    if task == CLASSIFICATION:
        return read_classification_file(path, **kwargs)
    if task == NER:
        return read_conll(path, **kwargs)
    raise DataError(f"unknown task {task!r} (use {CLASSIFICATION} or {NER})")
