"""Glue shared by the example recipes: YAML recipe, ``--smoke``, training, export + local serving.

Why a shared module: every recipe has the same life cycle -- fine-tune with
``tfpipeline.training.trainer.train``, export with
``ModelBundle.export``, serve with ``serving.ModelServer`` on
127.0.0.1 and ask it over TF Serving's REST API -- and only its application
logic differs. Nothing here re-implements library behaviour.

``--smoke`` swaps MiniLM for a tiny random BERT
(``save_random_checkpoint``; image recipes: a tiny random ViT,
``save_random_vit_checkpoint``) and trains on small slices, so a recipe runs
end to end in well under a minute; its predictions are meaningless.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence

import tfpipeline  # noqa: F401  (TF/Keras environment before anything imports TensorFlow)

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# Tiny model, small slices, one epoch: proves the recipe runs (tests use it), not that it is accurate.
SMOKE_TRAIN = {"limit_train": 160, "limit_eval": 48, "epochs": 1, "batch_size": 16, "max_length": 32,
               "learning_rate": 1e-3, "early_stopping_patience": 0}
SMOKE_IMAGE_TRAIN = {**{k: v for k, v in SMOKE_TRAIN.items() if k != "max_length"}, "image_size": 32}
IMAGE_TASK = "image_classification"


def parser(description: str, default_config: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if default_config:
        p.add_argument("--config", default=os.path.join(HERE, default_config), help="recipe YAML")
    p.add_argument("--smoke", action="store_true", help="tiny random model + small data slices (< 60 s)")
    p.add_argument("--output-dir", help="where models and exports go (default runs/examples/<recipe>; "
                                        "a temp folder with --smoke)")
    p.add_argument("--model-dir", action="append", default=[],
                   help="use an already trained model folder instead of training (repeat for 2-model recipes)")
    return p


def load_recipe(path: str) -> dict:
    """The recipe YAML: ``train`` (tfpipeline TrainConfig options, or a list of them) + app settings."""
    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    return recipe


@contextlib.contextmanager
def workspace(args, recipe_name: str) -> Iterator[str]:
    """The recipe's output folder: a temp folder (deleted) with --smoke, else runs/examples/<recipe>."""
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        yield args.output_dir
    elif args.smoke:
        with tempfile.TemporaryDirectory(prefix=f"{recipe_name}_") as tmp:
            yield tmp
    else:
        path = os.path.join("runs", "examples", recipe_name)
        os.makedirs(path, exist_ok=True)
        yield path


def train_model(options: dict, workdir: str, name: str, *, smoke: bool, model_dir: Optional[str] = None,
                data=None):
    """Fine-tune with ``tfpipeline`` (the same call as ``tfpipeline train``); returns the model folder.

    ``data``: a ``TaskData`` the recipe built itself (else the options name a dataset).
    Prints the evaluation report on the dataset's test split.
    """
    if model_dir:
        print(f"[{name}] using trained model {model_dir}")
        return model_dir
    from tfpipeline.training.trainer import train

    options = dict(options)
    if smoke and options.get("task") == IMAGE_TASK:
        options.update(SMOKE_IMAGE_TRAIN, model=smoke_image_checkpoint(workdir))
    elif smoke:
        options.update(SMOKE_TRAIN, model=smoke_checkpoint(workdir))
    options.update(output_dir=os.path.join(workdir, name), overwrite=True)
    result = train(options, data=data)
    metric = next(m for m in ("accuracy", "f1", "recall@1") if m in result.report)
    print(f"[{name}] {result.report['split']} {metric}: {result.report[metric]:.3f}"
          + ("  (smoke run: tiny random model, meaningless)" if smoke else ""))
    return result.output_dir


def smoke_checkpoint(workdir: str) -> str:
    """A tiny random BERT with MiniLM's vocabulary, written once per workspace."""
    from tfpipeline.models.task_model import save_random_checkpoint

    path = os.path.join(workdir, "tiny_checkpoint")
    if not os.path.isfile(os.path.join(path, "config.json")):
        save_random_checkpoint(path)
    return path


