"""Batch prediction over a file of any size: rows streamed through tf.data, results written as they come.

``StreamingPredictor.predict_file`` (or ``predict_file``) reads one row at a time (CSV/TSV/JSONL with a text
column, a text file with one text or image path per line, or CoNLL sentences for NER), so memory does not grow
with the file: a 1M-row file needs what a 10k-row one does (``bench/batch_predict.py`` measures it). Each result
is one JSON line carrying the row's ``line`` number (where the row starts, as errors cite it).

Why length-sorted windows rather than ``pipeline.py``'s fixed length buckets: rows are cut into windows of
``window_batches x batch_size`` rows, each window is sorted by length and cut into batches, so each batch is
padded only to its own longest row. ``bucket_by_sequence_length`` holds a row until its bucket fills, which for a
rare length can be the end of the file; results could then be written in input order only by buffering
everything behind that row. Here no row comes out more than one window late, so a buffer of one window puts
results back in **input order** with flat memory, and the output is always a prefix of the input's results:
``resume`` only needs its last line to know where to go on (a partial last line from a killed run is dropped and
redone).

classification, regression and embedding rows are tokenized inside tf.data, a window at a time, with the
model's own ``TextEncoder`` (sorted by token length, as training buckets them), and the model runs on the padded
features: tokenizing there overlaps it with the model, where the in-memory ``Predictor`` tokenizes eagerly
before each batch. ner rows (text: words, offsets and entity spans; CoNLL: pre-split sentences) and image paths
go through the predictor's own methods (``extract``, ``tag``, ``classify``), sorted by characters or words as
the predictor sorts. Either way a streamed result is the in-memory one for the same row (up to float
rounding from different padding).

Bad rows follow ``--on-bad-rows``: ``error`` stops at the first one with its file:line after writing every result
before it (fix the row, rerun with ``resume``); ``skip`` counts it and goes on. Layer: inference (imports data,
decoding, bundle, inference; nothing from training or the CLI).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION
from tfpipeline.config.commands import PREDICT_FORMATS
from tfpipeline.data.readers import CONLL_SUFFIXES
from tfpipeline.data.rows import SHOWN_BAD_ROWS, TABLE_FORMATS, BadRows, has_columns, row_field, table_rows
from tfpipeline.data.tokenization import FEATURES
from tfpipeline.decoding import merge_entities
from tfpipeline.errors import ConfigError, DataError
from tfpipeline.inference import class_results

WINDOW_BATCHES = 32       # rows sorted together = this x batch size: the most a row can be reordered
RESUME_CHUNK = 1 << 16    # bytes read at a time from the end of an output being resumed
PAIR_TASKS = (CLASSIFICATION, REGRESSION)
ENCODED_TASKS = (CLASSIFICATION, REGRESSION, EMBEDDING)   # tokenized in tf.data, model called on features


# --------------------------------------------------------------------------- results of one batch
def task_results(predictor, task: str, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> List[Dict]:
    """One JSON-ready result per text (image models: per image path or bytes), in order.

    Shared by both ``predict`` paths (texts given on the command line and streamed files).
    classification / image_classification: ``label``, ``score``, ``scores``; regression: ``predictions``
    ({target: value}, in the targets' units); ner: ``text``, ``tokens``, ``entities``; embedding: ``embedding``.
    """
    texts = list(texts)
    if pairs is not None and task not in PAIR_TASKS:
        raise ConfigError(f"a second text (pair column) is for {' and '.join(PAIR_TASKS)} models, not {task}")
    if task == CLASSIFICATION:
        return predictor.classify(texts, pairs)
    if task == IMAGE_CLASSIFICATION:
        return predictor.classify(texts)
    if task == REGRESSION:
        return regression_results(predictor.regress(texts, pairs), predictor.labels.names)
    if task == NER:
        return predictor.extract(texts)
    if task == EMBEDDING:
        return embedding_results(predictor.embed(texts))
    raise DataError(f"cannot predict with a {task} model")


def regression_results(values: np.ndarray, names: Sequence[str]) -> List[Dict]:
    """[N, targets] predictions in target units -> ``{"predictions": {target: value}}`` per row."""
    return [{"predictions": {name: float(v) for name, v in zip(names, row)}} for row in values]


def embedding_results(vectors: np.ndarray) -> List[Dict]:
    return [{"embedding": [round(float(v), 6) for v in vector]} for vector in vectors]


def sentence_results(predictor, sentences: Sequence[Sequence[str]]) -> List[Dict]:
    """NER on pre-split sentences (CoNLL input): ``extract``'s shape, with the words joined by spaces as text."""
    results = []
    for words, tags in zip(sentences, predictor.tag(sentences)):
        tokens, start = [], 0
        for word, tag in zip(words, tags):
            tokens.append({"text": word, "label": tag, "start": start, "end": start + len(word)})
            start += len(word) + 1
        text = " ".join(words)
        results.append({"text": text, "tokens": tokens, "entities": merge_entities(text, tokens)})
    return results


# --------------------------------------------------------------------------- reading rows one at a time
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


class ResumeMismatch(DataError):
    """The output to resume does not end on a row of this input."""


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


# --------------------------------------------------------------------------- tf.data: stream, sort, batch
ROW_FIELDS = ("seq", "line", "end", "id")   # carried with every row: output order, line, progress, id


def window_dataset(rows: Callable[[], Iterator[Row]], window: int, *, sentences: bool = False) -> tf.data.Dataset:
    """The rows of ``rows()`` (called anew each time the dataset is iterated) in windows of ``window`` rows.

    Each element holds one window's ``seq`` (position among the rows streamed, to put results back in order),
    ``line``, ``end``, ``id``, ``key`` (characters, or words: the in-memory predictors' sort key) and
    ``text``/``pair`` (or ``words``, ragged). The generator hands tf.data a window at a time: one Python call
    per row would cost more than a small model does.
    """
    spec = {name: tf.TensorSpec([None], tf.string if name == "id" else tf.int64) for name in (*ROW_FIELDS, "key")}
    if sentences:
        spec.update(words=tf.TensorSpec([None], tf.string), word_counts=tf.TensorSpec([None], tf.int64))
    else:
        spec.update(text=tf.TensorSpec([None], tf.string), pair=tf.TensorSpec([None], tf.string))

    def generate():
        columns = {name: [] for name in spec}
        for seq, row in enumerate(rows()):
            for name, value in (("seq", seq), ("line", row.line), ("end", row.end), ("id", row.id)):
                columns[name].append(value)
            if sentences:
                columns["key"].append(len(row.words))
                columns["word_counts"].append(len(row.words))
                columns["words"].extend(row.words)
            else:
                columns["key"].append(len(row.text) + len(row.pair))
                columns["text"].append(row.text)
                columns["pair"].append(row.pair)
            if len(columns["seq"]) == window:
                yield columns
                columns = {name: [] for name in spec}
        if columns["seq"]:
            yield columns

    ds = tf.data.Dataset.from_generator(generate, output_signature=spec)
    if sentences:
        ds = ds.map(lambda w: {**{k: v for k, v in w.items() if k not in ("words", "word_counts")},
                               "words": tf.RaggedTensor.from_row_lengths(w["words"], w["word_counts"])})
    return ds


def sorted_row_batches(windows: tf.data.Dataset, *, batch_size: int) -> tf.data.Dataset:
    """Batches of raw rows, each window sorted by ``key`` (rows for the predictors' own methods: NER on text or
    sentences, images)."""
    def sort_window(window):
        order = tf.argsort(window["key"], stable=True)
        return {name: tf.gather(values, order) for name, values in window.items()}

    return windows.map(sort_window).unbatch().ragged_batch(batch_size).prefetch(2)


def encoded_batches(windows: tf.data.Dataset, encoder, *, with_pairs: bool, batch_size: int) -> tf.data.Dataset:
    """(row fields, padded model features) batches: each window is tokenized in one in-graph call (as
    ``data.pipeline`` tokenizes), sorted by token length and cut into batches padded to their longest row.
    Tokenizing here, in tf.data's threads, overlaps it with the model instead of running it eagerly per batch."""
    def encode_window(window):
        features = encoder.encode(window["text"], window["pair"] if with_pairs else None)
        order = tf.argsort(features["input_ids"].row_lengths(), stable=True)
        return ({name: tf.gather(window[name], order) for name in ROW_FIELDS},
                {name: tf.gather(values, order) for name, values in features.items()})

    batches = windows.map(encode_window).unbatch().ragged_batch(batch_size)
    return batches.map(lambda fields, features: (fields, encoder.pad(features))).prefetch(2)


# --------------------------------------------------------------------------- resuming an output
def resume_point(output: str) -> Tuple[int, int]:
    """(input line of the last result in ``output``, bytes of a partial last line dropped from it).

    The line is 0 for a missing or empty output. A partial last line (a run killed mid-write) is cut off here,
    so the resumed run appends whole lines only.
    """
    if not os.path.isfile(output) or os.path.getsize(output) == 0:
        return 0, 0
    size = os.path.getsize(output)
    with open(output, "rb+") as f:
        data, start = b"", size
        while start > 0:   # read back from the end until the last two newlines (or the file's start) are in
            start = max(0, start - RESUME_CHUNK)
            f.seek(start)
            data = f.read(size - start - len(data)) + data
            end = data.rfind(b"\n")
            if end >= 0 and (data.rfind(b"\n", 0, end) >= 0 or start == 0):
                break
        end = data.rfind(b"\n")
        complete = start + end + 1   # bytes of whole lines (0: none)
        if complete < size:
            f.truncate(complete)
    if end < 0:
        return 0, size
    last = data[data.rfind(b"\n", 0, end) + 1:end]
    try:
        line = json.loads(last)["line"]
        if not isinstance(line, int):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{output}: its last line is not a result of tfpipeline predict --input "
                        f"({last[:80]!r}); cannot resume it") from None
    return line, size - complete


