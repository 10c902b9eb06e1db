"""``tfpipeline evaluate``: score a model folder with ``evaluate_model``; print the report, ``--output`` saves it."""
from __future__ import annotations

import json

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import EvaluateConfig
from tfpipeline.evaluation.evaluate import evaluate_model
from tfpipeline.evaluation.reports import format_report

def run(config: EvaluateConfig, args) -> int:
    report = evaluate_model(ModelBundle.load(config.model_dir), dataset=config.dataset, split=config.split,
                            file=config.file, limit=config.limit, text_column=config.text_column,
                            label_column=config.label_column, pair_column=config.pair_column)
    print(format_report(report))
    if config.output:
        with open(config.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0
