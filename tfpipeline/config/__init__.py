"""Run configuration: dataclasses shared by the Python API, YAML/JSON config files and CLI flags.

No TensorFlow here: the CLI builds its parser (and ``--help``) from these alone.
"""
from tfpipeline.config.cluster import ClusterConfig
from tfpipeline.config.commands import (EvaluateConfig, ExportConfig, IndexConfig, PredictConfig, ServeConfig,
                                        TextsOptions)
from tfpipeline.config.explain import ExplainConfig
from tfpipeline.config.options import (check_choice, check_positive, load_config_file, make_config, opt,
                                       with_overrides)
from tfpipeline.config.recipes import (CompressConfig, ContinualConfig, ContinualRunOptions, DistillConfig,
                                       OldTaskOptions, ZeroShotConfig)
from tfpipeline.config.train import (CLASSIFICATION, DEFAULT_CHECKPOINT, DEFAULT_IMAGE_CHECKPOINT, EMBEDDING,
                                     IMAGE_CLASSIFICATION, NER, REGRESSION, TASKS, TEXT_TASKS, DataOptions, ModelOptions,
                                     OptimizerOptions, PeftOptions, PipelineOptions, RuntimeOptions, TrainConfig,
                                     TuneConfig)

__all__ = ["CLASSIFICATION", "NER", "IMAGE_CLASSIFICATION", "EMBEDDING", "REGRESSION", "TASKS", "TEXT_TASKS", "DEFAULT_CHECKPOINT",
           "DEFAULT_IMAGE_CHECKPOINT", "TrainConfig", "TuneConfig", "DataOptions", "ModelOptions", "PeftOptions",
           "OptimizerOptions", "PipelineOptions", "RuntimeOptions", "DistillConfig", "ContinualConfig",
           "CompressConfig", "ZeroShotConfig", "EvaluateConfig", "ExplainConfig", "PredictConfig", "ExportConfig",
           "IndexConfig", "ServeConfig", "ClusterConfig",
           "ContinualRunOptions", "OldTaskOptions", "TextsOptions",
           "load_config_file", "make_config", "with_overrides", "opt", "check_choice", "check_positive"]