def smoke_image_checkpoint(workdir: str) -> str:
    """A tiny random ViT (32x32 images), written once per workspace."""
    from tfpipeline.models.image_model import save_random_vit_checkpoint

    path = os.path.join(workdir, "tiny_vit")
    if not os.path.isfile(os.path.join(path, "config.json")):
        save_random_vit_checkpoint(path, image_size=SMOKE_IMAGE_TRAIN["image_size"])
    return path


def untuned_embedding_predictor(encoder, *, smoke: bool, workdir: str):
    """The checkpoint's encoder as an embedding model, before any fine-tuning (the baseline of retrieval recipes)."""
    from tfpipeline.data.examples import EMBEDDING
    from tfpipeline.bundle import ModelBundle
    from tfpipeline.models.embedding_model import build_embedding_model, similarity_labels

    model = build_embedding_model(smoke_checkpoint(workdir) if smoke else None)
    return ModelBundle(model, encoder, similarity_labels(), EMBEDDING).predictor()


def predictor(model_dir: str):
    from tfpipeline.bundle import ModelBundle

    return ModelBundle.load(model_dir).predictor()


def threshold_table(probs: np.ndarray, gold: np.ndarray, thresholds) -> list:
    """Coverage (share handled automatically: top score >= threshold) and accuracy within it, per threshold.

    The table a routing recipe prints so its user can pick the confidence threshold."""
    top, pred = probs.max(axis=1), probs.argmax(axis=1)
    rows = []
    for t in thresholds:
        auto = top >= t
        accuracy = float((pred[auto] == gold[auto]).mean()) if auto.any() else float("nan")
        rows.append({"threshold": t, "coverage": float(auto.mean()), "automated_accuracy": accuracy})
    return rows


@contextlib.contextmanager
def served(models: Dict[str, str], workdir: str, documents: Optional[Dict[str, tuple]] = None) -> Iterator[dict]:
    """Export each model folder and serve them from one local server; yields {name: RestClient}.

    ``documents``: {name: (ids, texts)} for embedding models, exported with that
    document index (the ``search`` signature; ``tfpipeline index`` in Python).
    Loopback only, on a free port; the server stops when the block ends.
    """
    from serving import ModelServer, RestClient
    from tfpipeline.bundle import ModelBundle

    base = os.path.join(workdir, "exports")
    for name, model_dir in models.items():
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)    # one fresh version 1 per run
        bundle = ModelBundle.load(model_dir)
        ids, texts = (documents or {}).get(name, (None, None))
        index = bundle.document_index(texts, ids) if texts is not None else None
        print(f"[serve] exported {name} -> {bundle.export(base, name, index=index)}")
    with ModelServer(base, host="127.0.0.1", grpc_port=None, rest_port=0, poll_seconds=0) as server:
        print(f"[serve] REST API at {server.rest_url}/v1/models/{{{','.join(models)}}}")
        yield {name: RestClient(server.rest_url, name) for name in models}


class TextClassifier:
    """Scores from the served model (REST client) or, with ``client=None``, from an in-process Predictor."""

    def __init__(self, model_dir: str, client=None):
        from tfpipeline.data.labels import LabelMap

        self.labels: List[str] = LabelMap.load(model_dir).names
        self.client = client
        self._predictor = None if client else predictor(model_dir)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """[N, num_labels] softmax scores, columns in ``self.labels`` order."""
        if not texts:
            return np.zeros((0, len(self.labels)), np.float32)
        if self.client is None:
            return self._predictor.class_probabilities(list(texts))
        rows = self.client.predict_texts(list(texts))
        return np.asarray([row["scores"] for row in rows], np.float32)

    def top(self, texts: Sequence[str], k: int = 1) -> List[List[tuple]]:
        """Per text, the ``k`` best (label, score) pairs."""
        out = []
        for p in self.probabilities(texts):
            best = np.argsort(-p)[:k]
            out.append([(self.labels[i], float(p[i])) for i in best])
        return out
