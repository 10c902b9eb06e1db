"""``tfpipeline predict``: texts (or, for an image model, image paths) from arguments, ``--file`` or stdin
through the model folder's predictor.

Output is one line per input: ``label<TAB>score<TAB>text`` (classification),
``label<TAB>score<TAB>path`` (image_classification), ``entity [TYPE], ...<TAB>text`` (ner),
or the full result as JSON with ``--json``; an embedding model prints ``{"text", "embedding"}`` JSON lines.
"""
from __future__ import annotations

import json

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, PredictConfig
from tfpipeline.cli.inputs import input_texts


def run(config: PredictConfig, args) -> int:
    texts = input_texts(args.texts, config.file, "predict")
    bundle = ModelBundle.load(config.model_dir)
    predictor = bundle.predictor(config.batch_size)
    if bundle.task == EMBEDDING:   # one vector per text, always as JSON
        for text, vector in zip(texts, predictor.embed(texts)):
            print(json.dumps({"text": text, "embedding": [round(float(v), 6) for v in vector]}, ensure_ascii=False))
        return 0
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
