"""Batch prediction over a file of any size: rows streamed through tf.data, results written as they come.

``StreamingPredictor.predict_file`` (or ``predict_file``) reads one row at a time (CSV/TSV/JSONL with a text
column, a text file with one text or image path per line, or CoNLL sentences for NER), so memory does not grow
with the file: a 1M-row file needs what a 10k-row one does (``bench/batch_predict.py`` measures it). Each result
is one JSON line carrying the row's ``line`` number (where the row starts, as errors cite it). Results come out
in **input order**, so the output is always a prefix of the input's results and ``resume`` goes on after its
last line. Bad rows follow ``--on-bad-rows`` (``error``: stop at the first, after writing every result before
it; ``skip``: count it and go on).

The modules, each importing only those above it:

- ``output``: the output file: where a resumed run goes on (``resume_point``), and the run's report.
- ``rows``: the input file's rows, read lazily, and its bad rows counted.
- ``windows``: rows through tf.data in length-sorted windows (why windows, not buckets: see there).
- ``results``: model outputs as JSON-ready result dicts (``task_results``, shared with ``predict`` on texts).
- ``streaming``: ``StreamingPredictor``, which runs the model over the batches and writes the results in order.

Layer: inference (imports data, decoding, bundle, inference; nothing from training or the CLI).
"""
from tfpipeline.batch_predict.output import BatchPredictReport, resume_point
from tfpipeline.batch_predict.results import task_results
from tfpipeline.batch_predict.streaming import StreamingPredictor, predict_file

__all__ = ["StreamingPredictor", "predict_file", "task_results", "resume_point", "BatchPredictReport"]
