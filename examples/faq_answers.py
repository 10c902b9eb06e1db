"""Customer-service answer matching: fine-tune MiniLM as a bi-encoder on question -> answer pairs, answer new
questions with the best stored answer, hand unsure ones to a person.

Why: a support team has years of (question, best answer) pairs. A new question
should get the stored answer that fits it best, found in milliseconds among
all answers, and a question no answer fits should reach a human. The recipe
compares three rankers on held-out questions (every question of the test split
is new; it is ranked against every answer of the corpus): BM25 on the answer
texts (bm25s), the untuned all-MiniLM-L6-v2 (it is a sentence-embedding
model already) and the same model fine-tuned with in-batch negatives. It then
exports the fine-tuned encoder with the answers embedded in the SavedModel
(the ``search`` signature, what ``tfpipeline index`` writes), serves it and
answers new questions through the REST API.

    python examples/faq_answers.py            # ~5-10 min on 2 idle CPU cores
    python examples/faq_answers.py --smoke    # tiny random model, < 60 s
"""
from __future__ import annotations

import json

import numpy as np

import common


def main(argv=None) -> int:
    args = common.parser(__doc__.splitlines()[0], "faq_answers.yaml").parse_args(argv)
    recipe = common.load_recipe(args.config)
    with common.workspace(args, "faq_answers") as work:
        model_dir = common.train_model(recipe["train"], work, "answers", smoke=args.smoke,
                                       model_dir=args.model_dir[0] if args.model_dir else None)

        from tfpipeline.bundle import ModelBundle
        from tfpipeline.data.catalog import load_dataset
        from tfpipeline.evaluation.ranking import bm25_scores, format_ranking_report, ranking_report, \
            retrieval_targets

        data = load_dataset(recipe["train"]["dataset"])
        pool = data.train + data.validation
        test = data.test[:32] if args.smoke else data.test
        queries, answers, relevant = retrieval_targets(test, pool=pool)
        tuned = ModelBundle.load(model_dir).predictor()
        untuned = common.untuned_embedding_predictor(tuned.encoder, smoke=args.smoke, workdir=work)
        scores = tuned.similarity(queries, answers)
        report = ranking_report(scores, relevant, ks=(1, 5, 10),
                                baselines={"bm25": bm25_scores(queries, answers),
                                           "untuned": untuned.similarity(queries, answers)})
        print("\nheld-out questions ranked against every answer (model = fine-tuned bi-encoder):")
        print(format_ranking_report(report))

        gold = np.array([sorted(r)[0] for r in relevant])
        print(f"\nthreshold  coverage  accuracy of automated share   ({len(queries)} test questions)")
        for row in common.threshold_table(scores, gold, (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)):
            accuracy = "-" if np.isnan(row["automated_accuracy"]) else f"{row['automated_accuracy']:.1%}"
            print(f"{row['threshold']:>9.2f}{row['coverage']:>10.1%}{accuracy:>12}")

        threshold = recipe["threshold"]
        with common.served({"answers": model_dir}, work, documents={"answers": (None, answers)}) as clients:
            rows = clients["answers"].predict_texts(recipe["requests"], signature_name="search")
        replies = [{"question": q, "answer": row["texts"][0], "score": round(row["scores"][0], 3),
                    "to": "bot" if row["scores"][0] >= threshold else "human-agent"}
                   for q, row in zip(recipe["requests"], rows)]
        print(f"\nanswered by the served model's search signature (threshold {threshold}):")
        print(json.dumps(replies, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
