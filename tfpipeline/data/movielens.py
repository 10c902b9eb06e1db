"""MovieLens-100k ratings as texts for the ``embedding`` task: users (their recent likes) -> items (movies).

A bi-encoder can recommend when both sides are text: a user is the titles and
genres of the movies they liked last, an item its title, year and genres. This
module reads the ratings, builds those texts, holds out each user's last liked
movie (leave-last-out, the usual next-item protocol) and samples unrated movies
as evaluation negatives; ``evaluation.ranking`` holds the popularity and item-kNN
baselines that a text model has to beat.

Source: the copy of MovieLens-100k that ships in the PyPI package ``recbole==1.2.1``
(``recbole/dataset_example/ml-100k``: RecBole "atomic" files, tab-separated, with
typed headers such as ``user_id:token``). The folder is found with
``importlib.util.find_spec``; recbole (and its torch dependency) is never imported,
so ``pip install --no-deps recbole==1.2.1`` is enough.

Licences: recbole's code is MIT; the data is GroupLens' MovieLens 100K (F. M. Harper
and J. A. Konstan, ACM TiiS 5(4), 2015), whose terms allow research use only: no
commercial use and no redistribution without GroupLens' permission, and publications
must acknowledge the dataset. Use it to evaluate and compare models, not in a product.

Quirks kept from the source: item 267 has the title and year ``unkonwn`` (read as
no year), and 22 titles belong to two item ids each (the same movie entered twice).
Titles like ``Usual Suspects, The`` are read as ``The Usual Suspects``. Many ratings
share a timestamp: "chronological" means by timestamp, then file order (or, for
``leave_last_out``, a seeded order), so every ordering here is deterministic.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from tfpipeline.errors import ConfigError, DataError

RECBOLE_REQUIREMENT = "recbole==1.2.1"
ML100K_FOLDER = "dataset_example/ml-100k"
RATINGS_FILE, ITEMS_FILE = "ml-100k.inter", "ml-100k.item"
LIKED_RATING = 4            # a rating of 4 or 5 (of 5) is a like
MIN_LIKED = 3               # held-out test + validation likes plus at least one like left to train on
_TRAILING_ARTICLE = re.compile(r"^(?P<name>.+), (?P<article>The|A|An)(?P<rest> \(.*\))?$")


class Interaction(NamedTuple):
    """One rating of a user: the item, its rating (1-5) and when (unix seconds)."""

    item: int
    rating: float
    timestamp: int


@dataclass(frozen=True, eq=False)
class MovieLens:
    """The ratings (one array entry per rating, in file order) and each movie's title, year and genres."""

    users: np.ndarray         # int64 user id of each rating
    items: np.ndarray         # int64 item id of each rating
    ratings: np.ndarray       # float32, 1..5
    timestamps: np.ndarray    # int64 unix seconds
    titles: Dict[int, str]
    years: Dict[int, Optional[int]]
    genres: Dict[int, Tuple[str, ...]]
    folder: str = ""

    @property
    def user_ids(self) -> np.ndarray:
        return np.unique(self.users)

    @property
    def item_ids(self) -> np.ndarray:
        """Every catalogued movie (some have no rating)."""
        return np.array(sorted(self.titles), dtype=np.int64)

    @functools.cached_property
    def _histories(self) -> Dict[int, Tuple[Interaction, ...]]:
        order = np.lexsort((np.arange(len(self.users)), self.timestamps, self.users))
        return _group_by_user(self, order)

    @functools.cached_property
    def _rated(self) -> Dict[int, frozenset]:
        return {user: frozenset(i.item for i in history) for user, history in self._histories.items()}

    def history(self, user: int) -> Tuple[Interaction, ...]:
        """A user's ratings, oldest first (ties: file order)."""
        if user not in self._histories:
            raise DataError(f"{self.folder}/{RATINGS_FILE}: no user {user}")
        return self._histories[user]

    def item_text(self, item: int) -> str:
        """``"Title (year) - genre, genre"``; the year or the genres are left out when unknown."""
        if item not in self.titles:
            raise DataError(f"{self.folder}/{ITEMS_FILE}: no item {item}")
        year, genres = self.years[item], self.genres[item]
        text = self.titles[item] + (f" ({year})" if year else "")
        return text + (f" - {', '.join(genres)}" if genres else "")

    def user_text(self, history: Sequence[Interaction], k: int) -> str:
        """The ``k`` most recent liked movies of a chronological ``history``, newest first, as
        ``item_text``s joined by ``"; "`` ('' when nothing was liked)."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        liked = [i.item for i in history if i.rating >= LIKED_RATING]
        return "; ".join(self.item_text(item) for item in reversed(liked[-k:]))

    def sample_negatives(self, user: int, n: int, seed: int) -> np.ndarray:
        """``n`` distinct movies ``user`` never rated (in any split), sampled by ``(seed, user)``."""
        unrated = np.setdiff1d(self.item_ids, np.fromiter(self._rated.get(user, ()), dtype=np.int64))
        if not 0 <= n <= len(unrated):
            raise DataError(f"user {user}: cannot sample {n} negatives from {len(unrated)} unrated movies")
        return np.random.default_rng([seed, user]).choice(unrated, size=n, replace=False)


@dataclass(frozen=True, eq=False)
class LeaveLastOut:
    """Per evaluated user the last liked movie (``test``) and the liked one before it (``validation``);
    ``train`` holds every other rating of every user, and ``timelines`` every rating of each evaluated
    user, both in the split's chronological order."""

    train: Dict[int, Tuple[Interaction, ...]]
    validation: Dict[int, Interaction]
    test: Dict[int, Interaction]
    timelines: Dict[int, Tuple[Interaction, ...]]

    def history(self, user: int, split: str) -> Tuple[Interaction, ...]:
        """The user's ratings before ``split``'s movie, oldest first: what a model may see to predict it
        (for the test this includes the validation movie; later ratings are never shown)."""
        if split not in ("validation", "test"):
            raise ConfigError(f"split must be validation or test, not {split!r}")
        if user not in self.test:
            raise DataError(f"user {user} is not evaluated (too few liked movies)")
        target = self.test[user] if split == "test" else self.validation[user]
        timeline = self.timelines[user]
        return timeline[:timeline.index(target)]

    def train_pairs(self, liked_only: bool = False) -> np.ndarray:
        """``[n, 2]`` (user, item) rows of the training ratings (only likes with ``liked_only``)."""
        rows = [(user, i.item) for user, history in self.train.items() for i in history
                if not liked_only or i.rating >= LIKED_RATING]
        return np.array(rows, dtype=np.int64).reshape(-1, 2)


