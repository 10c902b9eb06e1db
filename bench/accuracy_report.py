"""Fine-tune the default recipe on every built-in dataset and tabulate the scores next to references.

Why: users ask "is the accuracy I get any good?". This trains MiniLM-L6
with ``tfpipeline.training.trainer.train`` (the same call as ``tfpipeline
train``) on each catalog dataset and writes bench/results/accuracy.md with
the test score beside an approximate published number for a comparable
model where one is known. The references are *not* like-for-like (other
splits, label sets or models; see the notes) -- they say what order of
magnitude to expect, not a target.

    python bench/accuracy_report.py                      # full data (hours on 2 cores)
    python bench/accuracy_report.py --limit-train 64 --limit-eval 64   # minutes: proves it runs
    python bench/accuracy_report.py --recipe defaults --readme README.md  # no recipe options at all

``--recipe defaults`` trains exactly as ``tfpipeline train --dataset NAME``
with no recipe flag (learning rate, batch size, max length, epochs and warmup
all chosen by the checkpoint recipe and the data) and compares each score and
training time with the tuned recipe's row of the README (TUNED below);
``--readme`` rewrites the table between the README's ``defaults-table`` markers.

``--seeds 13 14 15`` trains every dataset once per seed (the seed also draws the
validation/test split of datasets without a fixed one) and the defaults table
shows each dataset's mean with its range. ``--tuned-json OUT.json`` (the JSON of a
``--recipe tuned`` run, e.g. with the same seeds on the same day) replaces the
README's older tuned scores and minutes in that table, so scores and time ratios
come from the same session.

With --limit-train the table also extrapolates the full run's duration from
the measured per-example time of the last epoch of each dataset.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfpipeline  # noqa: E402,F401

import benchlib  # noqa: E402

DEFAULT_EPOCHS = 2
# Per-dataset recipe on top of the defaults (batch 32, warmup 10%, weight decay 0.01, early stopping).
RECIPES = {
    "rotten_tomatoes": {"max_length": 64, "learning_rate": 1e-4},   # 5e-5 gave 84.7
    "tweet_sentiment": {"max_length": 64, "learning_rate": 5e-5},
    # 17 intents, most with few examples: 2 epochs at 1e-4 gave 91.9, 4 epochs 91.7 (rare intents never predicted)
    "atis_intent": {"max_length": 64, "learning_rate": 2e-4, "epochs": 6},
    "atis_slots": {"max_length": 64, "learning_rate": 2e-4, "epochs": 3},   # = configs/atis_slots.yaml
    # rare entities in 1.8k tweets: 2 epochs at 1e-4 predicted only O (F1 0.0)
    "wnut16": {"max_length": 128, "learning_rate": 2e-4, "epochs": 10, "early_stopping_patience": 4},
    "bbc_topics": {"max_length": 128, "learning_rate": 5e-5},      # title + lead of each article
    "trec_questions": {"max_length": 64, "learning_rate": 1e-4, "epochs": 4},  # 2 epochs at 5e-5 gave 91.1
    "drug_reviews": {"max_length": 128, "learning_rate": 1e-4, "epochs": 8},  # only ~260 training reviews
}
FALLBACK_RECIPE = {"max_length": 128, "learning_rate": 5e-5}
# The tuned recipe's test score and training minutes from the README's accuracy table (2026-12-01 runs;
# * = measured while other jobs held the cores, so those minutes are too high), and issue #12's
# acceptance floor for running with no recipe options (tuned score minus about 1 point).
TUNED = {"rotten_tomatoes": (85.4, 6.1, 84.5), "tweet_sentiment": (80.0, 37.0, 79.0),
         "atis_intent": (98.1, 6.2, 97.0), "atis_slots": (92.0, 3.6, 91.0), "wnut16": (53.9, 6.5, 52.0),
         "bbc_topics": (96.2, 5.0, 95.0), "trec_questions": (93.7, 5.2, 93.0), "drug_reviews": (69.3, 2.8, None)}
LOADED_TUNED_RUNS = {"tweet_sentiment", "bbc_topics"}
# Approximate published numbers for comparable models (percent). Not the same splits: see each note.
REFERENCES = {
    "rotten_tomatoes": ("~86-88 (BERT-base, MR sentence polarity); ~91-92 (6-layer MiniLM, SST-2 dev)",
                        "labels here are the sign of Hutto et al.'s human ratings of the Pang & Lee snippets, "
                        "seeded 80/10/10 split; SST-2 is a different (phrase-annotated) movie-review set"),
    "tweet_sentiment": ("-", "no standard benchmark for this aggregated CrowdFlower corpus"),
    "atis_intent": ("~97.5 intent accuracy (joint BERT-base, Chen et al. 2019)",
                    "first intent of multi-intent queries; the package's train/test files"),
    "atis_slots": ("~96 slot F1 (joint BERT-base, Chen et al. 2019)",
                   "conlleval F1 there, seqeval entity F1 here"),
    "wnut16": ("~49-53 entity F1 (strong systems on the official WNUT-16 test set)",
               "only the training portion ships here: our test is a random 10% of it"),
    "bbc_topics": ("~97-98 accuracy (commonly reported for BBC News topic classification)",
                   "random split; articles truncated to max_length pieces"),
    "trec_questions": ("~97 accuracy (BERT-base, TREC-6 official 500-question test)",
                       "our test is a random 10% of the training file (the official test set is not shipped)"),
    "drug_reviews": ("-", "top-10 conditions of the explabox drugs.com subset; no standard reference"),
}


def epoch_timer():
    """A Keras callback recording each epoch's wall time (built here so TF loads after argument parsing)."""
    import tf_keras

    class EpochTimer(tf_keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def run_dataset(name: str, task: str, args, runs_dir: str, seed: int) -> dict:
    from tfpipeline.data.catalog import load_dataset
    from tfpipeline.training.trainer import train

    if args.recipe == "defaults":
        recipe = {}   # nothing but data, output and seed: what a user gets without recipe flags
    else:
        recipe = {"epochs": DEFAULT_EPOCHS, **RECIPES.get(name, FALLBACK_RECIPE), "batch_size": args.batch_size}
    if args.epochs:
        recipe["epochs"] = args.epochs
    if args.max_length:
        recipe["max_length"] = args.max_length
    timer = epoch_timer()
    started = time.perf_counter()
    result = train(dataset=name, model=args.model, limit_train=args.limit_train, limit_eval=args.limit_eval,
                   output_dir=os.path.join(runs_dir, f"{name}_seed{seed}"), overwrite=True, verbose=args.verbose,
                   seed=seed, callbacks=[timer], **recipe)
    report = result.report
    recipe = {key: report["recipe"][key]["value"] for key in ("max_length", "learning_rate", "epochs",
                                                               "batch_size", "warmup_ratio")}
    full_train = load_dataset(name).train
    metric = "accuracy" if task == "classification" else "f1"
    row = {"dataset": name, "seed": seed, "task": task, "metric": "accuracy" if metric == "accuracy" else "entity F1",
           "score": 100.0 * report[metric], "macro_f1": 100.0 * report.get("macro_f1", report.get("f1", 0.0)),
           "split": report["split"], "eval_examples": report.get("examples", report.get("sentences")),
           "train_examples": len(full_train[:args.limit_train]), "recipe": recipe,
           "recipe_sources": {k: v["source"] for k, v in report["recipe"].items()}, "epochs": report["epochs"],
           "seconds": round(time.perf_counter() - started, 1),
           "epoch_seconds": [round(s, 1) for s in timer.seconds]}
    if args.limit_train and len(timer.seconds) >= 2:
        # Later epochs carry no tracing cost: scale their per-example time to the full training split.
        per_example = timer.seconds[-1] / max(row["train_examples"], 1)
        row["estimated_full_minutes"] = round((per_example * len(full_train) * recipe["epochs"] + row["seconds"])
                                              / 60.0, 1)
    return row


def write_markdown(path: str, rows: list, args, machine: dict) -> None:
    limited = f"--limit-train {args.limit_train}" if args.limit_train else "full training splits"
    lines = ["# Accuracy of the default recipe on the built-in datasets", "",
             f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by "
             f"`python bench/accuracy_report.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
             f"({limited}; model {args.model}; {machine.get('cpus')} CPU cores, load average "
             f"{machine.get('loadavg_1_5_15')}).", ""]
    if args.limit_train:
        lines += ["**Scores from a limited run say only that the pipeline works, not what the recipe reaches.**", ""]
    est = any("estimated_full_minutes" in r for r in rows)
    head = "| dataset | task | metric | our score | reference (approx.) | train ex. | recipe | minutes |"
    lines += [head + (" est. full min |" if est else ""), "|" + " --- |" * (8 + est)]
    for r in rows:
        ref, _ = REFERENCES.get(r["dataset"], ("-", ""))
        if "error" in r:
            empty = " | | | |" + (" |" if est else "")
            lines.append(f"| {r['dataset']} | {r['task']} | - | error: {r['error']} | {ref}{empty}")
            continue
        recipe = f"len {r['recipe']['max_length']}, lr {r['recipe']['learning_rate']:g}, {r['recipe']['epochs']} ep"
        ran = len(r.get("epoch_seconds") or [])
        if ran and ran < r["recipe"]["epochs"]:
            recipe += f" (early stop after {ran})"
        name = r["dataset"] + (f" (seed {r['seed']})" if len({x.get("seed") for x in rows}) > 1 else "")
        cells = [name, r["task"], f"{r['metric']} ({r['split']})", f"{r['score']:.1f}", ref,
                 str(r["train_examples"]), recipe, f"{r['seconds'] / 60:.1f}"]
        if est:
            cells.append(str(r.get("estimated_full_minutes", "")))
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.get("merged") for r in rows):
        lines += ["", "Rows from separate runs were merged (`--merge`); each row's recipe is its own. Commands: "
                  + "; ".join(sorted({f"`{r['command'].strip()}`" for r in rows if r.get("command")}))]
    lines += ["", "Notes on the references (they are approximate and not like-for-like):", ""]
    shown = {r["dataset"] for r in rows}
    lines += [f"- **{name}**: {note}" for name, (_, note) in REFERENCES.items() if name in shown]
    lines += ["", "Model: all-MiniLM-L6-v2 (a 6-layer, 384-wide sentence-embedding MiniLM) fine-tuned end to end; "
              "NER scores are seqeval entity-level F1 on word-level BIO tags."]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def by_dataset(rows: list) -> dict:
    """{dataset: [rows of its seeds, in order]} (rows without errors)."""
    grouped = {}
    for r in rows:
        if "error" not in r:
            grouped.setdefault(r["dataset"], []).append(r)
    return grouped


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def score_cell(rows: list) -> str:
    """One seed: the score; several: the mean and the range."""
    scores = [r["score"] for r in rows]
    if len(scores) == 1:
        return f"{scores[0]:.1f}"
    return f"{mean(scores):.1f} ({min(scores):.1f}-{max(scores):.1f}, {len(scores)} seeds)"


