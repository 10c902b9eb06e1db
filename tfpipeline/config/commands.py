"""Options of the commands that use a trained model: ``evaluate``, ``predict``, ``export``, ``serve``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from tfpipeline.config.options import check_choice, check_positive, check_required, opt
from tfpipeline.config.train import BAD_ROW_MODES
from tfpipeline.errors import ConfigError

SPLITS = ("train", "validation", "test")
PREDICT_FORMATS = ("csv", "tsv", "jsonl", "conll", "txt")   # predict --input (tfpipeline.batch_predict)
# export --optimize (tfpipeline.export.compact_encoder): compact where the model has a compact twin else none,
# the Keras graph, the compact BERT graph, + XLA, + bfloat16 matmuls, + model.tflite (tfpipeline.export.tflite_text)
(OPTIMIZE_AUTO, OPTIMIZE_NONE, OPTIMIZE_COMPACT, OPTIMIZE_COMPACT_XLA, OPTIMIZE_COMPACT_BF16,
 OPTIMIZE_COMPACT_TFLITE) = EXPORT_OPTIMIZATIONS = ("auto", "none", "compact", "compact+xla", "compact+bf16",
                                                    "compact+tflite")


@dataclass
class EvaluateConfig:
    model_dir: str = opt(None, "trained model folder", required=True)
    dataset: Optional[str] = opt(None, "built-in dataset to score on")
    split: str = opt("test", "split of --dataset", choices=SPLITS)
    file: Optional[str] = opt(None, "labelled CSV/TSV/JSONL (classification) or CoNLL (ner) file to score on; "
                              "image models: a folder per class or a CSV/JSONL of image path and label")
    text_column: str = opt("text", "CSV/TSV/JSONL column with the text")
    label_column: str = opt("label", "CSV/TSV/JSONL column with the label")
    pair_column: Optional[str] = opt(None, "optional second-text column")
    image_column: str = opt("path", "CSV/JSONL column with the image path (image models)")
    query_column: str = opt("query", "CSV/JSONL column with the query (embedding models)")
    positive_column: str = opt("positive", "CSV/JSONL column with the matching text (embedding models)")
    limit: Optional[int] = opt(None, "score only the first N examples")
    output: Optional[str] = opt(None, "also save the report: a path ending in .html writes a report page "
                                 "(PNG plots beside it), any other path JSON")

    def validate(self) -> "EvaluateConfig":
        check_choice(self.split, "split", SPLITS)
        check_positive(self, "limit")
        if not self.dataset and not self.file:
            raise ConfigError("give --dataset NAME or --file FILE to evaluate on")
        return self


@dataclass
class PredictConfig:
    model_dir: str = opt(None, "trained model folder", required=True)
    file: Optional[str] = opt(None, "text file, one text (image models: one image path) per line (also: "
                              "arguments or stdin)")
    json: bool = opt(False, "print one JSON result per line")
    batch_size: int = opt(64, "texts per model call")
    input: Optional[str] = opt(None, "a file to predict row by row, streamed (any size): .csv/.tsv/.jsonl (the "
                               "--text-column), .txt (one text, or image path, per line) or .conll (ner: one token "
                               "per line, blank line between sentences); results go to --output")
    output: Optional[str] = opt(None, "JSON-lines results of --input, one line per row in input order, each with "
                                "the row's line number; written as they come")
    input_format: Optional[str] = opt(None, "format of --input (default: from its extension)",
                                      choices=PREDICT_FORMATS)
    text_column: str = opt("text", "--input column with the text (image models: the image path, relative to the "
                           "file)")
    pair_column: Optional[str] = opt(None, "--input column with the second text (sentence-pair models)")
    id_column: Optional[str] = opt(None, "--input column copied into each result as its id")
    on_bad_rows: str = opt("error", "a malformed row of --input: stop with its file:line (the results before it "
                           "are kept: fix it and --resume) or skip it and count it in the summary",
                           choices=BAD_ROW_MODES)
    resume: bool = opt(False, "continue an --output left by an earlier run: skip the rows already in it (a "
                       "partial last line of a killed run is dropped and redone)")
    progress: bool = opt(True, "progress bar on stderr with rate and ETA (--input)")

    def validate(self) -> "PredictConfig":
        check_positive(self, "batch_size")
        check_choice(self.input_format, "input_format", PREDICT_FORMATS, optional=True)
        check_choice(self.on_bad_rows, "on_bad_rows", BAD_ROW_MODES)
        if bool(self.input) != bool(self.output):
            raise ConfigError("--input and --output go together: the rows of one file, the results to a "
                              ".jsonl file")
        if self.resume and not self.input:
            raise ConfigError("--resume continues an --output of --input")
        if self.input and self.file:
            raise ConfigError("give --input FILE (streamed, results to --output) or --file (texts printed), "
                              "not both")
        return self


@dataclass
class TextsOptions:
    """Command-line input and output of commands that classify raw texts (e.g. ``zeroshot``)."""

    file: Optional[str] = opt(None, "text file, one text per line (besides the texts given as arguments)")
    json: bool = opt(False, "print one JSON result per line")


@dataclass
class ExportConfig:
    model_dir: str = opt(None, "trained model folder (tfpipeline train output)", required=True)
    base_dir: str = opt(None, "model base folder: writes BASE/NAME/VERSION/", required=True)
    name: str = opt(None, "model name (the serving URL /v1/models/NAME)", required=True)
    version: Optional[int] = opt(None, "integer version (default: highest existing + 1)")
    warmup_file: Optional[str] = opt(None, "text file, one sample text per line, for the warmup requests")
    optimize: str = opt(OPTIMIZE_AUTO, "serving graph: compact (BERT text models: the same weights in a fused "
                        "encoder graph with a fraction of the ops; same logits), none (the Keras model as "
                        "trained), auto (compact where the model has one, else none), compact+xla (also "
                        "XLA-compiles it: TF Serving needs --xla_cpu_compilation_enabled) or compact+bf16 "
                        "(bfloat16 weights and matmuls: for CPUs with AVX512_BF16 or AMX; predictions can "
                        "differ slightly) or compact+tflite (classification: also writes model.tflite, tokenizer "
                        "included, served by TF Serving --prefer_tflite_model / serve --prefer-tflite-model); "
                        "see docs/serving.md",
                        choices=EXPORT_OPTIMIZATIONS)

    def validate(self) -> "ExportConfig":
        check_positive(self, "version")
        check_choice(self.optimize, "optimize", EXPORT_OPTIMIZATIONS)
        return self


@dataclass
class IndexConfig(ExportConfig):
    """An embedding model's export with a document index: its ``search`` signature ranks these documents."""

    documents: str = opt(None, "CSV/TSV/JSONL with an id and a text column, or a .txt file with one document "
                               "per line (id = line number)", required=True)
    id_column: str = opt("id", "column with the document id")
    text_column: str = opt("text", "column with the document text")
    top_k: int = opt(10, "documents the search signature returns per query")

    def validate(self) -> "IndexConfig":
        check_required(self)
        check_positive(self, "version", "top_k")
        check_choice(self.optimize, "optimize", EXPORT_OPTIMIZATIONS)
        return self


