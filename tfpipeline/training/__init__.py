"""Training: optimizers and schedules, losses/metrics, callbacks, strategies, the train loop."""
