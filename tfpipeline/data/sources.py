"""Resolve where a run's data comes from: a built-in dataset or the user's files.

User data is a CSV/TSV/JSONL file (classification), a CoNLL/BIO file (ner), or
for image_classification a folder with one subfolder per class or a
CSV/TSV/JSONL list of image paths, or a CSV/TSV/JSONL file of (query, positive[,
negative]) pairs (embedding); ``readers.read_task_file`` picks the reader.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tfpipeline.config import DataOptions
from tfpipeline.data.catalog import list_datasets, load_dataset
from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, REGRESSION, PairExample, TaskData
from tfpipeline.data.readers import BadRows, read_task_file, target_names
from tfpipeline.errors import DataError


def load_task_data(*, dataset: Optional[str] = None, task: Optional[str] = None,
                   train_file: Optional[str] = None, validation_file: Optional[str] = None,
                   test_file: Optional[str] = None, limit_train: Optional[int] = None,
                   limit_eval: Optional[int] = None, seed: int = 13, on_bad_rows: str = "error",
                   **reader_options) -> TaskData:
    """Load splits from files (if ``train_file``) or the catalog, then apply the per-split limits.

    For image_classification each "file" may also be a folder of class folders.
    With files and no ``validation_file``, 10% of the training data is held out
    (deterministically, by ``seed``; stratified by label for text and image
    classification, by linked pairs for embedding, see ``hold_out``) for early stopping.
    """
    if train_file:
        data = _from_files(task, train_file, validation_file, test_file, seed, BadRows(on_bad_rows), reader_options)
    elif dataset:
        data = load_dataset(dataset, seed=seed)
        if task and task != data.task:
            raise DataError(f"dataset {dataset!r} is a {data.task} dataset, not {task}")
    else:
        raise DataError("no data: give a built-in dataset name or a train_file")
    if limit_train:
        data.train = data.train[:limit_train]
    if limit_eval:
        data.validation = data.validation[:limit_eval]
        data.test = data.test[:limit_eval]
    if not data.validation:
        raise DataError(f"{data.name}: no validation examples")
    return data


RECORDED_COLUMNS = ("text_column", "label_column", "pair_column", "image_column",   # reader options in a config
                    "query_column", "positive_column", "negative_column")


def data_from_options(options: DataOptions, *, task: Optional[str] = None, seed: int = 13,
                      recorded: Optional[Mapping[str, Any]] = None, recorded_in: str = "") -> TaskData:
    """The examples ``options`` describe (a built-in dataset or files, limits applied).

    With neither a dataset nor a train file in ``options``, fall back to the data
    ``recorded`` in a model folder's metadata (``recorded_in`` names the folder in
    errors): what a teacher, or the old task of continual learning, was trained on.
    """
    task = task or options.task
    limits = dict(limit_train=options.limit_train, limit_eval=options.limit_eval, seed=seed,
                  on_bad_rows=options.on_bad_rows)
    if options.dataset or options.train_file:
        return load_task_data(dataset=options.dataset, task=task, train_file=options.train_file,
                              validation_file=options.validation_file, test_file=options.test_file,
                              **limits, **options.reader_options())
    if recorded is None:
        raise DataError("no data: give a built-in dataset name or a train file")
    dataset, config = recorded.get("dataset"), recorded.get("config") or {}
    if dataset and dataset in {info.name for info in list_datasets()}:
        return load_task_data(dataset=dataset, task=task, **limits)
    if dataset and config.get("train_file") == dataset:  # trained on files: the same files again
        columns = {k: config[k] for k in RECORDED_COLUMNS if config.get(k)}
        return load_task_data(task=task, train_file=dataset, validation_file=config.get("validation_file"),
                              test_file=config.get("test_file"), **limits, **columns)
    raise DataError(f"{recorded_in or 'the model folder'}: does not record its training data"
                    f"{f' (dataset: {dataset!r})' if dataset else ''}; give the data with a dataset name "
                    "or a train file")


VALIDATION_FRACTION = 0.1
STRATIFIED_TASKS = (CLASSIFICATION, IMAGE_CLASSIFICATION)   # one label per example


def hold_out(examples: Sequence, task: str, fraction: float, seed: int) -> Tuple[List, List]:
    """Split ``examples`` into (train, held out), seeded.

    Text and image classification are stratified by label: every label with at
    least two examples puts ``round(fraction * n)`` of them (at least one) into
    the held-out part, so rare classes are validated too; a label seen once stays
    in training. Embedding pairs are held out by linked pairs (``_hold_out_linked``).
    NER sentences (many labels each) are held out at random.
    """
    rng = random.Random(seed)
    if task == EMBEDDING:
        return _hold_out_linked(examples, fraction, rng)
    if task not in STRATIFIED_TASKS:
        shuffled = list(examples)
        rng.shuffle(shuffled)
        cut = max(1, int(len(shuffled) * fraction))
        return shuffled[cut:], shuffled[:cut]
    by_label: Dict[str, List] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    train, held = [], []
    for label in sorted(by_label, key=str):
        group = by_label[label]
        rng.shuffle(group)
        cut = 0 if len(group) < 2 else max(1, round(len(group) * fraction))
        held += group[:cut]
        train += group[cut:]
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held


def _hold_out_linked(examples: Sequence[PairExample], fraction: float, rng: random.Random) -> Tuple[List, List]:
    """Hold out whole sets of linked pairs: pairs sharing a query or a positive (its ``group``, else its
    case-folded text) stay on one side, so a paraphrase of a validation question never trains on the
    validation answer, and validation measures answers the model has not been fitted to (the stricter
    choice: the built-in ``faq_pairs`` instead keeps answers shared, like an FAQ whose answers are known).

    Shuffled sets are taken while they fit ``int(fraction * n)`` (at least one pair); when none fits,
    the smallest set that leaves training data is held out. One set linking everything cannot be cut
    without a leak: those pairs are held out at random.
    """
    linked = _linked_sets(examples)
    if len(linked) < 2:
        shuffled = list(examples)
        rng.shuffle(shuffled)
        cut = max(1, int(len(shuffled) * fraction))
        return shuffled[cut:], shuffled[:cut]
    rng.shuffle(linked)
    target = max(1, int(len(examples) * fraction))
    held: List[int] = []
    for members in linked:
        if len(held) + len(members) <= target:
            held += members
    if not held:
        held = min(linked, key=len)
    held_set = set(held)
    train = [ex for i, ex in enumerate(examples) if i not in held_set]
    validation = [examples[i] for i in sorted(held_set)]
    rng.shuffle(train)
    rng.shuffle(validation)
    return train, validation


def _linked_sets(examples: Sequence[PairExample]) -> List[List[int]]:
    """Indices of the examples grouped into connected sets (shared query or positive), in first-seen order."""
    parent: Dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for ex in examples:
        parent[root(_query_key(ex))] = root(_positive_key(ex))
    sets: Dict[str, List[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        sets[root(_query_key(ex))].append(i)
    return list(sets.values())


def _query_key(example: PairExample) -> str:
    return "query:" + example.query.casefold()


def _positive_key(example: PairExample) -> str:
    return "group:" + example.group if example.group else "positive:" + example.positive.casefold()


def _from_files(task, train_file, validation_file, test_file, seed, bad_rows: BadRows, options) -> TaskData:
    train = read_task_file(train_file, task, bad_rows=bad_rows, **options)
    if validation_file:
        validation = read_task_file(validation_file, task, bad_rows=bad_rows, **options)
    else:
        if len(train) < 2:
            raise DataError(f"{train_file}: need at least 2 examples to hold one out for validation")
        train, validation = hold_out(train, task, VALIDATION_FRACTION, seed)
    test = read_task_file(test_file, task, bad_rows=bad_rows, **options) if test_file else []
    files = {"train": train_file, "validation": validation_file or f"{train_file}, 10% held out"}
    if test_file:
        files["test"] = test_file
    labels = target_names(options.get("label_column") or "label") if task == REGRESSION else []
    return TaskData(name=train_file, task=task, train=train, validation=validation, test=test, files=files,
                    labels=labels,
                    skipped_rows=list(bad_rows.skipped))