def leave_last_out(movielens: MovieLens, min_liked: int = 5, seed: int = 13) -> LeaveLastOut:
    """Hold out each user's last liked movie as test and the liked one before it as validation.

    Users with fewer than ``min_liked`` likes (at least ``MIN_LIKED``) are not
    evaluated; their ratings all train. Ratings are ordered by timestamp, ties in a
    seeded random order (a timestamp often holds several ratings).
    """
    if min_liked < MIN_LIKED:
        raise ConfigError(f"min_liked must be at least {MIN_LIKED} (test, validation and one like to learn "
                          f"from), got {min_liked}")
    tiebreak = np.random.default_rng(seed).permutation(len(movielens.users))
    order = np.lexsort((tiebreak, movielens.timestamps, movielens.users))
    train, validation, test, timelines = {}, {}, {}, {}
    for user, history in _group_by_user(movielens, order).items():
        liked = [n for n, i in enumerate(history) if i.rating >= LIKED_RATING]
        if len(liked) >= min_liked:
            validation[user], test[user], timelines[user] = history[liked[-2]], history[liked[-1]], history
            history = tuple(i for n, i in enumerate(history) if n not in liked[-2:])
        train[user] = history
    return LeaveLastOut(train, validation, test, timelines)


def _group_by_user(movielens: MovieLens, order: np.ndarray) -> Dict[int, Tuple[Interaction, ...]]:
    """Interactions per user, in ``order`` (which must keep each user's rows together)."""
    grouped: Dict[int, List[Interaction]] = {}
    for row in order:
        interaction = Interaction(int(movielens.items[row]), float(movielens.ratings[row]),
                                  int(movielens.timestamps[row]))
        grouped.setdefault(int(movielens.users[row]), []).append(interaction)
    return {user: tuple(history) for user, history in grouped.items()}