def chosen_cell(runs: list) -> str:
    """What the recipe chose: learning rate, max length, epochs kept / run / cap. Over several seeds the
    epochs are listed per seed when they differ (rate and length depend on the data, not the seed)."""
    settings = sorted({f"{r['recipe']['learning_rate']:.0e}".replace("e-0", "e-") + f", {r['recipe']['max_length']}"
                       for r in runs})
    epochs = [f"{r['epochs']['kept']} / {r['epochs']['run']} / {r['epochs']['cap']}" for r in runs]
    if len(set(epochs)) == 1:
        return f"{'; '.join(settings)}, {epochs[0]}"
    return f"{'; '.join(settings)}, " + "; ".join(f"{e} (seed {r['seed']})" for e, r in zip(epochs, runs))


def defaults_table(rows: list, tuned_rows: list = ()) -> list:
    """Markdown lines: each dataset with no recipe options vs the tuned recipe: the rows of ``tuned_rows`` (a
    ``--recipe tuned`` run) where it has the dataset, else the README's older tuned numbers (TUNED)."""
    tuned_runs = by_dataset(tuned_rows)
    lines = ["| dataset | metric (test) | no recipe flags | tuned recipe | floor | chosen: lr, max length, epochs "
             "kept / run / cap | minutes | vs tuned time |", "|---|---|---:|---:|---:|---|---:|---:|"]
    for name, runs in by_dataset(rows).items():
        tuned, tuned_min, floor = TUNED.get(name, (None, None, None))
        loaded = name in LOADED_TUNED_RUNS
        if name in tuned_runs:
            tuned, loaded = score_cell(tuned_runs[name]), False
            tuned_min = mean(r["seconds"] for r in tuned_runs[name]) / 60
        score = mean(r["score"] for r in runs)
        minutes = mean(r["seconds"] for r in runs) / 60
        ratio = f"{minutes / tuned_min:.2f}x" + ("*" if loaded else "") if tuned_min else "-"
        mark = "" if floor is None else (" ✓" if score >= floor else " ✗")
        chosen = chosen_cell(runs)
        lines.append(f"| `{name}` | {runs[0]['metric']} | **{score_cell(runs)}**{mark} | {tuned if tuned else '-'} | "
                     f"{floor if floor else '-'} | {chosen} | {minutes:.1f} | {ratio} |")
    for r in rows:
        if "error" in r:
            tuned, _, floor = TUNED.get(r["dataset"], (None, None, None))
            lines.append(f"| `{r['dataset']}` | - | error: {r['error']} | {tuned or '-'} | {floor or '-'} | | | |")
    return lines


