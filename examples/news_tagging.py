"""Topic + sentiment tagging of news articles with two served models.

Why: newsroom and media-monitoring tools want "what is it about" per article
and "how is it framed" per sentence. Sentiment models trained on short texts
work poorly on 400-word articles, so the article is split into sentences,
each scored by a sentiment model (``tweet_sentiment``: negative / neutral /
positive) while the whole article goes to a topic model (``bbc_topics``).
Both models are exported and served by one local server; the tags come from
its REST API.

    python examples/news_tagging.py            # ~20-30 min on 2 idle CPU cores (two fine-tunings)
    python examples/news_tagging.py --smoke    # tiny random models, < 60 s
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import List

import common

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def sentences(article: str, limit: int) -> List[str]:
    """Naive sentence split (news prose: end punctuation followed by a capital); short bits dropped."""
    return [s for s in SENTENCE_END.split(article) if len(s.split()) >= 4][:limit]


def tag_article(text: str, topic_model, sentiment_model, max_sentences: int) -> dict:
    [[(topic, topic_score)]] = topic_model.top([text])
    parts = sentences(text, max_sentences)
    scored = [(s, best[0]) for s, best in zip(parts, sentiment_model.top(parts))]
    counts = Counter(label for _, (label, _) in scored)
    negative = [(score, s) for s, (label, score) in scored if label == "negative"]
    return {"opening": text[:80], "topic": topic, "topic_score": round(topic_score, 3),
            "sentences": len(parts), "sentiment_counts": dict(counts),
            "most_negative_sentence": max(negative)[1][:160] if negative else None}


def main(argv=None) -> int:
    args = common.parser(__doc__.splitlines()[0], "news_tagging.yaml").parse_args(argv)
    cfg = common.load_recipe(args.config)
    given = args.model_dir + [None, None]
    with common.workspace(args, "news_tagging") as work:
        topic_dir = common.train_model(cfg["topic_train"], work, "topic", smoke=args.smoke, model_dir=given[0])
        sentiment_dir = common.train_model(cfg["sentiment_train"], work, "sentiment", smoke=args.smoke,
                                           model_dir=given[1])
        from tfpipeline.data.catalog import load_dataset

        articles = load_dataset(cfg["topic_train"]["dataset"]).test[:2 if args.smoke else cfg["articles"]]
        with common.served({"topic": topic_dir, "sentiment": sentiment_dir}, work) as clients:
            topic_model = common.TextClassifier(topic_dir, clients["topic"])
            sentiment_model = common.TextClassifier(sentiment_dir, clients["sentiment"])
            tagged = [dict(tag_article(ex.text, topic_model, sentiment_model, cfg["max_sentences"]),
                           gold_topic=ex.label) for ex in articles]
        print("\ntagged by the served models:")
        print(json.dumps(tagged, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
