"""User files for the ``embedding`` task: CSV/TSV/JSONL rows of (query, positive[, negative]) texts.

A bi-encoder learns from pairs that match (an FAQ question and its answer); the
other positives of a batch serve as its negatives, and an optional hard negative
per row adds one that is close but wrong. The reader follows the text readers'
rules (``rows``): a CSV/TSV header without a named column stops the read, a row
with an empty query or positive is a bad row (``--on-bad-rows error|skip``), and
every message names the file and line.

The negative is optional per row: with ``negative_column`` set, an empty cell
(or a JSONL row without the key) leaves that row without a hard negative, since
in-batch negatives still train it. A negative equal to its positive contradicts
the row and is a bad row. Rows carry no ``group``: the positive text itself names
what matches (``sources.hold_out`` and the ranking helpers key on it).
"""
from __future__ import annotations

from typing import List, Optional

from tfpipeline.data.examples import PairExample
from tfpipeline.data.rows import BadRows, has_columns, read_text, row_field, table_format, table_rows
from tfpipeline.errors import DataError


def read_pair_file(path: str, *, query_column: str = "query", positive_column: str = "positive",
                   negative_column: Optional[str] = None, bad_rows: Optional[BadRows] = None) -> List[PairExample]:
    """Read (query, positive[, negative]) rows from a CSV/TSV (header row) or JSONL file.

    Errors name ``file:line``: a header without ``query_column``, ``positive_column``
    or ``negative_column`` (when given) stops the read, as does a JSONL file in
    which no row has ``negative_column``; an empty query or positive, a JSONL row
    without one, or a negative equal to its positive is a bad row.
    """
    bad_rows = bad_rows or BadRows()
    fmt = _table_format(path)
    required = [query_column, positive_column]
    header_columns = required + ([negative_column] if negative_column and fmt != "jsonl" else [])
    examples, negative_seen = [], False
    for line, row in table_rows(path, read_text(path), fmt, bad_rows):
        if not has_columns(path, line, row, header_columns, fmt, bad_rows):
            continue
        negative_seen = negative_seen or (negative_column in row)
        try:
            example = _pair(path, line, row, query_column, positive_column, negative_column)
        except DataError as e:
            bad_rows.bad(str(e))
            continue
        examples.append(example)
    if negative_column and fmt == "jsonl" and examples and not negative_seen:
        raise DataError(f"{path}: no row has the negative column {negative_column!r}")
    if not examples:
        raise DataError(f"{path}: no data rows" + (f" ({bad_rows.summary()})" if bad_rows.skipped else
                                                   " (only a header?)"))
    return examples


def _pair(path: str, line: int, row: dict, query_column: str, positive_column: str,
          negative_column: Optional[str]) -> PairExample:
    query = row_field(path, line, row, query_column)
    positive = row_field(path, line, row, positive_column)
    negative = _optional_field(path, line, row, negative_column)
    if negative is not None and negative == positive:
        raise DataError(f"{path}:{line}: the negative ({negative_column!r}) is the positive text")
    return PairExample(query=query, positive=positive, negative=negative, origin=f"{path}:{line}")


def _optional_field(path: str, line: int, row: dict, column: Optional[str]) -> Optional[str]:
    """The stripped text of an optional column, None when it is not asked for, absent or empty."""
    if not column or row.get(column) is None or not str(row[column]).strip():
        return None
    return row_field(path, line, row, column)   # still rejects a list or an object in a JSONL row


def _table_format(path: str) -> str:
    return table_format(path, "a pair file must be a .csv, .tsv or .jsonl file (columns: query, positive and "
                              "optionally a negative)")
