"""Reading the rows of an input file one at a time, and accounting for its bad rows.

Rows are read lazily (CSV/TSV/JSONL with a text column, a text file with one text or image path per line, or
CoNLL sentences for NER), so memory does not grow with the file. Bad rows follow ``--on-bad-rows``: ``error``
stops at the first one with its file:line (the results before it are written first: fix the row, rerun with
``resume``); ``skip`` counts it and goes on, keeping only the first few messages.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

from tfpipeline.batch_predict.output import ResumeMismatch
from tfpipeline.config import CLASSIFICATION, NER, REGRESSION
from tfpipeline.config.commands import PREDICT_FORMATS
from tfpipeline.data.readers import CONLL_SUFFIXES
from tfpipeline.data.rows import SHOWN_BAD_ROWS, TABLE_FORMATS, BadRows, has_columns, row_field, table_rows
from tfpipeline.errors import ConfigError, DataError

PAIR_TASKS = (CLASSIFICATION, REGRESSION)


def input_format(path: str, fmt: Optional[str] = None) -> str:
    """csv, tsv, jsonl, conll or txt: ``fmt`` if given, else from the extension (.txt: one row per line)."""
    if fmt:
        if fmt not in PREDICT_FORMATS:
            raise ConfigError(f"input format must be one of {', '.join(PREDICT_FORMATS)}, not {fmt!r}")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext in TABLE_FORMATS:
        return TABLE_FORMATS[ext]
    if ext == ".txt":
        return "txt"
    if ext in CONLL_SUFFIXES:
        return "conll"
    raise DataError(f"{path}: cannot tell the format from the extension {ext!r}; pass --input-format "
                    f"{'|'.join(PREDICT_FORMATS)}")


class CountedBadRows(BadRows):
    """``BadRows`` that keeps only the first few messages (a file of a million bad rows must not fill memory),
    and ignores rows before ``after_line`` (handled by the run being resumed).

    ``bad`` is the readers' call (the reader keeps ``current_line``); the prediction loop, which finds bad
    images, calls ``bad_row`` with the row's line.
    """

    def __init__(self, mode: str):
        super().__init__(mode)
        self.count = 0
        self.current_line = 0
        self.after_line = 0

    def bad(self, message: str, skipped: str = "") -> None:
        self.bad_row(self.current_line, message, skipped)

    def bad_row(self, line: int, message: str, skipped: str = "") -> None:
        if line <= self.after_line:
            return
        super().bad(message, skipped)   # raises in error mode
        self.count += 1
        del self.skipped[SHOWN_BAD_ROWS:]

    def summary(self) -> str:
        if not self.count:
            return ""
        more = f"; ... {self.count - len(self.skipped)} more" if self.count > len(self.skipped) else ""
        return f"{self.count} bad row(s) skipped: {'; '.join(self.skipped)}{more}"



@dataclass
class Row:
    line: int                  # where the row starts in the input (1-based)
    end: int                   # bytes of the input read up to the row's end (progress)
    text: str = ""             # the text, or an image path
    pair: str = ""
    id: str = ""
    words: Sequence[str] = ()  # CoNLL sentences


class RowReader:
    """The rows of one input file, read lazily; ``rows()`` skips rows up to ``after_line`` (a resumed run).

    A ``DataError`` (a bad row in error mode, or a problem with the whole file) ends the rows early and is
    kept in ``error``: tf.data would otherwise wrap it into an opaque op error, and the caller first writes
    every result before it, then raises it.
    """

    def __init__(self, path: str, fmt: str, bad_rows: CountedBadRows, *, text_column: str = "text",
                 pair_column: Optional[str] = None, id_column: Optional[str] = None, after_line: int = 0):
        self.path, self.fmt, self.bad_rows = path, fmt, bad_rows
        self.text_column, self.pair_column, self.id_column = text_column, pair_column, id_column
        self.after_line = bad_rows.after_line = after_line
        self.line_number = 0          # lines read so far
        self.bytes_read = 0
        self.rows_seen = 0            # rows found, those skipped as already done included
        self.rows_done_before = 0     # rows skipped because the output has them
        self.error: Optional[DataError] = None

    def lines(self) -> Iterator[str]:
        """The file's lines, decoded one at a time (bad UTF-8 names its line), counting lines and bytes."""
        with open(self.path, "rb") as f:
            for raw in f:
                self.line_number += 1
                self.bytes_read += len(raw)
                self.bad_rows.current_line = self.line_number
                try:
                    yield raw.decode("utf-8-sig" if self.line_number == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{self.path}:{self.line_number}: not valid UTF-8 (byte {raw[e.start]:#04x}); "
                                    "re-encode the file as UTF-8") from None

    def rows(self) -> Iterator[Row]:
        """The rows after ``after_line``; that line must start a row (else the output being resumed belongs to
        another file, and nothing is predicted)."""
        resumed_at_a_row = not self.after_line
        try:
            source = {"txt": self._text_rows, "conll": self._sentences}.get(self.fmt, self._table_rows)
            for row in source():
                self.rows_seen += 1
                if row.line <= self.after_line:
                    self.rows_done_before += 1
                    resumed_at_a_row = resumed_at_a_row or row.line == self.after_line
                    continue
                if not resumed_at_a_row:
                    raise ResumeMismatch(f"{self.path}: the output being resumed ends with the result of line "
                                    f"{self.after_line}, but no row of this file starts there: is it the output "
                                    "of another file?")
                yield row
        except DataError as e:
            self.error = e

    def _text_rows(self) -> Iterator[Row]:
        for text in self.lines():
            if text.strip():
                yield Row(self.line_number, self.bytes_read, text.strip())

    def _table_rows(self) -> Iterator[Row]:
        columns = [c for c in (self.text_column, self.pair_column, self.id_column) if c]
        for line, row in table_rows(self.path, self.lines(), self.fmt, self.bad_rows):
            if not has_columns(self.path, line, row, columns, self.fmt, self.bad_rows):
                continue
            try:
                yield Row(line, self.bytes_read, row_field(self.path, line, row, self.text_column),
                          row_field(self.path, line, row, self.pair_column) if self.pair_column else "",
                          row_field(self.path, line, row, self.id_column) if self.id_column else "")
            except DataError as e:
                self.bad_rows.bad(str(e))

    def _sentences(self) -> Iterator[Row]:
        """CoNLL: the first field of each line is the token (gold tags or other columns are ignored); a blank
        line ends a sentence; every line has the first line's number of fields, else its sentence is bad."""
        words: List[str] = []
        start, width, broken = 0, None, False
        for text in self.lines():
            line = text.strip()
            if not line:
                if words and not broken:
                    yield Row(start, self.bytes_read, words=words)
                words, broken = [], False
                continue
            if line.startswith("-DOCSTART-"):
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            width = width or len(fields)
            if not words and not broken:
                start = self.line_number
            if len(fields) != width and not broken:
                broken = True
                self.bad_rows.bad(f"{self.path}:{self.line_number}: expected {width} fields like the first line, "
                                  f"got {len(fields)}: {line!r}", skipped=f"sentence from line {start} skipped")
            words.append(fields[0])
        if words and not broken:
            yield Row(start, self.bytes_read, words=words)


def check_input(task: str, fmt: str, pair_column: Optional[str]) -> None:
    """``ConfigError`` for an input the model cannot take."""
    if fmt == "conll" and task != NER:
        raise ConfigError(f"CoNLL input holds pre-split sentences for ner models; this is a {task} model "
                          "(give a .txt, .csv, .tsv or .jsonl file)")
    if pair_column and task not in PAIR_TASKS:
        raise ConfigError(f"--pair-column is for {' and '.join(PAIR_TASKS)} models, not {task}")
    if pair_column and fmt not in ("csv", "tsv", "jsonl"):
        raise ConfigError("--pair-column needs a table input (csv, tsv, jsonl)")
