"""Options of the recipes that start from a trained model folder or a checkpoint:
``distill``, ``continual``, ``compress`` and ``zeroshot``.

Their data options are ``DataOptions`` (the same flags and help as ``train``);
when no data is given they fall back to the dataset recorded in the model folder.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

from tfpipeline.config.options import check_choice, check_positive, check_required, opt
from tfpipeline.config.train import DEFAULT_CHECKPOINT, DataOptions
from tfpipeline.errors import ConfigError

STUDENT_INIT = ("alternate", "bottom")
CONTINUAL_METHODS = ("none", "rehearsal", "ewc", "ewc+rehearsal")
QUANTIZATIONS = ("dynamic", "int8", "float32")
ZEROSHOT_METHODS = ("auto", "similarity", "cloze")


@dataclass
class DistillConfig(DataOptions):
    """A fine-tuned teacher folder -> a shallower student folder."""

    teacher_dir: str = opt(None, "trained model folder (the teacher)", required=True)
    output_dir: str = opt(None, "student model folder to write", required=True)
    student_layers: int = opt(3, "encoder layers in the student")
    student_init: str = opt("alternate", "start from N evenly spaced teacher layers ending at the top "
                            "(alternate) or the bottom N", choices=STUDENT_INIT)
    temperature: float = opt(2.0, "softmax temperature of the soft targets")
    alpha: float = opt(0.5, "weight of the hard-label loss (1 - alpha: soft targets)")
    epochs: int = opt(3, "training epochs (the best by validation accuracy is kept)")
    learning_rate: Optional[float] = opt(None, "peak AdamW learning rate (auto: the recipe of the teacher's "
                                         "checkpoint, per task)", auto=True)
    batch_size: Optional[int] = opt(None, "examples per step (auto: the recipe's)", auto=True)
    max_length: Optional[int] = opt(None, "longest token sequence (default: the teacher's)")
    warmup_ratio: float = opt(0.1, "share of steps with linear warmup")
    seed: int = opt(13, "random seed")
    overwrite: bool = opt(False, "replace an existing output folder")
    quiet: bool = opt(False, "no progress or report output")

    def validate(self) -> "DistillConfig":
        check_required(self)
        self.validate_data()
        check_choice(self.student_init, "student_init", STUDENT_INIT)
        check_positive(self, "student_layers", "epochs", "batch_size", "max_length")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        return self


@dataclass
class ContinualConfig:
    """How to continue training on a new task (the data comes separately)."""

    method: str = opt("ewc+rehearsal", "what protects the old task", choices=CONTINUAL_METHODS)
    replay_fraction: float = opt(0.2, "old examples replayed, as a fraction of the new training set")
    ewc_lambda: float = opt(1.0, "strength of the (mean-normalised) Fisher penalty")
    fisher_examples: int = opt(200, "old-task examples used to estimate the Fisher diagonal")
    epochs: int = opt(3, "training epochs on the new task")
    learning_rate: Optional[float] = opt(None, "peak AdamW learning rate (auto: the recipe of the model's "
                                         "checkpoint)", auto=True)
    batch_size: Optional[int] = opt(None, "examples per step (auto: the recipe's)", auto=True)
    warmup_ratio: float = opt(0.1, "share of steps with linear warmup")
    seed: int = opt(13, "random seed")

    @property
    def uses_ewc(self) -> bool:
        return "ewc" in self.method

    @property
    def uses_rehearsal(self) -> bool:
        return "rehearsal" in self.method

    def validate(self) -> "ContinualConfig":
        check_choice(self.method, "method", CONTINUAL_METHODS)
        if not 0.0 <= self.replay_fraction <= 10.0:
            raise ConfigError(f"replay_fraction must be in [0, 10], got {self.replay_fraction}")
        if self.ewc_lambda < 0:
            raise ConfigError(f"ewc_lambda must be >= 0, got {self.ewc_lambda}")
        check_positive(self, "fisher_examples", "epochs", "batch_size")
        return self


@dataclass
class OldTaskOptions:
    """Where ``continual`` finds the old task's data when the model folder's record is not enough."""

    old_dataset: Optional[str] = opt(None, "built-in dataset the model was trained on (default: the one the "
                                     "model folder records)")
    old_train_file: Optional[str] = opt(None, "old task's labelled CSV/TSV/JSONL (replay and Fisher examples)")
    old_validation_file: Optional[str] = opt(None, "old task's validation file")
    old_test_file: Optional[str] = opt(None, "old task's evaluation file (default: its validation split)")

    def data_options(self, new: DataOptions) -> DataOptions:
        """The old task's ``DataOptions``: its own dataset/files with the new task's columns and limits.

        With neither an old dataset nor an old train file, the result names no data, so
        ``data_from_options`` falls back to what the model folder records.
        """
        return dataclasses.replace(new, dataset=self.old_dataset, train_file=self.old_train_file,
                                   validation_file=self.old_validation_file, test_file=self.old_test_file)


@dataclass
class ContinualRunOptions:
    """What a ``continual`` run starts from and produces: one saved model, or a comparison that saves none."""

    model_dir: str = opt(None, "trained classification model folder (the old task)", required=True)
    output_dir: Optional[str] = opt(None, "continual model folder to write (not with --compare)")
    overwrite: bool = opt(False, "replace an existing output folder")
    compare: List[str] = opt(help="run each method from the same start and print one row per method "
                             "(saves no model)", factory=list, choices=CONTINUAL_METHODS)
    json: bool = opt(False, "print the report (or comparison) as JSON")
    quiet: bool = opt(False, "no training progress")

    def validate(self) -> "ContinualRunOptions":
        check_required(self)
        for method in self.compare:
            check_choice(method, "compare method", CONTINUAL_METHODS)
        if self.compare and self.output_dir:
            raise ConfigError("--compare trains one throwaway model per method and saves none; drop --output-dir "
                              "(or run without --compare to save the chosen method)")
        if not self.compare and not self.output_dir:
            raise ConfigError("give --output-dir for the continual model (or --compare m1,m2 to only compare "
                              "methods)")
        return self


@dataclass
class CompressConfig(DataOptions):
    """TFLite export of a model folder, optionally after magnitude pruning."""

    model_dir: str = opt(None, "trained classification model folder", required=True)
    output: str = opt(None, "output folder (or a path ending in .tflite)", required=True)
    quantize: str = opt("dynamic", "TFLite weights: dynamic-range int8, full-integer int8 or float32",
                        choices=QUANTIZATIONS)
    prune_sparsity: Optional[float] = opt(None, "magnitude-prune encoder Dense kernels to this sparsity")
    prune_epochs: int = opt(1, "fine-tuning epochs while pruning")
    learning_rate: float = opt(3e-5, "learning rate of the pruning fine-tune")
    batch_size: int = opt(32, "batch size of the pruning fine-tune")
    max_length: Optional[int] = opt(None, "fixed TFLite sequence length (default: the model's)")
    calibration_examples: int = opt(100, "representative examples for int8 calibration")
    evaluate: bool = opt(True, "score the TFLite model (accuracy, agreement with float, latency)")
    seed: int = opt(13, "random seed")

    def validate(self) -> "CompressConfig":
        check_required(self)
        self.validate_data()
        check_choice(self.quantize, "quantize", QUANTIZATIONS)
        if self.prune_sparsity is not None and not 0.0 < self.prune_sparsity < 1.0:
            raise ConfigError(f"prune_sparsity must be in (0, 1), got {self.prune_sparsity}")
        check_positive(self, "prune_epochs", "batch_size", "max_length", "calibration_examples")
        return self

    @property
    def needs_data(self) -> bool:
        """Pruning and int8 calibration cannot run without examples."""
        return bool(self.prune_sparsity) or self.quantize == "int8"


@dataclass
class ZeroShotConfig:
    """Zero-/few-shot classification by prompts, without (or with little) labelled data."""

    labels: List[str] = opt(help="candidate labels, comma-separated", factory=list)
    method: str = opt("auto", "cloze: masked-LM prompt + label words (needs an MLM head); similarity: "
                      "sentence-embedding similarity to label prompts; auto: cloze if the checkpoint has "
                      "an MLM head", choices=ZEROSHOT_METHODS)
    template: Optional[str] = opt(None, "similarity: prompt with {} for the label word (default 'This review "
                                  "is {}.'); cloze: {text} and one [MASK] (default '{text} It was [MASK].')")
    verbalizer: Optional[str] = opt(None, "label words: 'positive=good,great;negative=bad,awful'")
    model: str = opt(DEFAULT_CHECKPOINT, "checkpoint alias or folder")
    max_length: int = opt(128, "longest token sequence")
    shots_file: Optional[str] = opt(None, "labelled CSV/TSV/JSONL of few-shot examples")
    text_column: str = opt("text", "column with the text in --shots-file")
    label_column: str = opt("label", "column with the label in --shots-file")
    pair_column: Optional[str] = opt(None, "optional second-text column in --shots-file")
    dataset: Optional[str] = opt(None, "built-in dataset: evaluate on its test split (and draw --shots from it)")
    shots: int = opt(0, "with --dataset: sample N shots per class from its training split")
    limit: Optional[int] = opt(None, "with --dataset: score only the first N test examples")
    prompt_weight: float = opt(0.5, "similarity with shots: label vector = w * prompt + (1 - w) * prototype")
    finetune_epochs: int = opt(0, "with shots: prompt fine-tuning epochs (0 = none)")
    learning_rate: Optional[float] = opt(None, "prompt fine-tuning learning rate (auto: the checkpoint "
                                         "recipe's)", auto=True)
    seed: int = opt(13, "random seed (shot sampling, fine-tuning)")
    output_dir: Optional[str] = opt(None, "save the classifier as a model folder")
    overwrite: bool = opt(False, "replace an existing output folder")

    def validate(self) -> "ZeroShotConfig":
        check_choice(self.method, "method", ZEROSHOT_METHODS)
        check_positive(self, "max_length", "limit")
        if self.shots < 0 or self.finetune_epochs < 0:
            raise ConfigError("shots and finetune_epochs must be >= 0")
        if not 0.0 <= self.prompt_weight <= 1.0:
            raise ConfigError(f"prompt_weight must be in [0, 1], got {self.prompt_weight}")
        return self
