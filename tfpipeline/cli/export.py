"""``tfpipeline export``: ``ModelBundle.export`` writes BASE/NAME/VERSION/ for TF Serving."""
from __future__ import annotations

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import ExportConfig
from tfpipeline.data.readers import read_lines


def run(config: ExportConfig, args) -> int:
    warmup = None
    if config.warmup_file:
        warmup = read_lines(config.warmup_file)
    path = ModelBundle.load(config.model_dir).export(config.base_dir, config.name, version=config.version,
                                                     warmup_texts=warmup, optimize=config.optimize)
    print(f"[tfpipeline] exported {config.model_dir} to {path}")
    return 0
