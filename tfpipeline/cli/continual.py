"""``tfpipeline continual``: load both tasks' data, then ``continual_finetune`` or ``compare_methods``.

The old task's data defaults to what the model folder records (``old_task_data``);
``--old-*`` flags replace it. Option rules (``--compare`` vs
``--output-dir``) are in ``ContinualRunOptions.validate``, workflow rules
(classification only, a fully fine-tuned folder) in the library.
"""
from __future__ import annotations

import dataclasses
import json
import sys

from tfpipeline.bundle import read_metadata
from tfpipeline.data.sources import data_from_options
from tfpipeline.training.continual import (compare_methods, continual_finetune, format_comparison, old_task_data,
                                           summarize)

TASK = "classification"


def run(config, args) -> int:
    """``config`` has the sections ``run``, ``data`` (new task), ``old`` and ``continual`` (see ``parser``)."""
    options, settings = config.run, config.continual
    read_metadata(options.model_dir)  # not a model folder: fails before any data is read
    new_data = data_from_options(config.data, task=TASK, seed=settings.seed)
    old_data = old_task_data(options.model_dir, config.old.data_options(config.data), seed=settings.seed)
    verbose = 0 if options.quiet or options.json else (1 if sys.stdout.isatty() else 2)
    if options.compare:
        rows = compare_methods(options.model_dir, new_data, old_data, methods=options.compare, verbose=verbose,
                               **{k: v for k, v in dataclasses.asdict(settings).items() if k != "method"})
        print(json.dumps(rows, indent=2) if options.json else format_comparison(rows, old_data.name, new_data.name))
        return 0
    result = continual_finetune(options.model_dir, new_data, old_data, options.output_dir, settings,
                                overwrite=options.overwrite, verbose=verbose)
    if options.json:
        print(json.dumps(result.report, indent=2))
    else:
        labels = result.bundle.labels
        print(format_comparison({settings.method: summarize(result.report)}, old_data.name, new_data.name))
        print(f"[tfpipeline] model ({len(labels)} labels: {', '.join(labels.names)}) written to {options.output_dir}")
    return 0
