"""``tfpipeline evaluate``: score a model folder with ``evaluate_model``; print the report, ``--output`` saves it
(as JSON, or as a report page with its PNGs when the path ends in ``.html``)."""
from __future__ import annotations

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import EvaluateConfig
from tfpipeline.evaluation.evaluate import evaluate_model
from tfpipeline.evaluation.html_report import save_report
from tfpipeline.evaluation.reports import format_report


def run(config: EvaluateConfig, args) -> int:
    report = evaluate_model(ModelBundle.load(config.model_dir), dataset=config.dataset, split=config.split,
                            file=config.file, limit=config.limit, text_column=config.text_column,
                            label_column=config.label_column, pair_column=config.pair_column,
                            image_column=config.image_column, query_column=config.query_column,
                            positive_column=config.positive_column)
    print(format_report(report))
    if config.output:
        save_report(config.output, report)
    return 0
