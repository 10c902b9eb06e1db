"""Sentiment monitoring: stream tweets through the served model, alert on a burst of negativity.

Why: a brand or support team watches the *share* of negative messages over
the last N, not single predictions; one misclassified tweet must not page
anyone, a sustained shift should. The recipe fine-tunes MiniLM on
``tweet_sentiment``, serves it, replays the test split as a bounded stream
(with a simulated incident: a run of genuinely negative tweets inserted in
the middle), scores it in micro-batches over REST, and raises an alert when
the predicted negative share of the sliding window crosses a threshold. The
gold share of the same window is printed next to it, to judge the monitor.

    python examples/sentiment_monitor.py            # ~6-10 min on 2 idle CPU cores
    python examples/sentiment_monitor.py --smoke    # tiny random model, < 60 s
"""
from __future__ import annotations

import random
from collections import deque
from typing import Iterator, List, Sequence, Tuple

import common


def replay_stream(examples: Sequence, size: int, incident: int, negative: str, seed: int = 0) -> List[Tuple[str, str]]:
    """(text, gold label) pairs: ``size`` shuffled test tweets with ``incident`` negative ones mid-stream."""
    rng = random.Random(seed)
    pool = list(examples)
    rng.shuffle(pool)
    stream = [(ex.text, ex.label) for ex in pool[:size]]
    burst = [(ex.text, ex.label) for ex in pool[size:] if ex.label == negative][:incident]
    middle = len(stream) // 2
    return stream[:middle] + burst + stream[middle:]


def micro_batches(stream: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(stream), size):
        yield stream[start:start + size]


class NegativeShareMonitor:
    """Sliding window over predicted labels; alerts once per crossing of ``alert_share``."""

    def __init__(self, window: int, alert_share: float, negative: str):
        self.window, self.alert_share, self.negative = window, alert_share, negative
        self.predicted: deque = deque(maxlen=window)
        self.gold: deque = deque(maxlen=window)
        self.alerting = False

    def add(self, predicted: str, gold: str):
        """Add one message; returns (predicted share, gold share) when an alert starts, else None."""
        self.predicted.append(predicted == self.negative)
        self.gold.append(gold == self.negative)
        if len(self.predicted) < self.window:
            return None
        share = sum(self.predicted) / self.window
        if share >= self.alert_share and not self.alerting:
            self.alerting = True
            return share, sum(self.gold) / self.window
        if share < self.alert_share:
            self.alerting = False
        return None


def main(argv=None) -> int:
    args = common.parser(__doc__.splitlines()[0], "sentiment_monitor.yaml").parse_args(argv)
    cfg = common.load_recipe(args.config)
    if args.smoke:
        cfg.update(stream_size=60, micro_batch=10, window=20, incident_size=20)
    with common.workspace(args, "sentiment_monitor") as work:
        model_dir = common.train_model(cfg["train"], work, "sentiment", smoke=args.smoke,
                                       model_dir=args.model_dir[0] if args.model_dir else None)
        from tfpipeline.data.catalog import load_dataset

        stream = replay_stream(load_dataset(cfg["train"]["dataset"]).test, cfg["stream_size"],
                               cfg["incident_size"], cfg["negative_label"])
        monitor = NegativeShareMonitor(cfg["window"], cfg["alert_share"], cfg["negative_label"])
        alerts, seen = [], 0
        with common.served({"sentiment": model_dir}, work) as clients:
            model = common.TextClassifier(model_dir, clients["sentiment"])
            for batch in micro_batches(stream, cfg["micro_batch"]):          # one REST request each
                for (text, gold), [(label, _)] in zip(batch, model.top([t for t, _ in batch])):
                    seen += 1
                    fired = monitor.add(label, gold)
                    if fired:
                        alerts.append(seen)
                        print(f"ALERT at message {seen}: predicted negative share {fired[0]:.0%} of the last "
                              f"{cfg['window']} (gold share {fired[1]:.0%}); e.g. {text[:70]!r}")
        middle = cfg["stream_size"] // 2
        print(f"\nstream of {seen} messages scored by the served model; simulated incident at messages "
              f"{middle + 1}-{middle + cfg['incident_size']}; {len(alerts)} alert(s) at {alerts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
