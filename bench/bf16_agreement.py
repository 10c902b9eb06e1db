"""How often ``export --optimize compact+bf16`` predicts what the float32 export predicts, on a trained model.

Issue #13 allows bfloat16 serving only with prediction agreement >= 99.5%
against float32 on a test split. bfloat16 keeps 8 bits of mantissa, so the
scores move by ~1e-3 and only predictions near a decision boundary can flip;
how many there are depends on the trained model and the data, so this is
measured on fine-tuned models, not on an untrained head.

For each dataset: fine-tune MiniLM with ``tfpipeline.train`` (``--epochs``;
the defaults for everything else) or use ``--model-dir`` runs, export the
model twice (``compact``, float32, and ``compact+bf16``) as ``tfpipeline
export`` does, score the whole test split through each export's
``serving_default`` signature (raw text in), and count identical top
predictions; test accuracy of both and the largest score difference too.

    python bench/bf16_agreement.py [--datasets atis_intent rotten_tomatoes] [--epochs 2] [--docs docs/benchmarks.md]
    python bench/bf16_agreement.py --model-dir runs/mine     # a trained classification run folder
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfpipeline  # noqa: E402,F401  (environment for TF/transformers before they load)

import numpy as np  # noqa: E402

import benchlib  # noqa: E402

DOCS_START, DOCS_END = "<!-- bf16-agreement:start -->", "<!-- bf16-agreement:end -->"
REQUIRED_AGREEMENT = 0.995     # issue #13


def scores(signature, texts: List[str], batch: int = 64) -> np.ndarray:
    import tensorflow as tf

    return np.concatenate([signature(text=tf.constant(texts[i:i + batch]))["scores"].numpy()
                           for i in range(0, len(texts), batch)])


def compare(model_dir: str, tmp: str, dataset: str = None) -> Dict[str, object]:
    """Agreement of the float32 and bfloat16 compact exports of ``model_dir`` on its test split."""
    import tensorflow as tf

    from tfpipeline.bundle import ModelBundle
    from tfpipeline.data.catalog import load_dataset

    bundle = ModelBundle.load(model_dir)
    if bundle.task != "classification":
        raise SystemExit(f"{model_dir}: a {bundle.task} model; this bench compares classifiers")
    name = dataset or bundle.meta.get("dataset")
    if not name:
        raise SystemExit(f"{model_dir}: no built-in dataset recorded; pass --dataset")
    seed = int(bundle.meta.get("config", {}).get("seed", 13))    # the run's split: no training text in the test
    test = load_dataset(name, seed=seed).test
    texts, gold = [ex.text for ex in test], np.array([bundle.labels.id(ex.label) for ex in test])
    out = {"dataset": name, "model_dir": model_dir, "test_examples": len(texts), "classes": len(bundle.labels)}
    predictions = {}
    for optimize in ("compact", "compact+bf16"):
        path = bundle.export(os.path.join(tmp, "export"), f"agreement_{len(predictions)}", optimize=optimize)
        signature = tf.saved_model.load(path).signatures["serving_default"]
        probabilities = scores(signature, texts)
        predictions[optimize] = probabilities
        out[f"accuracy_{optimize}"] = float((probabilities.argmax(1) == gold).mean())
    fp32, bf16 = predictions["compact"], predictions["compact+bf16"]
    out["agreement"] = float((fp32.argmax(1) == bf16.argmax(1)).mean())
    out["disagreements"] = int((fp32.argmax(1) != bf16.argmax(1)).sum())
    out["max_abs_score_diff"] = float(np.abs(fp32 - bf16).max())
    return out


def train_model(dataset: str, epochs: int, run_dir: str) -> str:
    from tfpipeline.training.trainer import train

    print(f"training {dataset} for {epochs} epoch(s) (defaults otherwise) ...", flush=True)
    train(dataset=dataset, epochs=epochs, output_dir=run_dir, verbose=0, overwrite=True)
    return run_dir


def table(rows: List[Dict[str, object]]) -> List[str]:
    lines = ["| dataset | classes | test texts | accuracy float32 | accuracy bfloat16 | agreement | differing "
             "predictions | max score diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ok = "✓" if r["agreement"] >= REQUIRED_AGREEMENT else "✗"
        lines.append(f"| `{r['dataset']}` | {r['classes']} | {r['test_examples']} | {100 * r['accuracy_compact']:.2f} "
                     f"| {100 * r['accuracy_compact+bf16']:.2f} | **{100 * r['agreement']:.2f}%** {ok} "
                     f"| {r['disagreements']} | {r['max_abs_score_diff']:.2g} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["atis_intent", "rotten_tomatoes"])
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per dataset (other options: defaults)")
    p.add_argument("--model-dir", nargs="+", help="trained classification run folders instead of training")
    p.add_argument("--threads", type=int, default=0, help="TF threads (0 = all cores)")
    p.add_argument("--docs", help="replace the bf16-agreement block of this Markdown file with the table")
    p.add_argument("--out", default="bench/results/bf16_agreement.json")
    args = p.parse_args(argv)
    benchlib.configure_tf_threads(args.threads or benchlib.cpu_count())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bf16_agreement_") as tmp:
        model_dirs = args.model_dir or [train_model(d, args.epochs, os.path.join(tmp, d)) for d in args.datasets]
        for model_dir in model_dirs:
            rows.append(compare(model_dir, tmp))
            print(f"  {rows[-1]['dataset']}: agreement {rows[-1]['agreement']:.4f} "
                  f"({rows[-1]['disagreements']} of {rows[-1]['test_examples']})", flush=True)
    lines = table(rows)
    print("\n".join(lines))
    benchlib.write_json(args.out, {"benchmark": "bf16_agreement", "config": vars(args),
                                   "machine": benchlib.machine_info(), "results": rows})
    if args.docs:
        command = "python bench/bf16_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:])
        trained = "the run folders given" if args.model_dir else \
            f"MiniLM fine-tuned {args.epochs} epoch(s) per dataset, defaults otherwise"
        benchlib.replace_readme_block(args.docs, DOCS_START, DOCS_END, [
            f"`{command}` - {trained}; whole test split through each export's `serving_default` (raw text). "
            f"Required by issue #13: agreement >= {100 * REQUIRED_AGREEMENT:.1f}%.", "", *lines])
    return 0 if all(r["agreement"] >= REQUIRED_AGREEMENT for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
