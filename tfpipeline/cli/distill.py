"""``tfpipeline distill``: ``training.distill.distill`` does the work (data falls back to the teacher's)."""
from __future__ import annotations

from tfpipeline.config import DistillConfig
from tfpipeline.evaluation.reports import format_report
from tfpipeline.training.distill import distill


def run(config: DistillConfig, args) -> int:
    result = distill(config)
    if not config.quiet:
        print(format_report(result.report))
    return 0
