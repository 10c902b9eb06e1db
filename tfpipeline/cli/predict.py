"""``tfpipeline predict``: texts (or, for an image model, image paths) from arguments, ``--file`` or stdin
through the model folder's predictor; or a whole file streamed with ``--input FILE --output FILE.jsonl``
(``tfpipeline.batch_predict``: any size, in input order, progress bar, ``--resume``).

Printed output is one line per input: ``label<TAB>score<TAB>text`` (classification),
``label<TAB>score<TAB>path`` (image_classification), ``entity [TYPE], ...<TAB>text`` (ner),
``target=value ...<TAB>text`` (regression), or the full result as JSON with ``--json``; an embedding model
prints ``{"text", "embedding"}`` JSON lines.
"""
from __future__ import annotations

import json
import sys

from tfpipeline.batch_predict import predict_file, task_results
from tfpipeline.bundle import ModelBundle
from tfpipeline.cli.inputs import input_texts
from tfpipeline.config import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, PredictConfig
from tfpipeline.errors import ConfigError


def run(config: PredictConfig, args) -> int:
    if config.input:
        if args.texts:
            raise ConfigError("give texts as arguments or --input FILE, not both")
        report = predict_file(ModelBundle.load(config.model_dir), config.input, config.output,
                              batch_size=config.batch_size, input_format_name=config.input_format,
                              text_column=config.text_column, pair_column=config.pair_column,
                              id_column=config.id_column, on_bad_rows=config.on_bad_rows, resume=config.resume,
                              progress=config.progress)
        print(report.summary(), file=sys.stderr)
        return 0
    texts = input_texts(args.texts, config.file, "predict")
    bundle = ModelBundle.load(config.model_dir)
    results = task_results(bundle.predictor(config.batch_size), bundle.task, texts)
    for text, result in zip(texts, results):
        if bundle.task == EMBEDDING:   # one vector per text, always as JSON
            print(json.dumps({"text": text, **result}, ensure_ascii=False))
        elif config.json:
            print(json.dumps(result, ensure_ascii=False))
        elif bundle.task in (CLASSIFICATION, IMAGE_CLASSIFICATION):
            print(f"{result['label']}\t{result['score']:.3f}\t{text}")
        elif bundle.task == NER:
            spans = ", ".join(f"{e['text']} [{e['type']}]" for e in result["entities"]) or "-"
            print(f"{spans}\t{text}")
        else:
            values = " ".join(f"{name}={value:.4g}" for name, value in result["predictions"].items())
            print(f"{values}\t{text}")
    return 0
