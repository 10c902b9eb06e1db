"""Run configuration: one dataclass shared by the Python API, YAML/JSON config files and CLI flags."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from tfpipeline.data.examples import DataError


@dataclass
class TrainConfig:
    """Everything ``train`` needs. Defaults are a sensible full fine-tuning recipe."""

    # data: a built-in dataset name, or your own files
    dataset: Optional[str] = "rotten_tomatoes"
    task: Optional[str] = None              # classification | ner (taken from the dataset if built in)
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    text_column: str = "text"
    label_column: str = "label"
    pair_column: Optional[str] = None
    limit_train: Optional[int] = None       # cap examples per split (quick runs)
    limit_eval: Optional[int] = None
    # model
    model: str = "minilm"                   # alias or a local HF checkpoint folder
    max_length: int = 128
    dropout: Optional[float] = None
    # parameter-efficient fine-tuning (None = full fine-tuning)
    peft: Optional[str] = None              # lora | adapter
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    adapter_size: int = 64
    # optimisation
    epochs: int = 3
    batch_size: int = 32                    # per replica; global = batch_size * replicas
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    clip_norm: Optional[float] = 1.0
    precision: str = "float32"              # float32 | mixed_float16 | mixed_bfloat16
    early_stopping_patience: int = 2
    steps_per_execution: int = 1
    # input pipeline
    bucket: bool = True
    static_shapes: bool = False             # fixed [batch, max_length], drop_remainder (TPU/XLA)
    # runtime
    strategy: str = "default"               # auto | default | mirrored | multiworker | tpu
    tpu: Optional[str] = None
    seed: int = 13
    output_dir: str = "runs/model"
    overwrite: bool = False
    verbose: int = 1
    extra: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        if self.train_file and not self.task:
            raise DataError("task (classification or ner) is required with train_file")
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.peft not in (None, "lora", "adapter"):
            raise DataError(f"peft must be lora or adapter, not {self.peft!r}")
        if self.precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise DataError(f"precision must be float32, mixed_float16 or mixed_bfloat16, not {self.precision!r}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def peft_config(self):
        """The run's ``PeftConfig``, or None for full fine-tuning."""
        if not self.peft:
            return None
        from tfpipeline.models.peft import PeftConfig

        return PeftConfig(method=self.peft, lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                          lora_dropout=self.lora_dropout, adapter_size=self.adapter_size)


def load_config_file(path: str) -> Dict[str, Any]:
    """Read a YAML or JSON config file into a dict, rejecting unknown keys with the file name."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml/json errors carry line info in their message
        raise DataError(f"{path}: cannot parse config ({e})") from None
    if data is None:
        raise DataError(f"{path}: config file is empty")
    if not isinstance(data, dict):
        raise DataError(f"{path}: config must be a mapping of option: value")
    return data


def make_config(cls, values: Dict[str, Any], source: str = "config"):
    """Build dataclass ``cls`` from ``values``; unknown keys are an error naming ``source``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise DataError(f"{source}: unknown option(s) {', '.join(unknown)}")
    return cls(**values)