# --------------------------------------------------------------------------- reading the files
def movielens_folder() -> str:
    """The ml-100k folder inside the installed recbole package, found without importing recbole."""
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"MovieLens-100k needs the recbole package: pip install --no-deps {RECBOLE_REQUIREMENT}")
    folder = os.path.join(list(spec.submodule_search_locations)[0], ML100K_FOLDER)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: missing from the installed recbole; "
                        f"pip install --no-deps --force-reinstall {RECBOLE_REQUIREMENT}")
    return folder


@functools.lru_cache(maxsize=None)
def load_movielens() -> MovieLens:
    """Read MovieLens-100k's ratings and movies (parsed once per process; the arrays are read-only)."""
    folder = movielens_folder()
    titles, years, genres = _read_items(os.path.join(folder, ITEMS_FILE))
    ratings_path = os.path.join(folder, RATINGS_FILE)
    users, items, ratings, timestamps = _read_ratings(ratings_path, titles)
    arrays = (np.array(users, dtype=np.int64), np.array(items, dtype=np.int64),
              np.array(ratings, dtype=np.float32), np.array(timestamps, dtype=np.int64))
    for array in arrays:
        array.setflags(write=False)
    return MovieLens(*arrays, titles=titles, years=years, genres=genres, folder=folder)


def _read_items(path: str):
    titles: Dict[int, str] = {}
    years: Dict[int, Optional[int]] = {}
    genres: Dict[int, Tuple[str, ...]] = {}
    for where, row in _atomic_rows(path, ("item_id", "movie_title", "release_year", "class")):
        item = _integer(row["item_id"], where)
        titles[item] = _readable_title(row["movie_title"])
        years[item] = int(row["release_year"]) if row["release_year"].isdigit() else None
        genres[item] = tuple(g for g in row["class"].split() if g != "unknown")
    return titles, years, genres


def _read_ratings(path: str, titles: Dict[int, str]):
    users, items, ratings, timestamps = [], [], [], []
    for where, row in _atomic_rows(path, ("user_id", "item_id", "rating", "timestamp")):
        item = _integer(row["item_id"], where)
        if item not in titles:
            raise DataError(f"{where}: item {item} is not in {ITEMS_FILE}")
        rating = _number(row["rating"], where)
        if not 1 <= rating <= 5:
            raise DataError(f"{where}: rating {row['rating']!r} is not in 1..5")
        users.append(_integer(row["user_id"], where))
        items.append(item)
        ratings.append(rating)
        timestamps.append(int(_number(row["timestamp"], where)))
    return users, items, ratings, timestamps


def _atomic_rows(path: str, columns: Sequence[str]) -> Iterator[Tuple[str, Dict[str, str]]]:
    """("file:line", {column: field}) of a RecBole atomic file; the header's ``name:type`` names the columns."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; pip install --no-deps --force-reinstall {RECBOLE_REQUIREMENT}")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    header = [field.partition(":")[0] for field in lines[0].rstrip("\r").split("\t")]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}:1: missing column {missing[0]!r} (found: {', '.join(header)})")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} tab-separated fields, got {len(fields)}")
        yield f"{path}:{number}", dict(zip(header, fields))


def _integer(text: str, where: str) -> int:
    if not text.strip().isdigit():
        raise DataError(f"{where}: expected an id, got {text!r}")
    return int(text)


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{where}: expected a number, got {text!r}") from None


def _readable_title(title: str) -> str:
    """``Usual Suspects, The`` -> ``The Usual Suspects`` (also before an alternative title in brackets)."""
    match = _TRAILING_ARTICLE.match(title.strip())
    if not match:
        return title.strip()
    return f"{match['article']} {match['name']}{match['rest'] or ''}"
