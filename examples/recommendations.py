"""Personalised recommendation: two-tower retrieval with a fine-tuned MiniLM bi-encoder on MovieLens-100k,
against popularity and item-kNN baselines.

Why: a catalogue with text (titles, genres, descriptions) can be ranked for a user
by what the user's recent likes *say*, which also works for items with few or no
ratings, where collaborative filtering has nothing to go on. The recipe builds
user texts (the k most recent liked titles and genres) and item texts, fine-tunes
the bi-encoder on (user text before a like, liked item) pairs with in-batch
negatives, and evaluates leave-last-out: each sampled user's last liked movie
ranked among movies they never rated, HR@10 and NDCG@10, next to a popularity
ranker and item-kNN computed in the same run, overall and for cold-start items.
Then it exports the encoder with every movie embedded (``search``), serves it and
answers "top-10 for this user" through the REST API. Re-ranking with a
sentence-pair classifier is left out: the retrieval stage is what is measured.

    python examples/recommendations.py            # ~15-25 min on 2 idle CPU cores
    python examples/recommendations.py --smoke    # tiny random model, small samples, < 90 s
"""
from __future__ import annotations

import json
import random

import numpy as np

import common

SMOKE_SIZES = {"training_pairs": 160, "evaluation_users": 40}


def training_pairs(movielens, split, history_length: int, limit: int, seed: int) -> list:
    """(user text before a liked training movie, that movie's text) pairs, at most ``limit``, sampled."""
    from tfpipeline.data.examples import PairExample
    from tfpipeline.data.movielens import LIKED_RATING

    pairs = []
    for user, history in split.train.items():
        for n, interaction in enumerate(history):
            before = movielens.user_text(history[:n], history_length)
            if interaction.rating >= LIKED_RATING and before:
                pairs.append(PairExample(before, movielens.item_text(interaction.item), group=str(interaction.item),
                                         origin=f"user {user} #{n}"))
    random.Random(seed).shuffle(pairs)
    return pairs[:limit]


def evaluation_rows(movielens, split, users, negatives: int, seed: int) -> np.ndarray:
    """[users, 1 + negatives] candidate item ids per user: the held-out liked movie first."""
    return np.array([[split.test[u].item, *movielens.sample_negatives(u, negatives, seed)] for u in users])


def main(argv=None) -> int:
    args = common.parser(__doc__.splitlines()[0], "recommendations.yaml").parse_args(argv)
    recipe = common.load_recipe(args.config)
    if args.smoke:
        recipe.update(SMOKE_SIZES)
    from tfpipeline.data.examples import EMBEDDING, TaskData
    from tfpipeline.data.movielens import leave_last_out, load_movielens
    from tfpipeline.evaluation.ranking import hit_rate_at_k, item_knn_scores, ndcg_at_k, popularity_scores

    seed, k = recipe["seed"], recipe["history_length"]
    movielens = load_movielens()
    split = leave_last_out(movielens, seed=seed)
    pairs = training_pairs(movielens, split, k, recipe["training_pairs"], seed)
    cut = max(2, len(pairs) // 10)
    users = sorted(random.Random(seed).sample(sorted(split.test), min(recipe["evaluation_users"], len(split.test))))
    data = TaskData(name="movielens-100k", task=EMBEDDING, train=pairs[cut:], validation=pairs[:cut],
                    test=pairs[:cut])
    with common.workspace(args, "recommendations") as work:
        model_dir = common.train_model(recipe["train"], work, "two_tower", smoke=args.smoke, data=data,
                                       model_dir=args.model_dir[0] if args.model_dir else None)
        candidates = evaluation_rows(movielens, split, users, recipe["negatives"], seed)
        relevant = [{0}] * len(users)
        predictor = common.predictor(model_dir)
        user_vectors = predictor.embed([movielens.user_text(split.history(u, "test"), k) for u in users])
        item_ids = np.unique(candidates)
        item_vectors = dict(zip(item_ids, predictor.embed([movielens.item_text(i) for i in item_ids])))
        text_scores = np.einsum("uh,uch->uc", user_vectors,
                                np.stack([[item_vectors[i] for i in row] for row in candidates]))
        train_rows = split.train_pairs()
        methods = {"two-tower text": text_scores, "popularity": popularity_scores(train_rows, candidates),
                   "item-kNN": item_knn_scores(train_rows, users, candidates)}
        counts = dict(zip(*np.unique(train_rows[:, 1], return_counts=True)))
        cold = np.array([counts.get(split.test[u].item, 0) <= recipe["cold_start_ratings"] for u in users])
        print(f"\nleave-last-out, {len(users)} users, the held-out liked movie among {recipe['negatives']} "
              f"unrated ones ({int(cold.sum())} held-out movies are cold-start: <= {recipe['cold_start_ratings']} "
              f"training ratings)")
        print(f"{'method':<16}{'HR@10':>8}{'NDCG@10':>9}{'HR@10 cold':>12}{'HR@10 warm':>12}")
        for name, scores in methods.items():
            parts = [hit_rate_at_k(scores[mask], [r for r, m in zip(relevant, mask) if m], 10) if mask.any()
                     else float("nan") for mask in (cold, ~cold)]
            print(f"{name:<16}{hit_rate_at_k(scores, relevant, 10):>8.3f}{ndcg_at_k(scores, relevant, 10):>9.3f}"
                  f"{parts[0]:>12.3f}{parts[1]:>12.3f}")

        user = recipe["request_user"] if recipe["request_user"] in split.test else users[0]
        catalogue = [str(i) for i in movielens.item_ids]
        documents = {"movies": (catalogue, [movielens.item_text(int(i)) for i in catalogue])}
        with common.served({"movies": model_dir}, work, documents=documents) as clients:
            row = clients["movies"].predict_texts([movielens.user_text(split.history(user, "test"), k)],
                                                  signature_name="search")[0]
        rated = {i.item for i in split.timelines[user]}
        picks = [{"movie": text, "score": round(score, 3), "already_rated": int(item) in rated}
                 for item, text, score in zip(row["ids"], row["texts"], row["scores"])]
        print(f"\ntop-{len(picks)} for user {user} from the served model's search signature:")
        print(json.dumps(picks, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
