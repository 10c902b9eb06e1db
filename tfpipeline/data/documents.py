"""The documents an ``embedding`` export searches: CSV/TSV/JSONL with an id and a text column, or plain text.

A plain ``.txt`` file is one document per non-empty line, its id the line
number. Tables need both columns; ids must be unique (a search result names
its document by id). Problems name the file and line; nothing is skipped:
an index that silently lacks documents answers wrongly.
"""
from __future__ import annotations

import os
from typing import List, Tuple

from tfpipeline.data.rows import TABLE_FORMATS, BadRows, has_columns, read_text, row_field, table_rows
from tfpipeline.errors import DataError


def read_documents(path: str, *, id_column: str = "id", text_column: str = "text") -> Tuple[List[str], List[str]]:
    """(ids, texts) of the documents in ``path``."""
    content = read_text(path)
    fmt = TABLE_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        rows = [(line, text.strip()) for line, text in enumerate(content.splitlines(), start=1) if text.strip()]
        ids, texts = [str(line) for line, _ in rows], [text for _, text in rows]
    else:
        ids, texts, seen = [], [], {}
        strict = BadRows("error")
        for line, row in table_rows(path, content, fmt, strict):
            has_columns(path, line, row, (id_column, text_column), fmt, strict)
            doc_id = row_field(path, line, row, id_column)
            if doc_id in seen:
                raise DataError(f"{path}:{line}: document id {doc_id!r} already used on line {seen[doc_id]}")
            seen[doc_id] = line
            ids.append(doc_id)
            texts.append(row_field(path, line, row, text_column))
    if not texts:
        raise DataError(f"{path}: no documents")
    return ids, texts
