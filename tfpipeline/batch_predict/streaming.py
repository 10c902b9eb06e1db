"""Streamed prediction of one file: rows through tf.data, through the model, results written as they come.

classification, regression and embedding rows are tokenized inside tf.data, a window at a time, with the
model's own ``TextEncoder`` (sorted by token length, as training buckets them), and the model runs on the padded
features: tokenizing there overlaps it with the model, where the in-memory ``Predictor`` tokenizes eagerly
before each batch. ner rows (text: words, offsets and entity spans; CoNLL: pre-split sentences) and image paths
go through the predictor's own methods (``extract``, ``tag``, ``classify``), sorted by characters or words as
the predictor sorts. Either way a streamed result is the in-memory one for the same row (up to float
rounding from different padding). Results wait in a buffer of one window to be written in input order.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import tensorflow as tf
from tqdm import tqdm

from tfpipeline.batch_predict.output import BatchPredictReport, ResumeMismatch, resume_point
from tfpipeline.batch_predict.results import embedding_results, image_results, regression_results, \
    sentence_results, task_results
from tfpipeline.batch_predict.rows import CountedBadRows, RowReader, check_input, input_format
from tfpipeline.batch_predict.windows import WINDOW_BATCHES, encoded_batches, sorted_row_batches, window_dataset
from tfpipeline.bundle import ModelBundle
from tfpipeline.config import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, REGRESSION
from tfpipeline.data.tokenization import FEATURES
from tfpipeline.errors import ConfigError, DataError
from tfpipeline.inference import class_results

ENCODED_TASKS = (CLASSIFICATION, REGRESSION, EMBEDDING)   # tokenized in tf.data, model called on features


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
        """Predict every row of ``input_path`` into ``output_path`` (JSON lines, input order); see the package
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
                    results = image_results(self.predictor, texts, lines, input_path, images_from, bad_rows)
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
