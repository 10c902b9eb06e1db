"""The embedding task's data and metrics: pair files, faq_pairs, MovieLens-100k, ranking metrics and baselines.

Nothing here imports TensorFlow: the readers, the catalog, ``data.movielens``
and ``evaluation.ranking`` are plain Python / numpy / scipy.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from tfpipeline.config import DataOptions
from tfpipeline.data import catalog
from tfpipeline.data.catalog import is_available, load_dataset
from tfpipeline.data.examples import EMBEDDING, PairExample
from tfpipeline.data.movielens import LIKED_RATING, leave_last_out, load_movielens, movielens_folder
from tfpipeline.data.pair_files import read_pair_file
from tfpipeline.data.readers import BadRows, read_task_file
from tfpipeline.data.sources import RECORDED_COLUMNS, data_from_options, hold_out, load_task_data
from tfpipeline.errors import ConfigError, DataError
from tfpipeline.evaluation.ranking import (bm25_scores, format_ranking_report, hit_rate_at_k, item_knn_scores, mrr,
                                           ndcg_at_k, popularity_scores, ranking_metrics, ranking_report, recall_at_k,
                                           retrieval_targets)


def write(tmp_path, name, content) -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- pair files
def test_pair_csv_reads_queries_positives_and_negatives_with_origins(tmp_path):
    path = write(tmp_path, "p.csv", "query,positive,negative\nhow do I reset?, Use the reset link. ,Call us.\n"
                                    '"multi, part",yes,\n')
    rows = read_pair_file(path, negative_column="negative")
    assert rows == [PairExample("how do I reset?", "Use the reset link.", "Call us.", origin=f"{path}:2"),
                    PairExample("multi, part", "yes", None, origin=f"{path}:3")]     # empty negative: none


def test_pair_tsv_with_custom_columns_ignores_others(tmp_path):
    path = write(tmp_path, "p.tsv", "q\ta\textra\nwhat is AI?\tthe study of agents\tx\n")
    (row,) = read_pair_file(path, query_column="q", positive_column="a")
    assert (row.query, row.positive, row.negative, row.group) == ("what is AI?", "the study of agents", None, None)


def test_pair_header_without_a_column_stops_the_read_even_when_skipping(tmp_path):
    path = write(tmp_path, "p.csv", "query,answer\nq,a\n")
    for mode in ("error", "skip"):
        with pytest.raises(DataError, match=rf"p\.csv:2: missing column 'positive' \(found: query, answer\)"):
            read_pair_file(path, bad_rows=BadRows(mode))
    path = write(tmp_path, "n.csv", "query,positive\nq,a\n")
    with pytest.raises(DataError, match="missing column 'hard'"):
        read_pair_file(path, negative_column="hard")


@pytest.mark.parametrize("content, problem", [
    ("query,positive\nfine,ok\n ,empty query\n", r":3: field 'query' is empty"),
    ("query,positive\nfine,ok\nno answer,\n", r":3: field 'positive' is empty"),
])
def test_empty_query_or_positive_is_a_bad_row(tmp_path, content, problem):
    path = write(tmp_path, "p.csv", content)
    with pytest.raises(DataError, match=problem):
        read_pair_file(path)
    bad_rows = BadRows("skip")
    rows = read_pair_file(path, bad_rows=bad_rows)
    assert [r.query for r in rows] == ["fine"]
    assert len(bad_rows.skipped) == 1 and bad_rows.skipped[0].startswith(f"{path}:3:")


def test_pair_jsonl_rows_bad_rows_and_negative_rules(tmp_path):
    lines = [json.dumps({"query": "q1", "positive": "p1", "negative": "n1"}), "",
             json.dumps({"query": "q2", "positive": "p2"}),                    # no negative: fine
             json.dumps({"query": "q3"}),                                       # no positive: bad row
             "not json",
             json.dumps({"query": "q5", "positive": "same", "negative": "same"}),
             json.dumps({"query": ["a list"], "positive": "p6"})]
    path = write(tmp_path, "p.jsonl", "\n".join(lines) + "\n")
    bad_rows = BadRows("skip")
    rows = read_pair_file(path, negative_column="negative", bad_rows=bad_rows)
    assert [(r.query, r.positive, r.negative, r.origin) for r in rows] == [
        ("q1", "p1", "n1", f"{path}:1"), ("q2", "p2", None, f"{path}:3")]
    assert [s.split(": ")[0] for s in bad_rows.skipped] == [f"{path}:{n}" for n in (4, 5, 6, 7)]
    assert "missing column 'positive'" in bad_rows.skipped[0] and "is the positive" in bad_rows.skipped[2]
    with pytest.raises(DataError, match=r"p\.jsonl:4: missing column 'positive'"):
        read_pair_file(path, negative_column="negative")
    with pytest.raises(DataError, match="no row has the negative column 'hard'"):
        read_pair_file(path, negative_column="hard", bad_rows=BadRows("skip"))


def test_pair_file_without_rows_or_with_an_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        read_pair_file(write(tmp_path, "h.csv", "query,positive\n"))
    with pytest.raises(DataError, match=r"\.csv, \.tsv or \.jsonl"):
        read_pair_file(write(tmp_path, "p.txt", "query positive\n"))


def test_read_task_file_dispatches_embedding_and_text_readers_ignore_the_pair_columns(tmp_path):
    options = DataOptions(query_column="question", positive_column="answer").reader_options()
    pairs = write(tmp_path, "pairs.csv", "question,answer\nq,a\n")
    assert read_task_file(pairs, EMBEDDING, **options) == [PairExample("q", "a", origin=f"{pairs}:2")]
    texts = write(tmp_path, "texts.csv", "text,label\nhello,pos\n")
    assert read_task_file(texts, "classification", **options)[0].text == "hello"
    with pytest.raises(DataError, match="embedding"):
        read_task_file(pairs, "no_such_task")


def test_pair_files_load_as_task_data_with_a_linked_hold_out(tmp_path):
    rows = ["query,positive"] + [f"question {i} variant {v},answer {i}" for i in range(30) for v in range(3)]
    path = write(tmp_path, "train.csv", "\n".join(rows) + "\n")
    data = load_task_data(task=EMBEDDING, train_file=path, seed=3)
    assert data.task == EMBEDDING and len(data.train) + len(data.validation) == 90
    assert len(data.validation) == 9                                  # 10%, three whole answers
    assert not {ex.positive for ex in data.train} & {ex.positive for ex in data.validation}
    assert data.files["validation"].endswith("10% held out")
    assert {"query_column", "positive_column", "negative_column"} <= set(RECORDED_COLUMNS)
    recorded = {"dataset": path, "config": {"train_file": path, "query_column": "query"}}
    again = data_from_options(DataOptions(), task=EMBEDDING, seed=3, recorded=recorded)
    assert (again.train, again.validation) == (data.train, data.validation)


def test_linked_hold_out_never_splits_a_query_or_an_answer():
    pairs = [PairExample(f"q{i % 7}", f"a{i % 5}") for i in range(12)]        # chains q-a links into clusters
    pairs += [PairExample(f"solo q{i}", f"solo a{i}", group=f"g{i // 2}") for i in range(20)]
    for seed in range(5):
        train, held = hold_out(pairs, EMBEDDING, 0.1, seed)
        assert sorted(map(repr, train + held)) == sorted(map(repr, pairs)) and held and train
        for key in (lambda ex: ex.query, lambda ex: ex.group or ex.positive):
            assert not {key(ex) for ex in train} & {key(ex) for ex in held}
    one_cluster = [PairExample(f"q{i}", "same answer") for i in range(10)]
    train, held = hold_out(one_cluster, EMBEDDING, 0.1, 0)                 # cannot be cut cleanly: at random
    assert len(held) == 1 and len(train) == 9


# --------------------------------------------------------------------------- faq_pairs
@pytest.fixture(scope="module")
def faq():
    if not is_available("faq_pairs"):
        pytest.skip("faq_pairs: pip install --no-deps chatterbot-corpus==1.3.3")
    return load_dataset("faq_pairs")


def test_faq_pairs_sizes_groups_and_duplicates(faq):
    pairs = faq.train + faq.validation + faq.test
    assert faq.task == EMBEDDING and faq.labels == []
    assert 850 <= len(pairs) <= 900 and len(faq.test) < len(faq.train) / 4
    assert all(isinstance(ex, PairExample) and ex.query and ex.positive and ex.group for ex in pairs)
    assert all(ex.query == ex.query.strip() and "  " not in ex.positive for ex in pairs)
    assert len({(ex.query, ex.positive) for ex in pairs}) == len(pairs)                 # deduplicated
    by_group = {}
    for ex in pairs:                                                                      # one id per answer
        assert by_group.setdefault(ex.group, ex.positive.casefold()) == ex.positive.casefold()
    assert len({ex.positive.casefold() for ex in pairs}) == len(by_group)
    assert "1128 duplicate pair(s) dropped" in faq.description and "BSD" in faq.description
    assert "1 pair(s) with an empty or non-string turn dropped" in faq.description      # trivia.yml's bare string
    per_question = Counter(ex.query.casefold() for ex in pairs)
    assert max(per_question.values()) > 1                          # relevant sets do have several members


def test_faq_test_questions_are_unseen_and_unseen_answers_are_counted(faq):
    questions = [{ex.query.casefold() for ex in split} for split in (faq.train, faq.validation, faq.test)]
    assert not questions[0] & questions[1] and not questions[0] & questions[2] and not questions[1] & questions[2]
    unseen = {ex.group for ex in faq.test} - {ex.group for ex in faq.train}
    assert f"{len(unseen)} of {len({ex.group for ex in faq.test})} test answers never in training" in faq.description
    assert all(ex.origin.startswith("chatterbot_corpus/data/english/") for ex in faq.test)


def test_faq_origins_point_at_the_conversation_line(faq):
    site = os.path.dirname(catalog.package_dir("chatterbot-corpus"))
    for ex in faq.train[:50]:
        path, _, line = ex.origin.rpartition(":")
        with open(os.path.join(site, path), encoding="utf-8") as f:
            source_line = f.read().split("\n")[int(line) - 1]
        assert ex.query.split()[0] in source_line, ex.origin


def test_faq_split_is_seeded(faq):
    other = load_dataset("faq_pairs", seed=7)
    assert sorted(map(repr, other.train + other.validation + other.test)) == \
        sorted(map(repr, faq.train + faq.validation + faq.test))
    assert {ex.query for ex in other.test} != {ex.query for ex in faq.test}


# --------------------------------------------------------------------------- MovieLens-100k
@pytest.fixture(scope="module")
def movielens():
    try:
        movielens_folder()
    except DataError:
        pytest.skip("recbole is not installed: pip install --no-deps recbole==1.2.1")
    return load_movielens()


def test_movielens_shapes_and_texts(movielens):
    assert len(movielens.users) == len(movielens.items) == len(movielens.ratings) == 100_000
    assert len(movielens.user_ids) == 943 and len(movielens.item_ids) == 1682
    assert set(np.unique(movielens.ratings)) == {1, 2, 3, 4, 5}
    assert not movielens.ratings.flags.writeable
    assert movielens.item_text(1) == "Toy Story (1995) - Animation, Children's, Comedy"
    assert movielens.item_text(12) == "The Usual Suspects (1995) - Crime, Thriller"
    assert movielens.item_text(267) == "unkonwn"                                 # the source's unknown movie
    history = movielens.history(1)
    assert [i.timestamp for i in history] == sorted(i.timestamp for i in history)
    liked = [i.item for i in history if i.rating >= LIKED_RATING]
    text = movielens.user_text(history, 2)
    assert text == f"{movielens.item_text(liked[-1])}; {movielens.item_text(liked[-2])}"
    assert movielens.user_text([], 3) == ""
    with pytest.raises(DataError, match="no item 99999"):
        movielens.item_text(99999)


def test_leave_last_out_invariants(movielens):
    split = leave_last_out(movielens, min_liked=5, seed=1)
    assert set(split.test) == set(split.validation) and 900 < len(split.test) <= 943
    assert sum(map(len, split.train.values())) + 2 * len(split.test) == 100_000
    for user in list(split.test)[:100]:
        test, validation = split.test[user], split.validation[user]
        assert test.rating >= LIKED_RATING and validation.rating >= LIKED_RATING
        assert validation.timestamp <= test.timestamp
        train_items = {i.item for i in split.train[user]}
        assert test.item not in train_items and validation.item not in train_items
        liked_train = [i for i in split.train[user] if i.rating >= LIKED_RATING]
        assert len(liked_train) >= 3 and all(i.timestamp <= validation.timestamp for i in liked_train)
        assert validation in split.history(user, "test")
        assert validation not in split.history(user, "validation") and test not in split.history(user, "test")
    assert leave_last_out(movielens, seed=1).test == split.test                  # deterministic
    with pytest.raises(ConfigError, match="min_liked"):
        leave_last_out(movielens, min_liked=2)


def test_sampled_negatives_were_never_rated(movielens):
    user = 1
    rated = {i.item for i in movielens.history(user)}
    negatives = movielens.sample_negatives(user, 99, seed=0)
    assert len(set(negatives.tolist())) == 99 and not rated & set(negatives.tolist())
    assert (negatives == movielens.sample_negatives(user, 99, seed=0)).all()
    assert (negatives != movielens.sample_negatives(user, 99, seed=1)).any()
    with pytest.raises(DataError, match="cannot sample"):
        movielens.sample_negatives(user, 2000, seed=0)


def test_item_knn_beats_popularity_on_movielens(movielens):
    split = leave_last_out(movielens, min_liked=5, seed=0)
    users = sorted(split.test)[:200]
    candidates = np.array([[split.test[u].item, *movielens.sample_negatives(u, 99, seed=0)] for u in users])
    relevant = [[0]] * len(users)
    pairs = split.train_pairs(liked_only=True)
    knn = hit_rate_at_k(item_knn_scores(pairs, users, candidates, k=50), relevant, 10)
    popular = hit_rate_at_k(popularity_scores(pairs, candidates), relevant, 10)
    assert 0.3 < popular < knn                                                   # both far above random (0.1)


# --------------------------------------------------------------------------- metrics
def test_perfect_ranking_scores_one_everywhere():
    scores = np.array([[0.9, 0.1, 0.5, 0.2], [0.1, 0.8, 0.7, 0.0]])
    relevant = [[0, 2], [1, 2]]                                                  # two right answers each
    for k in (1, 2, 4, 10):
        assert recall_at_k(scores, relevant, k) == hit_rate_at_k(scores, relevant, k) == 1.0
        assert ndcg_at_k(scores, relevant, k) == pytest.approx(1.0)
    assert mrr(scores, relevant) == 1.0


def test_known_values():
    scores = np.array([[0.1, 0.9, 0.5],     # relevant 0 at rank 3
                       [0.1, 0.9, 0.5],     # relevant 2 at rank 2
                       [0.3, 0.2, 0.1]])    # relevant 0 at rank 1
    relevant = [[0], [2], [0]]
    assert mrr(scores, relevant) == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    assert recall_at_k(scores, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(scores, relevant, 2) == pytest.approx(2 / 3)
    assert ndcg_at_k(scores, relevant, 3) == pytest.approx((1 / np.log2(4) + 1 / np.log2(3) + 1) / 3)
    # two relevant, ranked 1st and 3rd: recall@2 = 1/2, nDCG@3 = (1 + 1/2) / (1 + 1/log2(3))
    two = np.array([[0.9, 0.5, 0.4]])
    assert recall_at_k(two, [[0, 2]], 2) == 0.5 and hit_rate_at_k(two, [[0, 2]], 2) == 1.0
    assert ndcg_at_k(two, [[0, 2]], 3) == pytest.approx(1.5 / (1 + 1 / np.log2(3)))


def test_ties_count_against_the_relevant_candidate_wherever_it_sits():
    constant = np.zeros((3, 4))
    for position in range(4):
        relevant = [[position]] * 3
        assert mrr(constant, relevant) == 0.25 and recall_at_k(constant, relevant, 3) == 0.0
    tied_pair = np.array([[1.0, 1.0, 0.0]])
    assert mrr(tied_pair, [[0]]) == mrr(tied_pair, [[1]]) == 0.5                 # the other tied one goes first
    assert mrr(tied_pair, [[0, 1]]) == 1.0 and recall_at_k(tied_pair, [[0, 1]], 2) == 1.0


def test_metrics_reject_bad_input():
    scores = np.zeros((2, 3))
    with pytest.raises(DataError, match="query 1: no relevant candidate"):
        mrr(scores, [[0], []])
    with pytest.raises(DataError, match="query 0: relevant index 3"):
        mrr(scores, [[3], [0]])
    with pytest.raises(DataError, match="2 queries"):
        mrr(scores, [[0]])
    with pytest.raises(DataError, match="positive whole number"):
        recall_at_k(scores, [[0], [1]], 0)
    with pytest.raises(DataError, match="NaN"):
        mrr(np.array([[0.0, np.nan]]), [[0]])


def test_ranking_report_is_json_ready_and_formats_baselines():
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    report = ranking_report(scores, [[0], [1]], ks=(1, 2), baselines={"bm25": np.zeros((2, 2))})
    assert json.loads(json.dumps(report)) == report
    assert report["task"] == EMBEDDING and report["mrr"] == 1.0 and report["recall"] == {"1": 1.0, "2": 1.0}
    assert report["baselines"]["bm25"]["recall"]["1"] == 0.0
    table = format_ranking_report(report)
    assert table.splitlines()[1].startswith("model") and table.splitlines()[2].startswith("bm25")
    assert "R@1" in table and "nDCG@2" in table and "2 queries, 2 candidates" in table
    assert ranking_metrics(scores, [[1], [1]], ks=(1, 2)) == {"recall@1": 0.5, "recall@2": 1.0, "mrr": 0.75,
                                                             "ndcg@2": pytest.approx((1 / np.log2(3) + 1) / 2)}
    with pytest.raises(DataError, match="baseline 'bm25'"):
        ranking_report(scores, [[0], [1]], baselines={"bm25": np.zeros((2, 3))})


def test_retrieval_targets_collect_every_answer_of_a_query():
    pairs = [PairExample("q1", "a", group="g1"), PairExample("q2", "a again", group="g1"),
             PairExample("q1", "b"), PairExample("q3", "b")]
    queries, candidates, relevant = retrieval_targets(pairs)
    assert queries == ["q1", "q2", "q3"] and candidates == ["a", "b"]
    assert relevant == [[0, 1], [0], [1]]


# --------------------------------------------------------------------------- baselines
def test_bm25_ranks_the_lexical_match_first():
    documents = ["Restart your router and check the cables.", "Use the password reset option.",
                 "Check the volume and the output device.", "the of and"]
    queries = ["my internet router is down", "I forgot my password", "no sound from the output device",
               "completely unrelated words"]
    scores = bm25_scores(queries, documents)
    assert scores.shape == (4, 4)
    assert list(scores[:3].argmax(axis=1)) == [0, 1, 2]
    assert not scores[3].any() and not scores[:, 3].any()          # no shared word, a stopword-only document
    assert mrr(scores[:3], [[0], [1], [2]]) == 1.0


def test_popularity_and_item_knn_on_a_toy_matrix():
    # items 10 (users 1, 2, 3), 11 (users 1, 2), 12 (users 3, 4): cos(10, 11) = 2/sqrt(6), cos(10, 12) = 1/sqrt(6)
    interactions = [(1, 10), (1, 11), (2, 10), (2, 11), (3, 12), (3, 10), (4, 12), (4, 12)]
    assert popularity_scores(interactions, [10, 11, 12, 99]).tolist() == [3, 2, 3, 0]
    assert popularity_scores(interactions, [[11, 99], [12, 10]]).tolist() == [[2, 0], [3, 3]]
    high, low = 2 / np.sqrt(6), 1 / np.sqrt(6)
    scores = item_knn_scores(interactions, [1, 4, 99], [10, 11, 12, 99], k=5)
    assert scores == pytest.approx(np.array([[high, high, low, 0], [low, 0, 0, 0], [0, 0, 0, 0]]))
    one = item_knn_scores(interactions, [4], [10], k=1)             # 10's nearest neighbour is 11, not 12
    assert one.tolist() == [[0.0]]
    per_user = item_knn_scores(interactions, [1, 4], [[12, 11], [10, 11]], k=5)
    assert per_user == pytest.approx(np.array([[low, high], [low, 0]]))


def test_new_modules_do_not_import_tensorflow():
    code = ("import sys, tfpipeline.data.pair_files, tfpipeline.data.movielens, tfpipeline.evaluation.ranking, "
            "tfpipeline.data.sources; sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