# --------------------------------------------------------------------------- the run
@dataclass
class BatchPredictReport:
    input: str
    output: str
    written: int = 0              # results written by this run
    done_before: int = 0          # rows the resumed output already had
    dropped_bytes: int = 0        # partial last line removed before resuming
    bad_row_count: int = 0        # bad rows skipped (--on-bad-rows skip)
    bad_rows: str = ""            # their summary: count and the first few file:line messages
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        parts = [f"[tfpipeline] {self.written:,} row(s) predicted into {self.output} in {self.seconds:.1f} s "
                 f"({rate:,.0f} rows/s)"]
        if self.done_before:
            dropped = f", dropped a partial last line ({self.dropped_bytes} bytes)" if self.dropped_bytes else ""
            parts.append(f"resumed after the {self.done_before:,} row(s) already there{dropped}")
        if self.bad_rows:
            parts.append(self.bad_rows)
        return "; ".join(parts)


def check_input(task: str, fmt: str, pair_column: Optional[str]) -> None:
    """``ConfigError`` for an input the model cannot take."""
    if fmt == "conll" and task != NER:
        raise ConfigError(f"CoNLL input holds pre-split sentences for ner models; this is a {task} model "
                          "(give a .txt, .csv, .tsv or .jsonl file)")
    if pair_column and task not in PAIR_TASKS:
        raise ConfigError(f"--pair-column is for {' and '.join(PAIR_TASKS)} models, not {task}")
    if pair_column and fmt not in ("csv", "tsv", "jsonl"):
        raise ConfigError("--pair-column needs a table input (csv, tsv, jsonl)")


