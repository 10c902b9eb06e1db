"""Resolve where a run's data comes from: a built-in dataset or the user's files."""
from __future__ import annotations

import random
from typing import Optional

from tfpipeline.data.examples import DataError, TaskData
from tfpipeline.data.readers import read_task_file


def load_task_data(*, dataset: Optional[str] = None, task: Optional[str] = None,
                   train_file: Optional[str] = None, validation_file: Optional[str] = None,
                   test_file: Optional[str] = None, limit_train: Optional[int] = None,
                   limit_eval: Optional[int] = None, seed: int = 13, **reader_options) -> TaskData:
    """Load splits from files (if ``train_file``) or the catalog, then apply the per-split limits.

    With files and no ``validation_file``, 10% of the training file is held out
    (deterministically, by ``seed``) for early stopping.
    """
    if train_file:
        data = _from_files(task, train_file, validation_file, test_file, seed, reader_options)
    elif dataset:
        from tfpipeline.data.catalog import load_dataset

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


def _from_files(task, train_file, validation_file, test_file, seed, options) -> TaskData:
    conll_options = {k: v for k, v in options.items() if k in ("token_column", "tag_column", "token_prefix")}
    text_options = {k: v for k, v in options.items() if k in ("text_column", "label_column", "pair_column")}
    opts = conll_options if task == "ner" else text_options
    train = read_task_file(train_file, task, **opts)
    if validation_file:
        validation = read_task_file(validation_file, task, **opts)
    else:
        shuffled = list(train)
        random.Random(seed).shuffle(shuffled)
        cut = max(1, len(shuffled) // 10)
        if len(shuffled) < 2:
            raise DataError(f"{train_file}: need at least 2 examples to hold one out for validation")
        validation, train = shuffled[:cut], shuffled[cut:]
    test = read_task_file(test_file, task, **opts) if test_file else []
    return TaskData(name=train_file, task=task, train=train, validation=validation, test=test)