def write_defaults_outputs(args, table: list, machine: dict, day: str) -> None:
    """The no-recipe-flags table as OUT_defaults_table.md and, with --readme, in the README."""
    commands = sorted({r["command"].strip() for r in table if r.get("command")})
    header = (f"Measured {day} by `{'`; `'.join(commands)}` ({machine.get('cpus')} CPU cores; 1-minute load "
              f"average {float(machine.get('loadavg_1_5_15', [0])[0]):.1f} at the start).")
    lines = defaults_table(table, tuned_rows(args))
    with open(os.path.splitext(args.out)[0] + "_defaults_table.md", "w", encoding="utf-8") as f:
        f.write("\n".join([header, ""] + lines) + "\n")
    if args.readme:
        block = getattr(args, "readme_block", None) or "defaults-table"
        benchlib.replace_readme_block(args.readme, f"<!-- {block}:start -->", f"<!-- {block}:end -->",
                                      [header, ""] + lines)


def tuned_rows(args) -> list:
    """The rows of ``--tuned-json`` (empty without it)."""
    if not getattr(args, "tuned_json", None):
        return []
    with open(args.tuned_json, encoding="utf-8") as f:
        return json.load(f)["rows"]


def render_only(args, json_path: str) -> int:
    """--render-only: rewrite the tables from OUT's JSON (no training)."""
    with open(json_path, encoding="utf-8") as f:
        saved = json.load(f)
    day = datetime.date.fromtimestamp(os.path.getmtime(json_path)).isoformat()
    write_defaults_outputs(args, saved["rows"], saved["machine"], day)
    print("\n".join(defaults_table(saved["rows"], tuned_rows(args))))
    return 0