@dataclass
class ServeConfig:
    model_base: str = opt(None, "folder of NAME/VERSION/ exports", required=True)
    host: str = opt("127.0.0.1", "bind address (0.0.0.0 for all interfaces)")
    grpc_port: int = opt(8500, "gRPC port (0 = any free port, -1 = off)")
    rest_port: int = opt(8501, "REST port (0 = any free port, -1 = off)")
    max_batch_size: int = opt(64, "largest accepted batch")
    max_text_bytes: int = opt(10_000, "longest accepted text (UTF-8 bytes)")
    max_image_bytes: int = opt(20 << 20, "largest accepted encoded image (inputs named *_bytes, tf.Example "
                               "feature image)")
    poll_seconds: float = opt(5.0, "how often to look for new versions (0 = never)")
    keep_versions: Optional[int] = opt(None, "serve only the newest N versions (default: all)")
    intra_op_threads: int = opt(0, "threads one op may use (0 = all cores); 1 lowers batch-1 latency on "
                                "small CPUs")
    inter_op_threads: int = opt(0, "ops run at the same time (0 = TF default)")
    enable_batching: bool = opt(False, "merge concurrent requests to the same signature into one model call "
                                "(TF Serving's --enable_batching; see docs/serving.md)")
    batching_parameters_file: Optional[str] = opt(None, "TF Serving BatchingParameters text proto "
                                                  "(max_batch_size, batch_timeout_micros, max_enqueued_batches, "
                                                  "num_batch_threads, allowed_batch_sizes); needs --enable-batching; "
                                                  "default: TF Serving's defaults")
    prefer_tflite_model: bool = opt(False, "answer from a version's model.tflite (export --optimize "
                                    "compact+tflite) where it has one: faster at batch 1 (TF Serving's "
                                    "--prefer_tflite_model); classify and predict_pair stay on the SavedModel")
    tflite_interpreters: int = opt(1, "TFLite interpreters per version with --prefer-tflite-model, the cores "
                                   "shared among them (TF Serving's --num_tflite_interpreters_per_pool)")

    def validate(self) -> "ServeConfig":
        check_positive(self, "max_batch_size", "max_text_bytes", "max_image_bytes", "keep_versions",
                       "tflite_interpreters")
        if self.batching_parameters_file and not self.enable_batching:
            raise ConfigError("batching_parameters_file is given but batching is off: add --enable-batching "
                              "(TF Serving would silently ignore the file)")
        if self.batching_parameters_file and not os.path.isfile(self.batching_parameters_file):
            raise ConfigError(f"{self.batching_parameters_file}: batching parameters file not found")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError("thread counts must be >= 0 (0 = TensorFlow's default)")
        if self.poll_seconds < 0:
            raise ConfigError(f"poll_seconds must be >= 0, got {self.poll_seconds}")
        return self
