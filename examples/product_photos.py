"""Product-photo triage: file new catalogue photos under a shelf, send unsure ones to manual review.

Why: a shop's catalogue team photographs every new item and files it under a
category. A classifier can do the filing, but it always answers with *some*
category; routing on its top score keeps automation for confident photos and
hands the rest to a person. The recipe fine-tunes the offline ImageNet
MobileNetV2 on Fashion-MNIST product photos, prints per-category scores and
how coverage and accuracy trade off against the threshold on the test split,
then serves the model and files new photos through its REST API (encoded PNG
bytes sent as ``{"b64": ...}``, decoded and resized inside the SavedModel).

    python examples/product_photos.py            # ~10 min on 2 idle CPU cores
    python examples/product_photos.py --smoke    # tiny random ViT, < 60 s
"""
from __future__ import annotations

import json

import numpy as np

import common

REVIEW = "manual-review"


def shelf(category: str, score: float, threshold: float, shelves: dict) -> str:
    """Where one photo goes: manual review below ``threshold``, else its category's shelf."""
    return REVIEW if score < threshold else shelves.get(category, category)


def main(argv=None) -> int:
    args = common.parser(__doc__.splitlines()[0], "product_photos.yaml").parse_args(argv)
    recipe = common.load_recipe(args.config)
    with common.workspace(args, "product_photos") as work:
        model_dir = common.train_model(recipe["train"], work, "photos", smoke=args.smoke,
                                       model_dir=args.model_dir[0] if args.model_dir else None)

        from tfpipeline.data.catalog import load_dataset

        test = load_dataset(recipe["train"]["dataset"]).test[:64 if args.smoke else 2000]
        local = common.predictor(model_dir)                       # in-process, for the bulk evaluation
        gold = np.array([local.labels.id(ex.label) for ex in test])
        probs = local.class_probabilities([ex.image for ex in test])
        print(f"\nthreshold  coverage  accuracy of automated share   ({len(test)} test photos)")
        for row in common.threshold_table(probs, gold, (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)):
            accuracy = "-" if np.isnan(row["automated_accuracy"]) else f"{row['automated_accuracy']:.1%}"
            print(f"{row['threshold']:>9.2f}{row['coverage']:>10.1%}{accuracy:>12}")

        threshold, shelves = recipe["threshold"], recipe.get("shelves", {})
        photos = [test[i] for i in recipe["requests"] if i < len(test)]
        with common.served({"photos": model_dir}, work) as clients:
            answers = []
            for photo, row in zip(photos, clients["photos"].predict_images([p.image for p in photos])):
                score = max(row["scores"])
                answers.append({"photo": photo.origin, "true": photo.label, "category": row["label"],
                                "score": round(score, 3), "shelf": shelf(row["label"], score, threshold, shelves)})
        print(f"\nfiled by the served model (threshold {threshold}):")
        print(json.dumps(answers, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
