"""Model outputs as JSON-ready result dicts, one per row: the shapes every ``predict`` path writes.

Shared by texts given on the command line (``task_results``) and streamed files, so a streamed result is the
in-memory one for the same row.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfpipeline.batch_predict.rows import PAIR_TASKS, CountedBadRows
from tfpipeline.config import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION
from tfpipeline.decoding import merge_entities
from tfpipeline.errors import ConfigError, DataError


def task_results(predictor, task: str, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> List[Dict]:
    """One JSON-ready result per text (image models: per image path or bytes), in order.

    Shared by both ``predict`` paths (texts given on the command line and streamed files).
    classification / image_classification: ``label``, ``score``, ``scores``; regression: ``predictions``
    ({target: value}, in the targets' units); ner: ``text``, ``tokens``, ``entities``; embedding: ``embedding``.
    """
    texts = list(texts)
    if pairs is not None and task not in PAIR_TASKS:
        raise ConfigError(f"a second text (pair column) is for {' and '.join(PAIR_TASKS)} models, not {task}")
    if task == CLASSIFICATION:
        return predictor.classify(texts, pairs)
    if task == IMAGE_CLASSIFICATION:
        return predictor.classify(texts)
    if task == REGRESSION:
        return regression_results(predictor.regress(texts, pairs), predictor.labels.names)
    if task == NER:
        return predictor.extract(texts)
    if task == EMBEDDING:
        return embedding_results(predictor.embed(texts))
    raise DataError(f"cannot predict with a {task} model")


def regression_results(values: np.ndarray, names: Sequence[str]) -> List[Dict]:
    """[N, targets] predictions in target units -> ``{"predictions": {target: value}}`` per row."""
    return [{"predictions": {name: float(v) for name, v in zip(names, row)}} for row in values]


def embedding_results(vectors: np.ndarray) -> List[Dict]:
    return [{"embedding": [round(float(v), 6) for v in vector]} for vector in vectors]


def sentence_results(predictor, sentences: Sequence[Sequence[str]]) -> List[Dict]:
    """NER on pre-split sentences (CoNLL input): ``extract``'s shape, with the words joined by spaces as text."""
    results = []
    for words, tags in zip(sentences, predictor.tag(sentences)):
        tokens, start = [], 0
        for word, tag in zip(words, tags):
            tokens.append({"text": word, "label": tag, "start": start, "end": start + len(word)})
            start += len(word) + 1
        text = " ".join(words)
        results.append({"text": text, "tokens": tokens, "entities": merge_entities(text, tokens)})
    return results


def image_results(predictor, paths: List[str], lines: List[int], input_path: str, images_from: str,
                  bad_rows: CountedBadRows) -> List[Optional[Dict]]:
    """Image rows: paths relative to the input file; a missing or undecodable image is a bad row (None)."""
    full = [p if os.path.isabs(p) else os.path.join(images_from, p) for p in paths]
    try:
        return predictor.classify(full)
    except DataError:
        pass
    results: List[Optional[Dict]] = []
    for path, line in zip(full, lines):   # find the bad ones: one image at a time
        try:
            results.append(predictor.classify([path])[0])
        except DataError as e:
            bad_rows.bad_row(line, f"{input_path}:{line}: {e}")   # raises in error mode
            results.append(None)
    return results