def previous_rows(path: str, rerun: set) -> list:
    """Rows of an earlier run's JSON for the (dataset, seed) pairs this run does not redo (``--merge``)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [dict(r, merged=True) for r in json.load(f).get("rows", [])
                if (r.get("dataset"), r.get("seed", 13)) not in rerun]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="*", help="default: every built-in dataset whose package is installed")
    p.add_argument("--limit-train", type=int, help="first N training examples per dataset (quick runs)")
    p.add_argument("--limit-eval", type=int, help="first N validation/test examples per dataset")
    p.add_argument("--epochs", type=int, help=f"override the recipe's epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--max-length", type=int, help="override the recipe's max_length")
    p.add_argument("--recipe", choices=("tuned", "defaults"), default="tuned",
                   help="tuned: the per-dataset recipe below; defaults: no recipe options (checkpoint recipe + data)")
    p.add_argument("--readme", help="with --recipe defaults: write the comparison table into this README")
    p.add_argument("--readme-block", default="defaults-table",
                   help="the README block (between <!-- NAME:start --> and <!-- NAME:end -->) to replace")
    p.add_argument("--batch-size", type=int, default=32, help="tuned recipe only")
    p.add_argument("--model", default="minilm")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--seeds", type=int, nargs="+", help="train each dataset once per seed (default: --seed)")
    p.add_argument("--tuned-json", help="with --recipe defaults: the JSON of a --recipe tuned run to compare "
                                        "with, instead of the README's older tuned numbers")
    p.add_argument("--runs-dir", help="keep the trained model folders here (default: a temp folder, deleted)")
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--out", default="bench/results/accuracy.md")
    p.add_argument("--merge", action="store_true",
                   help="keep the other datasets' rows from OUT's JSON (re-run a few datasets, one table)")
    p.add_argument("--render-only", action="store_true",
                   help="with --recipe defaults: rewrite the table (and --readme) from OUT's JSON, no training")
    args = p.parse_args(argv)
    if args.render_only:
        return render_only(args, os.path.splitext(args.out)[0] + ".json")

    from tfpipeline.data.catalog import is_available, list_datasets

    infos = list_datasets()
    if args.datasets:   # in the order given (e.g. quick datasets first)
        by_name = {i.name: i for i in infos}
        infos = [by_name[name] for name in args.datasets if name in by_name]
    machine = benchlib.machine_info()
    json_path = os.path.splitext(args.out)[0] + ".json"
    seeds = args.seeds or [args.seed]
    kept = previous_rows(json_path, {(i.name, seed) for i in infos for seed in seeds}) if args.merge else []
    order = [i.name for i in list_datasets()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="accuracy_report_") as tmp:
        for info, seed in [(info, seed) for info in infos for seed in seeds]:
            if not is_available(info.name):
                rows.append({"dataset": info.name, "task": info.task, "error": f"package {info.package} not installed"})
                continue
            print(f"[accuracy] {info.name} (seed {seed}) ...", flush=True)
            try:
                row = run_dataset(info.name, info.task, args, args.runs_dir or tmp, seed)
            except Exception as e:  # one broken dataset should not lose the others' rows
                row = {"dataset": info.name, "seed": seed, "task": info.task,
                       "error": f"{type(e).__name__}: {e}"[:200]}
            row["command"] = "python bench/accuracy_report.py " + " ".join(sys.argv[1:])
            rows.append(row)
            print(f"[accuracy] {info.name} (seed {seed}): {row.get('metric', 'error')} "
                  f"{row.get('score', row.get('error'))}", flush=True)
            table = sorted(kept + rows, key=lambda r: (order.index(r["dataset"]) if r["dataset"] in order else 99,
                                                       r.get("seed", 13)))
            write_markdown(args.out, table, args, machine)       # partial results survive an interrupted run
            benchlib.write_json(json_path, {"benchmark": "accuracy_report", "config": vars(args),
                                            "machine": machine, "rows": table})
            if args.recipe == "defaults":
                write_defaults_outputs(args, table, machine, datetime.date.today().isoformat())
    print(open(args.out, encoding="utf-8").read())
    if any("estimated_full_minutes" in r for r in rows):
        total = sum(r.get("estimated_full_minutes", 0) for r in rows)
        print(f"estimated full run (no --limit-train): ~{total:.0f} min on this machine")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
