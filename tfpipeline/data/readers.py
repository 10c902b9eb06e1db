"""Readers for user files: CSV/TSV/JSONL (text, label[, text pair]), CoNLL/BIO token files, and the
per-task dispatch (``read_task_file``) that also routes image folders and image lists to ``image_files``
and (query, positive[, negative]) pair files to ``pair_files``.

Readers are strict: an empty file, a missing column, bad UTF-8, an empty text
or a CoNLL line with the wrong number of fields raises ``DataError`` naming the
file and line, before anything is trained or written. The bad-row rule and the
table parsing they share with the image readers live in ``rows``.
"""
from __future__ import annotations

import math
import os
from typing import List, Optional

from tfpipeline.data.examples import (CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION, ScoreExample,
                                      TextExample, TokenExample)
from tfpipeline.data.image_files import read_image_source
from tfpipeline.data.pair_files import read_pair_file
from tfpipeline.data.rows import (TABLE_FORMATS, BadRows, has_columns, read_text, row_field,  # noqa: F401
                                  summarize_bad_rows, table_rows)  # (BadRows, summarize_bad_rows: re-exported)
from tfpipeline.errors import DataError

CONLL_SUFFIXES = (".conll", ".bio", ".iob", ".conllu", ".txt")


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
    if ext in TABLE_FORMATS:
        return TABLE_FORMATS[ext]
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
    rows = table_rows(path, read_text(path), fmt, bad_rows)
    wanted = [text_column] + ([label_column] if label_column and require_labels else []) + \
             ([pair_column] if pair_column else [])
    examples = []
    for line, row in rows:
        if not has_columns(path, line, row, wanted, fmt, bad_rows):
            continue
        try:
            text = row_field(path, line, row, text_column)
            label = None
            if label_column and row.get(label_column) is not None:
                label = str(row[label_column]).strip()
                if require_labels and not label:
                    raise DataError(f"{path}:{line}: field {label_column!r} is empty")
            pair = row_field(path, line, row, pair_column) if pair_column else None
        except DataError as e:
            bad_rows.bad(str(e))
            continue
        examples.append(TextExample(text=text, label=label or None, text_pair=pair, origin=f"{path}:{line}"))
    if not examples:
        raise DataError(f"{path}: no data rows" + (f" ({bad_rows.summary()})" if bad_rows.skipped else
                                                   " (only a header?)"))
    return examples


def target_names(label_column: str) -> List[str]:
    """The regression targets named by ``label_column`` ("rating" or "valence,arousal")."""
    names = [name.strip() for name in label_column.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise DataError(f"label column {label_column!r}: give one or more distinct comma-separated column names")
    return names


def read_regression_file(path: str, *, text_column: str = "text", label_column: str = "label",
                         pair_column: Optional[str] = None, bad_rows: Optional[BadRows] = None) -> List[ScoreExample]:
    """Read (text, numeric target(s)[, text pair]) rows from CSV/TSV or JSONL.

    ``label_column`` names one target column or several, comma-separated. An
    empty cell, a value that is not a number, NaN or infinity is a bad row naming
    file, line and column.
    """
    bad_rows = bad_rows or BadRows()
    fmt = detect_format(path)
    if fmt == "conll":
        raise DataError(f"{path}: a regression file must be csv, tsv or jsonl")
    names = target_names(label_column)
    wanted = [text_column, *names] + ([pair_column] if pair_column else [])
    examples = []
    for line, row in table_rows(path, read_text(path), fmt, bad_rows):
        if not has_columns(path, line, row, wanted, fmt, bad_rows):
            continue
        try:
            text = row_field(path, line, row, text_column)
            targets = tuple(_number(path, line, row, name) for name in names)
            pair = row_field(path, line, row, pair_column) if pair_column else None
        except DataError as e:
            bad_rows.bad(str(e))
            continue
        examples.append(ScoreExample(text, targets, pair, origin=f"{path}:{line}"))
    if not examples:
        raise DataError(f"{path}: no data rows" + (f" ({bad_rows.summary()})" if bad_rows.skipped else
                                                   " (only a header?)"))
    return examples


def _number(path: str, line: int, row: dict, column: str) -> float:
    raw = row.get(column)
    text = "" if raw is None else str(raw).strip()
    if not text:
        raise DataError(f"{path}:{line}: field {column!r} is empty (a regression target must be a number)")
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{line}: field {column!r} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: field {column!r} is {text!r}; targets must be finite numbers")
    return value


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
IMAGE_OPTIONS = ("image_column", "label_column")
PAIR_OPTIONS = ("query_column", "positive_column", "negative_column")


def read_task_file(path: str, task: str, *, bad_rows: Optional[BadRows] = None, **options) -> list:
    """Read a user file (or, for image_classification, a folder) for ``task`` with the matching reader.

    classification: CSV/TSV/JSONL; regression: CSV/TSV/JSONL with numeric target column(s); ner: CoNLL/BIO; image_classification: a folder
    per class or a CSV/TSV/JSONL list of image paths (see ``image_files``);
    embedding: CSV/TSV/JSONL (query, positive[, negative]) pairs (see ``pair_files``). Column
    options of the other tasks' readers are ignored, so a caller can pass one set
    of options (e.g. a config's) for any kind of file.
    """
    if task == CLASSIFICATION:
        return read_classification_file(path, bad_rows=bad_rows, **_only(options, TEXT_OPTIONS))
    if task == REGRESSION:
        return read_regression_file(path, bad_rows=bad_rows, **_only(options, TEXT_OPTIONS))
    if task == NER:
        return read_conll(path, bad_rows=bad_rows, **_only(options, CONLL_OPTIONS))
    if task == IMAGE_CLASSIFICATION:
        return read_image_source(path, bad_rows=bad_rows, **_only(options, IMAGE_OPTIONS))
    if task == EMBEDDING:
        return read_pair_file(path, bad_rows=bad_rows, **_only(options, PAIR_OPTIONS))
    raise DataError(f"unknown task {task!r} (use {CLASSIFICATION}, {NER}, {REGRESSION}, {IMAGE_CLASSIFICATION} or "
                    f"{EMBEDDING})")


def _only(options: dict, names) -> dict:
    return {k: v for k, v in options.items() if k in names}
