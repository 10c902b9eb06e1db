"""Score a trained model on labelled examples (the numbers in every report)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import numpy as np

from tfpipeline.bundle import ModelBundle
from tfpipeline.data.catalog import load_dataset
from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, REGRESSION
from tfpipeline.data.pipeline import check_targets
from tfpipeline.data.readers import read_task_file
from tfpipeline.errors import DataError
from tfpipeline.evaluation.ranking import ranking_metrics, retrieval_targets
from tfpipeline.evaluation.reports import classification_report, ner_report, regression_report, retrieval_report
from tfpipeline.inference import EmbeddingPredictor, ImagePredictor, Predictor


def evaluate_examples(predictor: Union[Predictor, ImagePredictor, EmbeddingPredictor], examples: Sequence, *,
                      candidates: Optional[Sequence] = None) -> Dict:
    """Predict ``examples`` and build the task's report. Unknown gold labels are errors, not skipped.

    ``embedding``: every query is ranked against the positives of ``examples`` and
    ``candidates`` (more pairs, e.g. the training split), deduplicated by group or text.
    """
    if not examples:
        raise DataError("nothing to evaluate: no examples")
    if predictor.task == EMBEDDING:
        return evaluate_retrieval(predictor, examples, candidates or ())
    if predictor.task == REGRESSION:
        return evaluate_regression(predictor, examples)
    labels = predictor.labels
    if predictor.task in (CLASSIFICATION, IMAGE_CLASSIFICATION):
        for ex in examples:
            if ex.label is None:
                raise DataError(f"{ex.origin}: example has no label")
            labels.id(ex.label, ex.origin)
        if predictor.task == IMAGE_CLASSIFICATION:
            probs = predictor.class_probabilities([ex.image for ex in examples])
        else:
            pairs = [ex.text_pair for ex in examples] if examples[0].text_pair is not None else None
            probs = predictor.class_probabilities([ex.text for ex in examples], pairs)
        predicted = [labels.name(i) for i in probs.argmax(axis=1)]
        return classification_report([ex.label for ex in examples], predicted, labels.names)
    for ex in examples:
        if ex.tags is None:
            raise DataError(f"{ex.origin}: sentence has no tags")
        for tag in ex.tags:
            labels.id(tag, ex.origin)
    predicted = predictor.tag([ex.tokens for ex in examples])
    return ner_report([ex.tags for ex in examples], predicted)


def evaluate_regression(predictor: Predictor, examples: Sequence) -> Dict:
    """Predicted vs true targets of every example (an example without targets is an error naming it)."""
    check_targets(examples, predictor.labels)
    pairs = [ex.text_pair for ex in examples] if examples[0].text_pair is not None else None
    predicted = predictor.regress([ex.text for ex in examples], pairs)
    return regression_report(np.asarray([ex.targets for ex in examples], np.float32), predicted,
                             predictor.labels.names)


def evaluate_retrieval(predictor: EmbeddingPredictor, examples: Sequence, candidates: Sequence) -> Dict:
    """Recall@k and MRR of each distinct query of ``examples`` among the distinct positives of ``candidates``
    and ``examples`` (``ranking.retrieval_targets``)."""
    queries, texts, relevant = retrieval_targets(examples, pool=candidates)
    scores = predictor.similarity(queries, texts)
    return retrieval_report(ranking_metrics(scores, relevant), len(queries), len(texts))


def evaluate_model(bundle: ModelBundle, *, dataset: Optional[str] = None, split: str = "test",
                   file: Optional[str] = None, limit: Optional[int] = None, batch_size: int = 64,
                   **reader_options) -> Dict:
    """Evaluate a model bundle on a built-in dataset split or a labelled file.

    The report names what it scored (``source``: the file, or ``dataset:split``)
    and the model folder, if the bundle has one.
    """
    if file:
        examples = read_task_file(file, bundle.task, **reader_options)
        source = file
    elif dataset:
        data = load_dataset(dataset)
        if data.task != bundle.task:
            where = f"the model at {bundle.directory}" if bundle.directory else "the model"
            raise DataError(f"dataset {dataset!r} is {data.task}, {where} is {bundle.task}")
        examples, source = data.split(split), f"{dataset}:{split}"
    else:
        raise DataError("give a dataset name or a file to evaluate on")
    if limit:
        examples = examples[:limit]
    report = evaluate_examples(bundle.predictor(batch_size=batch_size), examples)
    report.update(source=source, model_dir=bundle.directory or None)
    return report
