"""Retrieval metrics for the ``embedding`` task, and the baselines a trained bi-encoder must beat.

Every metric takes a score matrix ``[queries, candidates]`` (higher = better)
and, per query, the set of candidate indices that are relevant: several when a
query has several right answers, or when candidates of one group (the same
answer) all count. Metrics are averaged over queries.

Ties are resolved against the model, so a result never depends on where the
relevant candidate sits in the list: candidates are ranked by score, and among
equal scores every non-relevant candidate comes before the relevant ones
(relevant ones among themselves by index). A constant scorer therefore ranks
every relevant candidate below all others instead of getting a lucky rank 1.

- ``recall_at_k``: relevant candidates in the top k / min(k, number relevant),
  so a perfect ranking scores 1.0 even when more than k candidates are relevant.
- ``hit_rate_at_k``: 1 when any relevant candidate is in the top k.
- ``mrr``: 1 / rank of the first relevant candidate.
- ``ndcg_at_k``: binary gains, log2 discount, normalised by the ideal ranking.

Baselines: ``bm25_scores`` (lexical match, the ``bm25s`` package: English
stopwords, no stemming), ``popularity_scores`` (training interactions per item)
and ``item_knn_scores`` (cosine item-item similarity on the binary user-item
matrix, k nearest neighbours per candidate item). Only numpy, scipy.sparse and
bm25s are imported: no TensorFlow.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import bm25s
import numpy as np
from scipy import sparse

from tfpipeline.data.examples import EMBEDDING
from tfpipeline.errors import DataError

DEFAULT_KS = (1, 5, 10)
TIES = "pessimistic: equal scores rank non-relevant candidates first"


# --------------------------------------------------------------------------- metrics
def relevance_mask(shape: Tuple[int, int], relevant: Sequence[Iterable[int]]) -> np.ndarray:
    """Boolean ``[queries, candidates]`` matrix of the relevant candidate indices of each query."""
    n_queries, n_candidates = shape
    if len(relevant) != n_queries:
        raise DataError(f"{len(relevant)} relevant sets for {n_queries} queries")
    mask = np.zeros(shape, dtype=bool)
    for query, indices in enumerate(relevant):
        indices = list(indices)
        if not indices:
            raise DataError(f"query {query}: no relevant candidate")
        bad = [i for i in indices if not 0 <= i < n_candidates]
        if bad:
            raise DataError(f"query {query}: relevant index {bad[0]} is not a candidate (0..{n_candidates - 1})")
        mask[query, indices] = True
    return mask


def ranked_relevance(scores, relevant: Sequence[Iterable[int]]) -> np.ndarray:
    """Per query, whether the candidate at each rank (0 = best) is relevant, ties resolved as in ``TIES``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise DataError(f"scores must be a [queries, candidates] matrix, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise DataError(f"scores contain NaN (query {int(np.argwhere(np.isnan(scores))[0, 0])})")
    mask = relevance_mask(scores.shape, relevant)
    index = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((index, mask, -scores), axis=-1)   # last key first: score, then non-relevant, then index
    return np.take_along_axis(mask, order, axis=-1)


def recall_at_k(scores, relevant: Sequence[Iterable[int]], k: int) -> float:
    ranked = ranked_relevance(scores, relevant)
    k = _checked_k(k, ranked)
    return float(np.mean(ranked[:, :k].sum(axis=1) / np.minimum(ranked.sum(axis=1), k)))


def hit_rate_at_k(scores, relevant: Sequence[Iterable[int]], k: int) -> float:
    ranked = ranked_relevance(scores, relevant)
    return float(np.mean(ranked[:, :_checked_k(k, ranked)].any(axis=1)))


def mrr(scores, relevant: Sequence[Iterable[int]]) -> float:
    ranked = ranked_relevance(scores, relevant)
    return float(np.mean(1.0 / (ranked.argmax(axis=1) + 1)))


def ndcg_at_k(scores, relevant: Sequence[Iterable[int]], k: int) -> float:
    ranked = ranked_relevance(scores, relevant)
    k = _checked_k(k, ranked)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (ranked[:, :k] * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(ranked.sum(axis=1), k) - 1]
    return float(np.mean(dcg / ideal))


def _checked_k(k: int, ranked: np.ndarray) -> int:
    """``k`` capped at the number of candidates."""
    if int(k) != k or k < 1:
        raise DataError(f"k must be a positive whole number, got {k}")
    return min(int(k), ranked.shape[1])


# --------------------------------------------------------------------------- reports
def ranking_metrics(scores, relevant: Sequence[Iterable[int]], ks: Sequence[int] = DEFAULT_KS) -> Dict[str, float]:
    """Flat ``{"recall@k": ..., "mrr": ..., "ndcg@<largest k>": ...}``: the headline numbers of a model report."""
    metrics = {f"recall@{k}": recall_at_k(scores, relevant, k) for k in ks}
    metrics["mrr"] = mrr(scores, relevant)
    metrics[f"ndcg@{max(ks)}"] = ndcg_at_k(scores, relevant, max(ks))
    return metrics


def ranking_report(scores, relevant: Sequence[Iterable[int]], ks: Sequence[int] = DEFAULT_KS,
                   baselines: Optional[Mapping[str, object]] = None) -> Dict:
    """The metrics of ``scores`` (and of each baseline's score matrix, same shape) as a JSON-ready dict."""
    report = {"task": EMBEDDING, "queries": len(relevant), "candidates": int(np.shape(scores)[1]),
              "ties": TIES, **_metrics(scores, relevant, ks)}
    for name, baseline_scores in (baselines or {}).items():
        if np.shape(baseline_scores) != np.shape(scores):
            raise DataError(f"baseline {name!r}: scores of shape {np.shape(baseline_scores)}, "
                            f"the model's are {np.shape(scores)}")
        report.setdefault("baselines", {})[name] = _metrics(baseline_scores, relevant, ks)
    return report


def _metrics(scores, relevant: Sequence[Iterable[int]], ks: Sequence[int]) -> Dict:
    return {"mrr": mrr(scores, relevant),
            "recall": {str(k): recall_at_k(scores, relevant, k) for k in ks},
            "hit_rate": {str(k): hit_rate_at_k(scores, relevant, k) for k in ks},
            "ndcg": {str(k): ndcg_at_k(scores, relevant, k) for k in ks}}


def format_ranking_report(report: Dict) -> str:
    """A table: one row for the model and one per baseline, columns MRR, Recall@k, Hit@k, nDCG@k."""
    ks = list(report["recall"])
    rows = {"model": report, **report.get("baselines", {})}
    width = max([12] + [len(name) + 2 for name in rows])
    heads = ["MRR"] + [f"{head}@{k}" for head in ("R", "Hit", "nDCG") for k in ks]
    lines = [f"{'':<{width}}" + "".join(f"{h:>9}" for h in heads)]
    for name, row in rows.items():
        values = [row["mrr"]] + [row[metric][k] for metric in ("recall", "hit_rate", "ndcg") for k in ks]
        lines.append(f"{name:<{width}}" + "".join(f"{v:>9.4f}" for v in values))
    lines.append(f"({report['queries']} queries, {report['candidates']} candidates; ties {report['ties']})")
    return "\n".join(lines)


def retrieval_targets(pairs: Sequence, pool: Sequence = ()) -> Tuple[List[str], List[str], List[List[int]]]:
    """(queries, candidates, relevant) of (query, positive) pairs such as ``PairExample``s.

    Queries are the distinct query texts of ``pairs``, candidates the distinct positives
    of ``pool`` and ``pairs`` (one per ``group`` when pairs have one, else per text), both
    in first-seen order; a query's relevant set holds every candidate it was paired with.
    ``pool`` (e.g. the training pairs) only adds candidates: a realistic search ranks
    among every known document, not just the evaluation split's.
    """
    queries: Dict[str, List[int]] = {}
    candidates: Dict[Tuple[str, str], int] = {}
    texts: List[str] = []

    def candidate(pair) -> int:
        group = getattr(pair, "group", None)
        key = ("group", group) if group else ("text", pair.positive)
        if key not in candidates:
            candidates[key] = len(texts)
            texts.append(pair.positive)
        return candidates[key]

    for pair in pool:
        candidate(pair)
    for pair in pairs:
        relevant = queries.setdefault(pair.query, [])
        if candidate(pair) not in relevant:
            relevant.append(candidate(pair))
    return list(queries), texts, list(queries.values())


# --------------------------------------------------------------------------- baselines
def bm25_scores(queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
    """``[queries, documents]`` BM25 scores (bm25s defaults: Lucene variant, k1 1.5, b 0.75; lower-cased
    words of 2+ characters, English stopwords removed). A query sharing no word with a document scores 0."""
    if not documents:
        raise DataError("bm25_scores: no documents")
    retriever = bm25s.BM25()
    retriever.index(_bm25_tokens(documents), show_progress=False)
    rows = [retriever.get_scores_from_ids(retriever.get_tokens_ids(tokens)) for tokens in _bm25_tokens(queries)]
    return np.array(rows, dtype=np.float32).reshape(len(queries), len(documents))


def _bm25_tokens(texts: Sequence[str]) -> List[List[str]]:
    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def popularity_scores(train_interactions, candidates) -> np.ndarray:
    """How often each candidate item occurs in ``train_interactions`` (``[n, 2]`` (user, item) rows).

    ``candidates``: item ids, one list for all (1-D) or one row per query (2-D);
    the result has the same shape. Unseen items score 0.
    """
    items, counts = np.unique(_interaction_array(train_interactions)[:, 1], return_counts=True)
    candidates = np.asarray(candidates, dtype=np.int64)
    at = _positions(items, candidates)
    return np.where(at >= 0, counts[at], 0).astype(np.float64).reshape(candidates.shape)


def item_knn_scores(train_interactions, users: Sequence[int], candidates, k: int = 50) -> np.ndarray:
    """``[users, candidates]`` item-kNN scores: the sum of a candidate's cosine similarities to the items
    the user interacted with, counting only the candidate's ``k`` most similar items.

    Similarity is cosine between item columns of the binary user-item matrix built
    from ``train_interactions`` (``[n, 2]`` (user, item) rows; repeats count once).
    ``candidates`` is one list of item ids for every user (1-D) or one row per user
    (2-D). Unknown users or items score 0. Neighbour ties keep the lower item index.
    """
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    interactions = _interaction_array(train_interactions)
    user_ids, user_rows = np.unique(interactions[:, 0], return_inverse=True)
    item_ids, item_cols = np.unique(interactions[:, 1], return_inverse=True)
    matrix = sparse.csr_matrix((np.ones(len(interactions)), (user_rows, item_cols)),
                               shape=(len(user_ids), len(item_ids)))
    matrix.data[:] = 1.0                                   # duplicates were summed: back to binary
    candidates = _candidate_rows(candidates, len(users))
    wanted = np.unique(candidates)
    neighbours = _top_k_similarities(matrix, _positions(item_ids, wanted), k)      # [wanted, items]
    history = matrix[np.maximum(_positions(user_ids, users), 0)].toarray()
    history[_positions(user_ids, users) < 0] = 0.0
    scores_by_item = history @ neighbours.T                                        # [users, wanted]
    return np.take_along_axis(scores_by_item, np.searchsorted(wanted, candidates), axis=1)


def _top_k_similarities(matrix: sparse.csr_matrix, columns: np.ndarray, k: int) -> np.ndarray:
    """Rows of the item-item cosine matrix for ``columns`` (-1: an unknown item, all zero), each keeping
    only its ``k`` largest entries (itself excluded)."""
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())
    known = columns >= 0
    similarities = np.zeros((len(columns), matrix.shape[1]))
    if known.any():
        overlap = (matrix[:, columns[known]].T @ matrix).toarray()
        similarities[known] = overlap / np.outer(norms[columns[known]], norms)
        similarities[np.flatnonzero(known), columns[known]] = 0.0
    order = np.argsort(-similarities, axis=1, kind="stable")
    keep = np.zeros_like(similarities, dtype=bool)
    np.put_along_axis(keep, order[:, :k], True, axis=1)
    return np.where(keep, similarities, 0.0)


def _positions(ids: np.ndarray, values) -> np.ndarray:
    """Index of each value in the sorted, non-empty ``ids``, -1 where absent."""
    values = np.asarray(values, dtype=np.int64).ravel()
    at = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
    return np.where(ids[at] == values, at, -1)


def _candidate_rows(candidates, n_users: int) -> np.ndarray:
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.ndim == 1:
        return np.broadcast_to(candidates, (n_users, len(candidates)))
    if candidates.ndim != 2 or len(candidates) != n_users:
        raise DataError(f"candidates must be one list of items or one row per user ({n_users}), "
                        f"got shape {candidates.shape}")
    return candidates


def _interaction_array(train_interactions) -> np.ndarray:
    interactions = np.asarray(train_interactions, dtype=np.int64)
    if interactions.ndim != 2 or interactions.shape[1] != 2 or not len(interactions):
        raise DataError(f"train_interactions must be [n, 2] (user, item) rows, got shape {interactions.shape}")
    return interactions
