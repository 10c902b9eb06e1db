"""KerasTuner search: trials really train with different batch sizes; searches resume."""
import json
import os

import pytest
import yaml

from tfpipeline.config import TrainConfig
from tfpipeline.errors import ConfigError
from tfpipeline.training.tuner import TuneConfig, trial_score, tune


def _base(tiny_checkpoint):
    return TrainConfig(dataset=None, model=tiny_checkpoint, epochs=1, max_length=32, seed=13)


def test_search_varies_batch_size_saves_best_and_resumes(tmp_path, tiny_checkpoint, clf_data):
    settings = dict(algorithm="random", max_trials=3, batch_sizes=[4, 64], learning_rate_min=1e-3,
                    learning_rate_max=1e-2, directory=str(tmp_path), project_name="s", seed=5)
    result = tune(_base(tiny_checkpoint), TuneConfig(**settings), data=clf_data, verbose=False)

    done = [r for r in result.trials if r["status"] == "COMPLETED"]
    assert len(done) == 3
    sizes = {r["hyperparameters"]["batch_size"] for r in done}
    assert sizes == {4, 64}, "the random search should have tried both batch sizes"
    steps = {r["hyperparameters"]["batch_size"]: r["train_steps_epoch1"] for r in done}
    assert steps[4] > 3 * steps[64], "batch size must reach the tf.data pipeline (more steps when smaller)"
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in done)

    saved = yaml.safe_load(open(result.best_config_path))
    best = max(done, key=lambda r: r["val_accuracy"])
    assert saved["batch_size"] == best["hyperparameters"]["batch_size"]
    assert abs(saved["learning_rate"] - best["hyperparameters"]["learning_rate"]) < 1e-12
    TrainConfig(**saved).validate()   # reusable by `tfpipeline train --config`
    assert json.load(open(os.path.join(tmp_path, "s", "trials.json")))

    # Resuming the same search runs nothing new.
    calls = []
    from tfpipeline.training import tuner as tuner_module
    original = tuner_module.fit_model
    tuner_module.fit_model = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        again = tune(_base(tiny_checkpoint), TuneConfig(**settings), data=clf_data, verbose=False)
    finally:
        tuner_module.fit_model = original
    assert calls == []
    assert [r["trial"] for r in again.trials] == [r["trial"] for r in result.trials]


def test_unknown_tunable_parameter_is_rejected():
    import pytest
    from tfpipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot tune"):
        TuneConfig(also_tune=["momentum"]).validate()


def test_trial_score_is_the_objective_at_the_kept_epoch():
    history = {"val_accuracy": [0.7, 0.8, 0.79], "val_loss": [0.5, 0.3, 0.35]}
    annealed_kept = {"kept": 3, "run": 3}            # epochs auto kept the last epoch (within one SE of epoch 2)
    assert trial_score(history, annealed_kept, "val_accuracy") == 0.79      # not max(): the model the trial made
    assert trial_score(history, annealed_kept, "val_loss") == 0.35          # any objective, at that same epoch
    assert trial_score(history, {"kept": 2, "run": 3}, "val_accuracy") == 0.8
    with pytest.raises(ConfigError, match="objective 'val_f1' not among the metrics"):
        trial_score(history, annealed_kept, "val_f1")
