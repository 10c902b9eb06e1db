"""NER extraction service: raw text in, typed entity spans with character offsets out.

Why: downstream code (a booking form, a search filter) needs *where* each
value is in the user's text, not just tags per token. The recipe fine-tunes
MiniLM on ``atis_slots``, extracts spans in-process with
``Predictor.extract`` (words, BIO tags, offsets, merged entities), then
serves the model and checks that the server's ``serving_default`` signature
returns the same spans for the same requests.

    python examples/ner_service.py            # ~6-8 min on 2 idle CPU cores
    python examples/ner_service.py --smoke    # tiny random model, < 60 s
"""
from __future__ import annotations

import json
from typing import List

import common


def served_entities(prediction: dict) -> List[dict]:
    """One REST prediction of the NER export -> [{type, text, start, end}] (padding dropped)."""
    n = int(prediction["num_entities"])
    return [{"type": prediction["entity_type"][i], "text": prediction["entity_text"][i],
             "start": int(prediction["entity_start"][i]), "end": int(prediction["entity_end"][i])}
            for i in range(n)]


def main(argv=None) -> int:
    args = common.parser(__doc__.splitlines()[0], "ner_service.yaml").parse_args(argv)
    cfg = common.load_recipe(args.config)
    texts = cfg["requests"]
    with common.workspace(args, "ner_service") as work:
        model_dir = common.train_model(cfg["train"], work, "slots", smoke=args.smoke,
                                       model_dir=args.model_dir[0] if args.model_dir else None)
        local = [[{k: e[k] for k in ("type", "text", "start", "end")} for e in r["entities"]]
                 for r in common.predictor(model_dir).extract(texts)]
        print("\nin-process (Predictor.extract):")
        print(json.dumps([{"text": t, "entities": e} for t, e in zip(texts, local)], indent=2))
        with common.served({"slots": model_dir}, work) as clients:
            remote = [served_entities(p) for p in clients["slots"].predict_texts(texts)]
        print("\nanswered by the served model (REST :predict):")
        print(json.dumps([{"text": t, "entities": e} for t, e in zip(texts, remote)], indent=2))
        mismatched = [t for t, a, b in zip(texts, local, remote) if a != b]
        print(f"WARNING: server and Predictor.extract disagree on {mismatched}" if mismatched
              else "served spans match Predictor.extract")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