class StreamingPredictor:
    """A model bundle set up for streamed files; reuse one for several files, one at a time (its model call and
    input pipelines are traced once).

    classification, regression and embedding rows are tokenized inside tf.data and the model is called on the
    padded features (``encoded_batches``); ner and image rows go through the bundle's predictor (``predictor``,
    also the in-memory reference) in length-sorted batches of raw rows (``sorted_row_batches``).
    """

    def __init__(self, bundle: ModelBundle, batch_size: int = 64):
        self.bundle, self.task, self.batch_size = bundle, bundle.task, batch_size
        self.predictor = bundle.predictor(batch_size)
        self._model = None
        if self.task in ENCODED_TASKS:
            spec = {name: tf.TensorSpec([None, None], tf.int32) for name in FEATURES}
            self._model = tf.function(lambda features: bundle.model(features, training=False),
                                      input_signature=[spec])
        self._reader: Optional[RowReader] = None   # the file being read (one at a time)
        self._pipelines: Dict[Tuple[bool, bool, int], tf.data.Dataset] = {}

    def batches(self, reader: RowReader, *, sentences: bool, with_pairs: bool,
                window_batches: int) -> tf.data.Dataset:
        """The batches of ``reader``'s rows. The pipeline is built (and its tokenizer traced) once per kind of
        input and reused for every file: it reads whichever ``RowReader`` is current."""
        self._reader = reader
        key = (sentences, with_pairs, window_batches)
        if key not in self._pipelines:
            windows = window_dataset(lambda: self._reader.rows(), window_batches * self.batch_size,
                                     sentences=sentences)
            if self._model is not None:
                self._pipelines[key] = encoded_batches(windows, self.bundle.encoder, with_pairs=with_pairs,
                                                       batch_size=self.batch_size)
            else:
                self._pipelines[key] = sorted_row_batches(windows, batch_size=self.batch_size)
        return self._pipelines[key]

    def encoded_results(self, features: Dict[str, tf.Tensor]) -> List[Dict]:
        """Results of one batch of padded features (the shapes ``task_results`` gives)."""
        outputs = self._model(features)
        if self.task == CLASSIFICATION:
            return class_results(tf.nn.softmax(outputs, axis=-1).numpy(), self.bundle.labels)
        if self.task == REGRESSION:
            return regression_results(self.bundle.target_scaling.restore(outputs.numpy()), self.bundle.labels.names)
        return embedding_results(outputs.numpy())

    def predict_file(self, input_path: str, output_path: str, *, input_format_name: Optional[str] = None,
                     text_column: str = "text", pair_column: Optional[str] = None, id_column: Optional[str] = None,
                     on_bad_rows: str = "error", resume: bool = False, window_batches: int = WINDOW_BATCHES,
                     progress: bool = True) -> BatchPredictReport:
        """Predict every row of ``input_path`` into ``output_path`` (JSON lines, input order); see the module
        doc. Each line: ``{"line": N, ["id": ...,] ...the task's result (task_results)}``. Without ``resume`` an
        existing non-empty output is an error (nothing is overwritten); with it, rows up to the output's last
        ``line`` are skipped."""
        fmt = input_format(input_path, input_format_name)
        check_input(self.task, fmt, pair_column)
        if not os.path.isfile(input_path):
            raise DataError(f"{input_path}: file not found")
        if os.path.getsize(input_path) == 0:
            raise DataError(f"{input_path}: file is empty")
        if not resume and os.path.isfile(output_path) and os.path.getsize(output_path) > 0:
            raise ConfigError(f"{output_path} exists: add --resume to continue it, or remove it to start over")
        after_line, dropped = resume_point(output_path) if resume else (0, 0)
        bad_rows = CountedBadRows(on_bad_rows)
        reader = RowReader(input_path, fmt, bad_rows, text_column=text_column, pair_column=pair_column,
                           id_column=id_column, after_line=after_line)
        batches = self.batches(reader, sentences=fmt == "conll", with_pairs=pair_column is not None,
                               window_batches=window_batches)
        images_from = os.path.dirname(os.path.abspath(input_path))
        report = BatchPredictReport(input_path, output_path, dropped_bytes=dropped)
        started = time.perf_counter()
        bar = tqdm(total=os.path.getsize(input_path), unit="B", unit_scale=True, unit_divisor=1024,
                   file=sys.stderr, desc=os.path.basename(input_path), disable=not progress, dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 10.0)
        pending: Dict[int, Tuple[Optional[str], int]] = {}   # seq -> (JSON line, None: bad; input bytes to its end)
        next_seq, shown_bytes, error = 0, 0, None
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        try:
            with open(output_path, "a" if resume else "w", encoding="utf-8") as out:
                try:
                    for batch in batches:
                        for seq, line, end, row_id, result in self._batch_results(batch, input_path, images_from,
                                                                                  pair_column, bad_rows):
                            record = None if result is None else \
                                {"line": line, **({"id": row_id} if id_column else {}), **result}
                            pending[seq] = (None if record is None else json.dumps(record, ensure_ascii=False), end)
                        while next_seq in pending:   # results back in input order, as far as they are complete
                            text, end = pending.pop(next_seq)
                            next_seq += 1
                            if text is not None:
                                out.write(text + "\n")
                                report.written += 1
                            shown_bytes, step = end, end - shown_bytes
                            bar.update(step)
                        out.flush()
                        rate = report.written / max(time.perf_counter() - started, 1e-9)
                        bar.set_postfix_str(f"{report.written:,} rows, {rate:,.0f} rows/s", refresh=False)
                except DataError as e:   # a bad image row in error mode: stop after the results before it
                    error = e
                error = error or reader.error
                if error is None:   # rows dropped at the end (bad, or blank) count as read too
                    bar.update(max(0, reader.bytes_read - shown_bytes))
        finally:
            bar.close()
            if not resume and report.written == 0 and os.path.isfile(output_path) \
                    and not os.path.getsize(output_path):
                os.remove(output_path)   # leave no empty output behind a run that produced nothing
        report.seconds = time.perf_counter() - started
        report.done_before = reader.rows_done_before
        report.bad_rows, report.bad_row_count = bad_rows.summary(), bad_rows.count
        if error is not None:
            kept = report.written + report.done_before
            if isinstance(error, ResumeMismatch) or not kept:
                raise error
            raise DataError(f"{error} (the {kept:,} result(s) before it are in {output_path}: add --resume to go "
                            "on from there)")
        if reader.rows_seen == 0:
            raise DataError(f"{input_path}: no rows to predict"
                            + (f" ({bad_rows.summary()})" if bad_rows.count else ""))
        return report

    def _batch_results(self, batch, input_path: str, images_from: str, pair_column: Optional[str],
                       bad_rows: CountedBadRows) -> Iterator[Tuple[int, int, int, str, Optional[Dict]]]:
        """(seq, line, end, id, result) of each row of one batch; result None: an image row that could not be
        read (a bad row, skipped)."""
        if self._model is not None:
            fields, features = batch
            results = self.encoded_results(features)
        else:
            fields = batch
            if "words" in batch:
                sentences = [[w.decode("utf-8") for w in words] for words in batch["words"].to_list()]
                results = sentence_results(self.predictor, sentences)
            else:
                texts = [t.decode("utf-8") for t in batch["text"].numpy()]
                if self.task == IMAGE_CLASSIFICATION:
                    lines = batch["line"].numpy().tolist()
                    results = _image_results(self.predictor, texts, lines, input_path, images_from, bad_rows)
                else:
                    pairs = [p.decode("utf-8") for p in batch["pair"].numpy()] if pair_column else None
                    results = task_results(self.predictor, self.task, texts, pairs)
        seqs, lines, ends = (fields[name].numpy().tolist() for name in ("seq", "line", "end"))
        ids = [i.decode("utf-8") for i in fields["id"].numpy()]
        yield from zip(seqs, lines, ends, ids, results)


def predict_file(bundle: ModelBundle, input_path: str, output_path: str, *, batch_size: int = 64,
                 **options) -> BatchPredictReport:
    """``StreamingPredictor(bundle, batch_size).predict_file(input_path, output_path, **options)``."""
    return StreamingPredictor(bundle, batch_size).predict_file(input_path, output_path, **options)


def _image_results(predictor, paths: List[str], lines: List[int], input_path: str, images_from: str,
                   bad_rows: CountedBadRows) -> List[Optional[Dict]]:
    """Image rows: paths relative to the input file; a missing or undecodable image is a bad row (None)."""
    full = [p if os.path.isabs(p) else os.path.join(images_from, p) for p in paths]
    try:
        return predictor.classify(full)
    except DataError:
        pass
    results: List[Optional[Dict]] = []
    for path, line in zip(full, lines):   # find the bad ones: one image at a time
        try:
            results.append(predictor.classify([path])[0])
        except DataError as e:
            bad_rows.bad_row(line, f"{input_path}:{line}: {e}")   # raises in error mode
            results.append(None)
    return results
