"""Checkpoint recipes and the values a run fills in when the user gives none (issue #12)."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import tf_keras

from conftest import keyword_examples
from tfpipeline.cli import build_parser
from tfpipeline.cli.flags import values_from
from tfpipeline.config import NER, TrainConfig, TuneConfig, make_config
from tfpipeline.data.examples import TaskData
from tfpipeline.data.labels import LabelMap
from tfpipeline.errors import ConfigError
from tfpipeline.models.checkpoint_recipes import BASE, LARGE, MINILM, SMALL, recipe_for
from tfpipeline.models.optimization import (AnnealableWarmupLinearDecay, WarmupLinearDecay, create_optimizer,
                                            schedule_of)
from tfpipeline.data.examples import TextExample, TokenExample
from tfpipeline.training.callbacks import AnnealOnPlateau, StopWhenStalled, scored_items, standard_error
from tfpipeline.training.effective_recipe import (USER, auto_max_length, epoch_cap, label_units, passes_per_epoch,
                                                  resolve_recipe, short_number)
from tfpipeline.training.trainer import epoch_summary
from tfpipeline.training.tuner import with_task_defaults


def _checkpoint_with_width(tmp_path, tiny_checkpoint, hidden):
    folder = tmp_path / f"h{hidden}"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": hidden}))
    return str(folder)


def test_recipe_by_alias_and_by_encoder_width(tmp_path, tiny_checkpoint):
    assert recipe_for("minilm") is MINILM and recipe_for(None) is MINILM
    assert recipe_for(tiny_checkpoint) is SMALL                       # hidden 32
    assert recipe_for(_checkpoint_with_width(tmp_path, tiny_checkpoint, 768)) is BASE
    assert recipe_for(_checkpoint_with_width(tmp_path, tiny_checkpoint, 1024)) is LARGE
    assert MINILM.learning_rate("classification") == 1e-4 and MINILM.learning_rate(NER) == 2e-4
    assert BASE.learning_rate("classification") < SMALL.learning_rate("classification")
    assert MINILM.learning_rate(NER, peft="lora") == MINILM.peft_learning_rate > MINILM.learning_rate(NER)


def test_auto_max_length_percentile_rounding_and_bounds():
    assert auto_max_length([10] * 99 + [200], MINILM, 256) == 16          # p99 = 11.9 -> 16 (floor)
    assert auto_max_length(list(range(1, 101)), MINILM, 256) == 104       # p99 = 99.01 -> next multiple of 8
    assert auto_max_length([300] * 50, MINILM, 256) == 256                # capped
    assert auto_max_length([], MINILM, 256) == 16


def test_epoch_cap_grows_for_small_or_many_class_data():
    assert epoch_cap(264, 2, MINILM) == 4         # 8.4k sentences, 2 classes: 1,000 steps planned
    assert epoch_cap(928, 3, MINILM) == 3         # large data: the minimum
    assert epoch_cap(313, 77, MINILM) == 10       # 10k rows, 77 intents: 3,000 steps planned
    assert epoch_cap(8, 10, MINILM) == 20         # 260 examples: the maximum
    assert epoch_cap(57, 10, MINILM) > epoch_cap(130, 10, MINILM)


def test_label_units_counts_entity_types_for_ner():
    tags = LabelMap(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC"])
    assert label_units(tags, NER) == 3
    assert label_units(LabelMap(["a", "b", "c"]), "classification") == 3


def test_resolve_fills_only_what_the_user_left_out(tiny_checkpoint, clf_data):
    labels = LabelMap.from_examples(clf_data.train, clf_data.task)
    cfg = TrainConfig(model=tiny_checkpoint, learning_rate=3e-3).validate()
    recipe = resolve_recipe(cfg, clf_data, labels)
    s = recipe.settings
    assert s["learning_rate"].value == 3e-3 and s["learning_rate"].source == USER
    assert s["batch_size"].value == SMALL.batch_size and "recipe" in s["batch_size"].source
    assert s["weight_decay"].value == SMALL.weight_decay
    assert recipe.auto_epochs and recipe.config.epochs == s["epochs"].value >= SMALL.min_epochs
    assert recipe.config.warmup_ratio <= 1.0 / recipe.config.epochs + 1e-9      # warmup at most one epoch
    assert 16 <= recipe.config.max_length < 64 and "p99" in s["max_length"].source   # keyword sentences are short
    line = recipe.describe()
    assert "lr 0.003 (set)" in line and "epochs auto (at most" in line
    assert recipe.as_dict()["learning_rate"] == {"value": 3e-3, "source": USER}
    explicit = resolve_recipe(dataclasses.replace(cfg, epochs=2, max_length=40, warmup_ratio=0.2), clf_data, labels)
    assert not explicit.auto_epochs and explicit.config.epochs == 2 and explicit.config.max_length == 40
    assert explicit.settings["warmup_ratio"] == type(explicit.settings["warmup_ratio"])(0.2, USER)


def test_steps_per_epoch_follow_the_resolved_batch_and_length(tiny_checkpoint):
    data = TaskData("kw", "classification", train=keyword_examples(100, seed=5), validation=keyword_examples(8, 6))
    labels = LabelMap.from_examples(data.train, data.task)
    explicit = resolve_recipe(TrainConfig(model=tiny_checkpoint, batch_size=10, bucket=False, epochs=3).validate(),
                              data, labels)
    assert explicit.steps_per_epoch == 10 and explicit.passes_per_epoch == 1   # --epochs N: N passes, as asked
    auto = resolve_recipe(TrainConfig(model=tiny_checkpoint, batch_size=10, bucket=False).validate(), data, labels)
    # 10 steps per pass < min_updates / max_epochs = 50: an auto epoch is 5 passes, and the cap counts those
    assert auto.passes_per_epoch == 5 and auto.steps_per_epoch == 50
    assert auto.config.epochs == epoch_cap(50, 2, SMALL) and "(5 passes over the small training set)" in \
        auto.settings["epochs"].source


def test_passes_per_epoch_only_for_small_data():
    assert passes_per_epoch(2, SMALL) == 25          # 50 examples at batch 32
    assert passes_per_epoch(49, SMALL) == 2
    assert passes_per_epoch(50, SMALL) == 1 and passes_per_epoch(300, SMALL) == 1


def test_auto_is_accepted_from_flags_and_config_files():
    args = build_parser().parse_args(["train", "--epochs", "auto", "--learning-rate", "2e-4", "--max-length", "AUTO"])
    values = values_from(args, TrainConfig)
    cfg = make_config(TrainConfig, values)
    assert cfg.epochs is None and cfg.max_length is None and cfg.learning_rate == 2e-4
    assert make_config(TrainConfig, {"epochs": "auto", "batch_size": 16}).epochs is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--epochs", "many"])
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        make_config(TrainConfig, {"epochs": 0})
    assert "(default: auto)" in build_parser()._subparsers._group_actions[0].choices["train"].format_help()


def test_stop_when_stalled_ignores_epochs_that_scored_nothing():
    stopper = StopWhenStalled("val_entity_f1", patience=2)
    stopper.set_model(tf_keras.Sequential())
    stopper.on_train_begin()
    for epoch, score in enumerate([0.0, 0.0, 0.0, 0.3, 0.5, 0.4]):
        stopper.on_epoch_end(epoch, {"val_entity_f1": score})
        assert not stopper.model.stop_training
    stopper.on_epoch_end(6, {"val_entity_f1": 0.5})      # second epoch without a new best
    assert stopper.model.stop_training and stopper.stopped_early


def test_epoch_summary_says_what_was_kept_and_why():
    stalled = epoch_summary({"val_accuracy": [0.7, 0.8, 0.79, 0.8]}, "val_accuracy", cap=10, patience=2)
    assert stalled["kept"] == 2 and stalled["run"] == 4 and stalled["best"] == 0.8
    assert "no validation accuracy improvement for 2 epochs" == stalled["stopped"]
    assert "cap" in epoch_summary({"val_accuracy": [0.7, 0.8]}, "val_accuracy", cap=2, patience=2, auto=True)["stopped"]
    assert epoch_summary({"val_accuracy": [0.7, 0.8]}, "val_accuracy", cap=2, patience=2)["stopped"] == \
        "ran every epoch (epochs 2)"      # --epochs 2: no cap involved
    annealed = epoch_summary({"val_accuracy": [0.7, 0.8, 0.75, 0.79, 0.82]}, "val_accuracy", cap=10, patience=2,
                             auto=True, annealed=4, restored_from=1)
    assert annealed["kept"] == 5 and annealed["annealed"] == 5
    assert annealed["stopped"] == ("no validation accuracy improvement for 2 epochs; epoch 5 annealed the learning "
                                   "rate to 0 from epoch 2's weights")


def test_annealable_schedule_follows_the_plan_until_cut_short():
    schedule = AnnealableWarmupLinearDecay(peak=1.0, total_steps=110, warmup_steps=10, anneal_steps=20)
    plain = WarmupLinearDecay(peak=1.0, total_steps=110, warmup_steps=10)
    assert all(float(schedule(s)) == pytest.approx(float(plain(s))) for s in range(0, 120, 7))
    assert not schedule.annealing
    schedule.start_anneal(50)                                   # planned rate there: 0.6
    assert schedule.annealing and float(schedule(49)) == pytest.approx(float(plain(49)))
    assert float(schedule(50)) == pytest.approx(0.6) and float(schedule(60)) == pytest.approx(0.5 * float(plain(60)))
    assert float(schedule(69)) == pytest.approx(0.05 * float(plain(69))) and float(schedule(70)) == 0.0
    assert float(schedule(500)) == 0.0
    again = AnnealableWarmupLinearDecay.from_config(schedule.get_config())
    assert again.anneal_steps == 20 and float(again(60)) == pytest.approx(float(plain(60)))   # shape, not state
    optimizer = create_optimizer(1e-3, total_steps=100, warmup_ratio=0.1, anneal_steps=25)
    assert isinstance(schedule_of(optimizer), AnnealableWarmupLinearDecay) and schedule_of(optimizer).warmup_steps == 10
    assert type(schedule_of(create_optimizer(1e-3, total_steps=100))) is WarmupLinearDecay


def _annealer_on_tiny_model(patience, max_epochs, **options):
    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    model.compile(optimizer=create_optimizer(1e-3, total_steps=100, anneal_steps=10), loss="mse")
    annealer = AnnealOnPlateau("val_accuracy", patience=patience, max_epochs=max_epochs, **options)
    annealer.set_model(model)
    annealer.on_train_begin()
    return model, annealer


def _epoch(model, annealer, epoch, score, weights_value):
    annealer.on_epoch_begin(epoch)
    model.set_weights([np.full_like(w, weights_value) for w in model.get_weights()])   # "training"
    model.optimizer.iterations.assign_add(10)
    annealer.on_epoch_end(epoch, {"val_accuracy": score})


def test_anneal_on_plateau_restores_the_best_epoch_and_anneals_once():
    model, annealer = _annealer_on_tiny_model(patience=2, max_epochs=10)
    schedule = schedule_of(model.optimizer)
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.0, 0.65]):   # best at epoch 1; a 0 score is not a stall
        _epoch(model, annealer, epoch, score, weights_value=epoch)
        assert not model.stop_training
    assert annealer.annealed == 5 and not schedule.annealing
    annealer.on_epoch_begin(5)
    assert all(np.all(w == 1.0) for w in model.get_weights())      # epoch 1's weights are back
    assert annealer.restored_from == 1 and schedule.annealing and float(schedule.anneal_start) == 50
    annealer.on_epoch_end(5, {"val_accuracy": 0.72})
    assert model.stop_training and annealer.stopped_early


def test_standard_error_of_validation_scores():
    assert standard_error("val_accuracy", 0.95, 538) == pytest.approx(0.0094, abs=1e-4)
    assert standard_error("val_entity_f1", 0.5, 100) == pytest.approx(0.05)
    assert standard_error("val_pearson", 0.8, 101) == pytest.approx(0.036)
    assert standard_error("val_accuracy", 0.95, 0) == 0.0 and standard_error("val_accuracy", None, 10) == 0.0
    sentences = [TokenExample(("a", "b", "c", "d"), ("B-X", "I-X", "O", "B-Y")), TokenExample(("e",), ("I-Y",))]
    assert scored_items(sentences, NER) == 3                    # seqeval chunks; an IOB1 I- starts one too
    assert scored_items([TextExample("a", "x")] * 7, "classification") == 7


def test_annealed_epoch_is_kept_within_one_standard_error(tmp_path):
    # 400 validation examples at 0.80: one standard error is 0.02
    best_file = str(tmp_path / "best")
    model, annealer = _annealer_on_tiny_model(patience=1, max_epochs=10, validation_items=400,
                                              checkpoint_file=best_file)
    for epoch, score in enumerate([0.7, 0.8, 0.75]):
        _epoch(model, annealer, epoch, score, weights_value=epoch)
    assert annealer.annealed == 3
    _epoch(model, annealer, 3, 0.785, weights_value=7.0)         # 0.015 behind the best: kept
    assert model.stop_training and annealer.kept == 3 and annealer.tolerance == pytest.approx(0.02)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(best_file)                                # the best checkpoint now holds the annealed weights
    assert all(np.all(w == 7.0) for w in model.get_weights())
    summary = epoch_summary({"val_accuracy": [0.7, 0.8, 0.75, 0.785]}, "val_accuracy", cap=10, patience=1,
                            auto=True, annealed=annealer.annealed, restored_from=annealer.restored_from,
                            kept=annealer.kept, tolerance=annealer.tolerance)
    assert summary["kept"] == 4 and summary["best"] == 0.785
    assert summary["stopped"].endswith("epoch 4 annealed the learning rate to 0 from epoch 2's weights and was "
                                       "kept: its 0.7850 is within one standard error (0.0200) of epoch 2's 0.8000")

    tie = epoch_summary({"val_accuracy": [0.7, 0.8, 0.75, 0.8]}, "val_accuracy", cap=10, patience=1, auto=True,
                        annealed=3, restored_from=1, kept=3, tolerance=0.02)
    assert tie["kept"] == 4 and tie["stopped"].endswith("and was kept: it ties epoch 2's 0.8000")

    model, annealer = _annealer_on_tiny_model(patience=1, max_epochs=10, validation_items=400,
                                              checkpoint_file=str(tmp_path / "other"))
    for epoch, score in enumerate([0.7, 0.8, 0.75, 0.77]):       # 0.03 behind: the best epoch stays
        _epoch(model, annealer, epoch, score, weights_value=epoch)
    assert annealer.kept == 1 and annealer.tolerance is None and not (tmp_path / "other.index").exists()
    annealer.resume_after([0.7], str(tmp_path / "chief"))       # a resumed worker reads the chief's checkpoint ...
    assert annealer.checkpoint_file == str(tmp_path / "other")   # ... but writes only its own
    assert epoch_summary({"val_accuracy": [0.7, 0.8, 0.75, 0.77]}, "val_accuracy", cap=10, patience=1, auto=True,
                         annealed=3, restored_from=1, kept=annealer.kept)["kept"] == 2


def test_anneal_on_plateau_leaves_runs_that_reach_the_cap_alone():
    model, annealer = _annealer_on_tiny_model(patience=2, max_epochs=4)
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.65]):     # the stall would end after the cap's last epoch
        _epoch(model, annealer, epoch, score, weights_value=epoch)
    assert annealer.annealed is None and not schedule_of(model.optimizer).annealing
    never = _annealer_on_tiny_model(patience=0, max_epochs=6)
    for epoch, score in enumerate([0.5, 0.4, 0.4, 0.3]):
        _epoch(*never, epoch, score, weights_value=epoch)
    assert never[1].annealed is None                           # patience 0: no early stop, no anneal


def test_tuner_range_and_objective_follow_the_recipe():
    base = TrainConfig()
    tune = with_task_defaults(TuneConfig().validate(), base, NER)
    assert tune.learning_rate_min == pytest.approx(5e-5) and tune.learning_rate_max == pytest.approx(4e-4)
    assert tune.objective == "val_entity_f1"
    given = with_task_defaults(TuneConfig(learning_rate_max=2e-5, objective="val_loss").validate(), base,
                               "classification")
    assert given.learning_rate_min <= given.learning_rate_max == 2e-5 and given.objective == "val_loss"


def test_short_number():
    assert [short_number(v) for v in (1e-4, 2e-4, 5e-5, 0.01, 3.5e-5)] == ["1e-4", "2e-4", "5e-5", "0.01", "3.5e-5"]
