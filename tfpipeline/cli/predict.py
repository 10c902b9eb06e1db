"""``tfpipeline predict``: texts (or, for an image model, image paths) from arguments, ``--file`` or stdin
through the model folder's predictor.

Output is one line per input: ``label<TAB>score<TAB>text`` (classification),
``label<TAB>score<TAB>path`` (image_classification), ``entity [TYPE], ...<TAB>text`` (ner),
or the full result as JSON with ``--json``.
"""
from __future__ import annotations

import json
import sys

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import CLASSIFICATION, IMAGE_CLASSIFICATION, PredictConfig
from tfpipeline.data.readers import read_lines
from tfpipeline.errors import DataError


def run(config: PredictConfig, args) -> int:
    texts = list(args.texts)
    if config.file:
        texts += read_lines(config.file)
    if not texts and not sys.stdin.isatty():
        texts = [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise DataError("nothing to predict: pass texts as arguments, --file, or on stdin")
    bundle = ModelBundle.load(config.model_dir)
    predictor = bundle.predictor(config.batch_size)
    classify = bundle.task in (CLASSIFICATION, IMAGE_CLASSIFICATION)
    for text, result in zip(texts, predictor.classify(texts) if classify else predictor.extract(texts)):
        if config.json:
            print(json.dumps(result, ensure_ascii=False))
        elif classify:
            print(f"{result['label']}\t{result['score']:.3f}\t{text}")
        else:
            spans = ", ".join(f"{e['text']} [{e['type']}]" for e in result["entities"]) or "-"
            print(f"{spans}\t{text}")
    return 0
