"""``tfpipeline explain``: Integrated Gradients attributions of a model folder's predictions, per word.

Texts come from arguments, ``--file`` or stdin (as for ``predict``). Output is a
table per text (prediction, then per explanation its scores and the ``--top-k``
words by |attribution|), or one JSON result per line with ``--json``;
``--html PATH`` also writes a page colouring every word.
"""
from __future__ import annotations

import json
import sys

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import ExplainConfig
from tfpipeline.cli.inputs import input_texts
from tfpipeline.evaluation.explain import explain, format_explanations
from tfpipeline.evaluation.explain_html import write_explanations_html


def run(config: ExplainConfig, args) -> int:
    texts = input_texts(args.texts, config.file, "explain")
    results = explain(ModelBundle.load(config.model_dir), texts, target=config.target, steps=config.steps,
                      batch_size=config.batch_size, method=config.method, baseline=config.baseline)
    if config.json:
        for result in results:
            print(json.dumps(result, ensure_ascii=False))
    else:
        print(format_explanations(results, config.top_k))
    if config.html:
        path = write_explanations_html(config.html, results)
        print(f"[tfpipeline] explanations page written to {path}", file=sys.stderr)
    return 0
