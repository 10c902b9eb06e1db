"""``tfpipeline compress``: ``training.compress.compress`` prunes/exports/scores; the summary is printed as JSON.

The pruning history (one entry per step) stays in ``compression_report.json``; it would drown the summary.
"""
from __future__ import annotations

import json

from tfpipeline.config import CompressConfig
from tfpipeline.training.compress import compress


def run(config: CompressConfig, args) -> int:
    summary = compress(config)
    shown = dict(summary)
    if isinstance(shown.get("pruning"), dict):
        shown["pruning"] = {k: v for k, v in shown["pruning"].items() if k != "history"}
    print(json.dumps(shown, indent=2))
    return 0
