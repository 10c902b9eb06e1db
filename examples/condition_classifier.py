"""Medical condition classification: which condition is a patient's drug review about?

Why: pharmacovigilance and patient-forum triage need reviews filed under the
condition they discuss, even when it is never named ("lighter periods" ->
birth control). The recipe fine-tunes MiniLM on ``drug_reviews`` (top-10
conditions), prints per-condition F1 on the test split (small classes are
where such models fail), then serves the model and returns the top-3
conditions for new reviews, flagging uncertain ones for a human.

This is a text-classification demo, not a medical device: never use its
output for clinical decisions.

    python examples/condition_classifier.py            # ~3-5 min on 2 idle CPU cores
    python examples/condition_classifier.py --smoke    # tiny random model, < 60 s
"""
from __future__ import annotations

import json
import os

import common


def per_condition_f1(model_dir: str) -> dict:
    """Per-class F1 from the evaluation report ``train`` wrote next to the model."""
    from tfpipeline.training.trainer import REPORT_FILE

    with open(os.path.join(model_dir, REPORT_FILE), encoding="utf-8") as f:
        report = json.load(f)
    return {name: (row["f1-score"], int(row["support"])) for name, row in report.get("per_class", {}).items()}


def main(argv=None) -> int:
    args = common.parser(__doc__.splitlines()[0], "condition_classifier.yaml").parse_args(argv)
    cfg = common.load_recipe(args.config)
    with common.workspace(args, "condition_classifier") as work:
        model_dir = common.train_model(cfg["train"], work, "conditions", smoke=args.smoke,
                                       model_dir=args.model_dir[0] if args.model_dir else None)
        if not args.model_dir:
            print(f"\n{'condition':<22}{'test F1':>9}{'support':>9}")
            for name, (f1, support) in sorted(per_condition_f1(model_dir).items(), key=lambda kv: -kv[1][1]):
                print(f"{name:<22}{f1:>9.2f}{support:>9}")
        with common.served({"conditions": model_dir}, work) as clients:
            model = common.TextClassifier(model_dir, clients["conditions"])
            answers = [{"review": text, "top": [(c, round(s, 3)) for c, s in top],
                        "needs_review": top[0][1] < cfg["review_threshold"]}
                       for text, top in zip(cfg["requests"], model.top(cfg["requests"], k=cfg["top_k"]))]
        print("\nanswered by the served model:")
        print(json.dumps(answers, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
