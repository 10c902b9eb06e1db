"""``tfpipeline zeroshot``: ``training.prompting.zeroshot`` picks the method, builds, evaluates, saves, classifies.

This module reads the texts and prints what the command always printed: the
method on stderr, the ``--dataset`` score line, then ``label<TAB>score<TAB>text``
(or one JSON object with ``--json``) per text.
"""
from __future__ import annotations

import json
import sys

from tfpipeline.data.readers import read_lines
from tfpipeline.training.prompting import zeroshot


def run(config, args) -> int:
    """``config.zeroshot`` is the ``ZeroShotConfig``, ``config.texts`` the ``--file``/``--json`` options."""
    settings, io = config.zeroshot, config.texts
    texts = list(args.texts)
    if io.file:
        texts += read_lines(io.file)
    result = zeroshot(settings, texts)
    print(f"[tfpipeline] zero-shot method: {result.method}", file=sys.stderr)
    if settings.output_dir:
        print(f"[tfpipeline] zero-shot classifier written to {settings.output_dir}", file=sys.stderr)
    if result.report is not None:
        print(f"[tfpipeline] {settings.dataset} test ({result.examples} examples), {result.mode}: "
              f"accuracy {result.report['accuracy']:.4f}, macro-F1 {result.report['macro_f1']:.4f}")
    for scored in result.results:
        if io.json:
            print(json.dumps(scored, ensure_ascii=False))
        else:
            print(f"{scored['label']}\t{scored['score']:.3f}\t{scored['text']}")
    return 0
