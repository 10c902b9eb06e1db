"""Customer-service intent routing: ATIS intents, with low-confidence requests routed to a human.

Why: an intent model always answers with *some* intent, also for requests
it was never trained on ("refund my card"). Routing on the max softmax score
keeps automation for confident predictions and hands the rest to a person.
The recipe fine-tunes MiniLM on ``atis_intent``, prints how coverage and
accuracy of the automated share trade off against the threshold on the test
split, then serves the model and routes new messages through its REST API.

    python examples/intent_routing.py            # ~8-10 min on 2 idle CPU cores
    python examples/intent_routing.py --smoke    # tiny random model, < 60 s
"""
from __future__ import annotations

import json

import numpy as np

import common

HUMAN = "human-agent"


def route(intent: str, score: float, threshold: float, queues: dict, default_queue: str) -> str:
    """Queue for one prediction: a human below ``threshold``, else the intent's queue."""
    return HUMAN if score < threshold else queues.get(intent, default_queue)


def main(argv=None) -> int:
    args = common.parser(__doc__.splitlines()[0], "intent_routing.yaml").parse_args(argv)
    recipe = common.load_recipe(args.config)
    with common.workspace(args, "intent_routing") as work:
        model_dir = common.train_model(recipe["train"], work, "intent", smoke=args.smoke,
                                       model_dir=args.model_dir[0] if args.model_dir else None)

        from tfpipeline.data.catalog import load_dataset

        test = load_dataset(recipe["train"]["dataset"]).test[:64 if args.smoke else None]
        local = common.TextClassifier(model_dir)                     # in-process, for the bulk evaluation
        gold = np.array([local.labels.index(ex.label) for ex in test])
        probs = local.probabilities([ex.text for ex in test])
        print(f"\nthreshold  coverage  accuracy of automated share   ({len(test)} test requests)")
        for row in common.threshold_table(probs, gold, (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)):
            accuracy = "-" if np.isnan(row["automated_accuracy"]) else f"{row['automated_accuracy']:.1%}"
            print(f"{row['threshold']:>9.2f}{row['coverage']:>10.1%}{accuracy:>12}")

        threshold, queues, default = recipe["threshold"], recipe.get("queues", {}), recipe["default_queue"]
        with common.served({"intent": model_dir}, work) as clients:
            model = common.TextClassifier(model_dir, clients["intent"])
            answers = []
            for text, [(intent, score)] in zip(recipe["requests"], model.top(recipe["requests"])):
                answers.append({"text": text, "intent": intent, "score": round(score, 3),
                                "queue": route(intent, score, threshold, queues, default)})
        print(f"\nrouted by the served model (threshold {threshold}):")
        print(json.dumps(answers, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
