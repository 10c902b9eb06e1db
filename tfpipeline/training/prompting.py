"""Zero-/few-shot classification by prompts: the two classifiers and the ``zeroshot`` workflow.

Two methods, chosen per checkpoint (``zeroshot`` picks one when ``method="auto"``):

* *similarity* (``ZeroShotClassifier``, models in ``tfpipeline.models.zeroshot``):
  cosine similarity of the sentence embedding to prompt-templated label
  descriptions; works with sentence-embedding checkpoints such as the default
  MiniLM, which has no masked-LM head. Few-shot, two ways: prototypes (each
  label vector mixed with the mean embedding of its shots, no training) and
  prompt fine-tuning (the encoder trained with the prompt-similarity softmax).
* *cloze* (``ClozeClassifier``, model in ``tfpipeline.models.cloze``): the
  masked LM scores label words at ``[MASK]`` of a prompted text (PET /
  LM-BFF); needs a checkpoint that ships its MLM head. Few-shot = prompt-based
  fine-tuning of the whole MLM.

Both produce a ``ModelBundle`` (``.bundle()``), so a classifier evaluates,
predicts, exports and serves like a fine-tuned model, and ``.save`` writes it
as a model folder (kinds ``label_vectors`` and ``cloze``) that
``ModelBundle.load`` reads back.
"""
from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import tf_keras

from tfpipeline.bundle import ModelBundle, read_metadata
from tfpipeline.config import DEFAULT_CHECKPOINT, ZeroShotConfig
from tfpipeline.data.catalog import load_dataset
from tfpipeline.data.examples import CLASSIFICATION, TextExample
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import batches_per_epoch, make_dataset
from tfpipeline.data.readers import read_task_file
from tfpipeline.data.tokenization import FEATURES, TextEncoder
from tfpipeline.errors import CheckpointError, ConfigError, DataError
from tfpipeline.evaluation.evaluate import evaluate_examples
from tfpipeline.inference import Predictor
from tfpipeline.models.checkpoint import resolve_checkpoint
from tfpipeline.models.checkpoint_recipes import recipe_for
from tfpipeline.models.cloze import (CLOZE_HEAD, DEFAULT_CLOZE_TEMPLATE, MASK_TOKEN, NO_HEAD_HINT, ClozeModel,
                                     has_mlm_head, load_mlm, template_ids, verbalizer_ids)
from tfpipeline.models.zeroshot import (DEFAULT_TEMPERATURE, LABEL_VECTOR_HEAD, LabelVectorClassifier,
                                        PromptSimilarityModel, SentenceEncoder)
from tfpipeline.staging import check_output

DEFAULT_TEMPLATE = "This review is {}."    # similarity prompt; the cloze default is DEFAULT_CLOZE_TEMPLATE


# ------------------------------------------------------------------ prompts, verbalizers, shots
def format_prompt(template: str, word: str) -> str:
    """Fill ``{}`` or ``{label}`` in ``template``."""
    if "{label}" in template:
        return template.replace("{label}", word)
    if "{}" in template:
        return template.replace("{}", word)
    raise ConfigError(f"prompt template {template!r} needs a {{}} or {{label}} placeholder")


def parse_verbalizer(text: str) -> Dict[str, List[str]]:
    """'positive=good,great;negative=bad' -> {'positive': ['good', 'great'], 'negative': ['bad']}."""
    out: Dict[str, List[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        label, sep, words = part.partition("=")
        if not sep or not words.strip():
            raise ConfigError(f"verbalizer entry {part!r}: expected label=word1,word2")
        out[label.strip()] = [w.strip() for w in words.split(",") if w.strip()]
    return out


def sample_shots(examples: Sequence[TextExample], per_class: int, seed: int = 13) -> List[TextExample]:
    """``per_class`` examples of every label (fewer if a label has fewer), seeded."""
    by_label: Dict[str, List[TextExample]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    rng = random.Random(seed)
    shots = []
    for label in sorted(by_label):
        pool = list(by_label[label])
        rng.shuffle(pool)
        shots += pool[:per_class]
    rng.shuffle(shots)
    return shots


def fit_on_shots(model: tf_keras.Model, encoder: TextEncoder, labels: LabelMap, shots: Sequence[TextExample], *,
                 epochs: int, learning_rate: float, batch_size: int, seed: int, warmup_ratio: float = 0.1,
                 verbose: int = 0) -> Tuple[Dict[str, list], float]:
    """Prompt fine-tuning's training loop, shared by both methods: ``(history, seconds)``.

    ``model`` maps ordinary text features to label logits (the prompt is built
    inside it). Same pipeline (``make_dataset``) and compile defaults
    (``ModelBundle.compile``: AdamW, warmup + linear decay over exactly the
    steps the bucketed dataset yields) as ordinary fine-tuning.
    """
    if not shots:
        raise DataError("prompt fine-tuning needs labelled examples")
    tf_keras.utils.set_random_seed(seed)
    steps = epochs * batches_per_epoch(shots, encoder, CLASSIFICATION, batch_size)
    ModelBundle(model, encoder, labels, CLASSIFICATION).compile(learning_rate=learning_rate, total_steps=steps,
                                                                warmup_ratio=warmup_ratio)
    data = make_dataset(list(shots), encoder, labels, CLASSIFICATION, batch_size=batch_size, training=True,
                        seed=seed)
    started = time.perf_counter()
    history = model.fit(data, epochs=epochs, verbose=verbose)
    return dict(history.history), time.perf_counter() - started


# ------------------------------------------------------------------ similarity
class ZeroShotClassifier:
    """Label prompts (+ optional few-shot prototypes) -> classification by cosine similarity."""

    def __init__(self, encoder: SentenceEncoder, labels: Sequence[str], *, template: str = DEFAULT_TEMPLATE,
                 verbalizer: Optional[Mapping[str, Sequence[str]]] = None, temperature: float = DEFAULT_TEMPERATURE):
        self.encoder = encoder
        self.labels = labels if isinstance(labels, LabelMap) else LabelMap(labels)
        self.template = template
        verbalizer = dict(verbalizer or {})
        unknown = sorted(set(verbalizer) - set(self.labels.names))
        if unknown:
            raise ConfigError(f"verbalizer names unknown labels {unknown} (labels: {self.labels.names})")
        self.verbalizer = {n: list(verbalizer.get(n) or [n]) for n in self.labels.names}
        self.temperature = float(temperature)
        self.shots: List[TextExample] = []
        self.prompt_weight = 1.0
        self.train_seconds = 0.0
        self.label_vectors = self.prompt_vectors()

    @classmethod
    def from_checkpoint(cls, labels: Sequence[str], checkpoint: Optional[str] = DEFAULT_CHECKPOINT, *,
                        max_length: int = 128, **kwargs) -> "ZeroShotClassifier":
        return cls(SentenceEncoder(checkpoint, max_length=max_length), labels, **kwargs)

    # -------------------------------------------------------------- label vectors
    def prompts(self) -> List[tuple]:
        """(label id, prompt text) for every verbalizer word of every label."""
        return [(i, format_prompt(self.template, word)) for i, name in enumerate(self.labels.names)
                for word in self.verbalizer[name]]

    def prompt_vectors(self) -> np.ndarray:
        ids, texts = zip(*self.prompts())
        vectors = self.encoder.embed(list(texts))
        out = np.stack([vectors[np.asarray(ids) == i].mean(axis=0) for i in range(len(self.labels))])
        return _normalise(out)

    def fit_prototypes(self, shots: Sequence[TextExample], prompt_weight: float = 0.5) -> "ZeroShotClassifier":
        """Mix each label's prompt vector with the mean embedding of its examples (no training)."""
        if not 0.0 <= prompt_weight <= 1.0:
            raise ConfigError(f"prompt_weight must be in [0, 1], got {prompt_weight}")
        for ex in shots:
            self.labels.id(ex.label, ex.origin)
        self.shots, self.prompt_weight = list(shots), float(prompt_weight)
        self.label_vectors = self._vectors()
        return self

    def _vectors(self) -> np.ndarray:
        prompts = self.prompt_vectors()
        if not self.shots or self.prompt_weight >= 1.0:
            return prompts
        embedded = self.encoder.embed([ex.text for ex in self.shots])
        gold = np.asarray([self.labels.id(ex.label) for ex in self.shots])
        out = prompts.copy()
        for i in range(len(self.labels)):
            if (gold == i).any():
                prototype = _normalise(embedded[gold == i].mean(axis=0, keepdims=True))[0]
                out[i] = self.prompt_weight * prompts[i] + (1.0 - self.prompt_weight) * prototype
        return _normalise(out)

    # -------------------------------------------------------------- prompt fine-tuning
    def finetune(self, shots: Sequence[TextExample], *, epochs: int = 5, learning_rate: float = 2e-5,
                 batch_size: int = 16, temperature: Optional[float] = None, seed: int = 13,
                 verbose: int = 0) -> Dict[str, list]:
        """Train the encoder on k-shot ``shots`` with the prompt-similarity softmax; returns the history."""
        ids, texts = zip(*self.prompts())
        model = PromptSimilarityModel(self.encoder, self.encoder.features(list(texts)), ids, len(self.labels),
                                      temperature or self.temperature)
        history, self.train_seconds = fit_on_shots(model, self.encoder.encoder, self.labels, shots, epochs=epochs,
                                                   learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                                                   verbose=verbose)
        self.label_vectors = self._vectors()  # re-embed prompts (and prototypes) with the new encoder
        return history

    # -------------------------------------------------------------- prediction
    def class_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        sims = self.encoder.embed(list(texts)) @ self.label_vectors.T
        return _softmax(sims / self.temperature)

    def classify(self, texts: Sequence[str]) -> List[Dict]:
        probs = self.class_probabilities(texts)
        return [{"label": self.labels.name(int(p.argmax())), "score": float(p.max()),
                 "scores": {n: float(s) for n, s in zip(self.labels.names, p)}} for p in probs]

    def evaluate(self, examples: Sequence[TextExample]) -> Dict:
        return evaluate_examples(self.predictor(), examples)

    # -------------------------------------------------------------- deployment
    def task_model(self) -> LabelVectorClassifier:
        """The classifier as a Keras model (shares the encoder's weights; label vectors are copied)."""
        return LabelVectorClassifier(self.encoder.backbone, self.label_vectors, self.temperature)

    def bundle(self, **meta) -> ModelBundle:
        """The classifier as it stands (current label vectors) as a bundle of kind ``label_vectors``.

        ``meta`` adds provenance (``source_checkpoint``, ``dataset``) to the folder's metadata.
        """
        info = {"head": LABEL_VECTOR_HEAD, "temperature": self.temperature, "template": self.template,
                "verbalizer": self.verbalizer, "shots": len(self.shots), "prompt_weight": self.prompt_weight,
                "source_checkpoint": meta.pop("source_checkpoint", None), **meta}
        return ModelBundle(self.task_model(), self.encoder.encoder, self.labels, CLASSIFICATION, info)

    def predictor(self, batch_size: int = 64) -> Predictor:
        """A ``Predictor`` (what evaluation, export and serving take) for the current label vectors."""
        return self.bundle().predictor(batch_size)

    def save(self, directory: str, *, overwrite: bool = False, **meta) -> str:
        """Write a model folder that loads, evaluates, exports and serves like a fine-tuned one."""
        return self.bundle(**meta).save(directory, overwrite=overwrite)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------ cloze
class ClozeClassifier:
    """Masked-LM prompt + verbalizer classifier: zero-shot, or prompt-based fine-tuning on a few shots."""

    def __init__(self, backbone, encoder: TextEncoder, labels: Sequence[str], *,
                 template: str = DEFAULT_CLOZE_TEMPLATE, verbalizer: Optional[Mapping[str, Sequence[str]]] = None,
                 reduce: str = "mean"):
        self.backbone, self.encoder = backbone, encoder
        self.labels = labels if isinstance(labels, LabelMap) else LabelMap(labels)
        self.template = template
        self.prefix_ids, self.suffix_ids = template_ids(encoder, template)
        self.verbalizer, self.label_word_ids = verbalizer_ids(encoder, self.labels, verbalizer)
        self.model = ClozeModel(backbone, self.prefix_ids, self.suffix_ids, self.label_word_ids,
                                max_length=encoder.max_length, cls_id=encoder.cls_id, sep_id=encoder.sep_id,
                                pad_id=encoder.pad_id, mask_id=encoder.mask_id, reduce=reduce)
        self.model({k: tf.ones([1, 4], tf.int32) for k in FEATURES}, training=False)
        self.shots: List[TextExample] = []
        self.finetune_epochs = 0
        self.train_seconds = 0.0
        self._predictor: Optional[Predictor] = None

    @classmethod
    def from_checkpoint(cls, labels: Sequence[str], checkpoint: Optional[str], *, max_length: int = 128,
                        **kwargs) -> "ClozeClassifier":
        """From a local checkpoint (or cloze model folder) with an MLM head; ``CheckpointError`` without one."""
        path = resolve_checkpoint(checkpoint)
        if not has_mlm_head(path):
            raise CheckpointError(f"{path}: checkpoint has no masked-LM head; {NO_HEAD_HINT}")
        return cls(load_mlm(path), TextEncoder.from_directory(path, max_length=max_length), labels, **kwargs)

    @classmethod
    def from_directory(cls, directory: str) -> "ClozeClassifier":
        """A saved cloze model folder as a classifier again (e.g. to fine-tune it further)."""
        meta = read_metadata(directory)
        if meta.get("head") != CLOZE_HEAD:
            raise CheckpointError(f"{directory}: not a cloze classifier folder (head {meta.get('head')!r})")
        bundle = ModelBundle.load(directory)
        return cls(bundle.model.backbone, bundle.encoder, bundle.labels, template=meta["template"],
                   verbalizer=meta["verbalizer"], reduce=meta.get("reduce", "mean"))

    @property
    def max_length(self) -> int:
        """Length budget of the prompted sequence (text is truncated to fit the template in it)."""
        return self.model.max_length

    # -------------------------------------------------------------- prediction (all through Predictor)
    def predictor(self, batch_size: int = 64) -> Predictor:
        """A ``Predictor`` over ``task_model()`` (what evaluation, export and serving take)."""
        if self._predictor is None or self._predictor.batch_size != batch_size:
            self._predictor = self.bundle().predictor(batch_size)
        return self._predictor

    def task_model(self) -> ClozeModel:
        return self.model

    def class_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return self.predictor().class_probabilities(list(texts))

    def classify(self, texts: Sequence[str]) -> List[Dict]:
        return self.predictor().classify(list(texts))

    def evaluate(self, examples: Sequence[TextExample]) -> Dict:
        _no_pairs(examples)
        return evaluate_examples(self.predictor(), examples)

    # -------------------------------------------------------------- prompt-based fine-tuning
    def finetune(self, shots: Sequence[TextExample], *, epochs: int = 20, learning_rate: float = 2e-5,
                 batch_size: int = 8, seed: int = 13, warmup_ratio: float = 0.1, verbose: int = 0) -> Dict[str, list]:
        """Train the whole MLM with cross-entropy over the label logits on ``shots``; returns the Keras history.

        LM-BFF trains pretrained BERT-size models for ~1000 steps at 1e-5 with batch 8; with 16-32 shots per
        class the defaults here (20 epochs at 2e-5) are a shorter budget, raise ``epochs`` if the loss has not
        flattened.
        """
        _no_pairs(shots)
        history, self.train_seconds = fit_on_shots(self.model, self.encoder, self.labels, shots, epochs=epochs,
                                                   learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                                                   warmup_ratio=warmup_ratio, verbose=verbose)
        self.shots, self.finetune_epochs = list(shots), self.finetune_epochs + epochs
        return history

    # -------------------------------------------------------------- deployment
    def bundle(self, **meta) -> ModelBundle:
        """The classifier as a bundle of kind ``cloze`` (the MLM checkpoint + the prompt ids in its metadata).

        ``meta`` adds provenance (``source_checkpoint``, ``dataset``) to the folder's metadata.
        """
        info = {"head": CLOZE_HEAD, "template": self.template, "verbalizer": self.verbalizer,
                "label_word_ids": self.label_word_ids, "reduce": self.model.reduce,
                "prompt": self.model.prompt_metadata(), "shots": len(self.shots),
                "finetune_epochs": self.finetune_epochs, "source_checkpoint": meta.pop("source_checkpoint", None),
                **meta}
        return ModelBundle(self.model, self.encoder, self.labels, CLASSIFICATION, info)

    def save(self, directory: str, *, overwrite: bool = False, **meta) -> str:
        """Write a model folder that evaluates, predicts, exports and serves like a trained model."""
        return self.bundle(**meta).save(directory, overwrite=overwrite)


def _no_pairs(examples: Sequence[TextExample]) -> None:
    for ex in examples:
        if getattr(ex, "text_pair", None) is not None:
            raise DataError(f"{ex.origin or 'example'}: cloze prompting classifies single texts; text pairs "
                            "are not supported")


# ------------------------------------------------------------------ the zeroshot workflow
PromptClassifier = Union[ZeroShotClassifier, ClozeClassifier]


@dataclass
class ZeroShotRun:
    """What ``zeroshot`` did: the classifier, how it was built, and its scores and predictions."""

    classifier: PromptClassifier
    method: str                                  # "similarity" or "cloze"
    mode: str                                    # e.g. "similarity, 16 shots, prototypes (prompt weight 0.5)"
    report: Optional[Dict[str, Any]] = None      # scores on the dataset's test split (with ``dataset``)
    examples: int = 0                            # test examples scored
    results: List[Dict[str, Any]] = field(default_factory=list)   # per text: text, label, score, scores


def choose_method(method: str, template: Optional[str], checkpoint: Optional[str]) -> str:
    """``auto`` -> cloze when the checkpoint has an MLM head and the template (if any) is a cloze one."""
    if method != "auto":
        return method
    cloze_template = template is None or MASK_TOKEN in template
    return "cloze" if cloze_template and has_mlm_head(checkpoint) else "similarity"


def zeroshot(config: ZeroShotConfig, texts: Sequence[str] = ()) -> ZeroShotRun:
    """Build a zero-/few-shot classifier as ``config`` says, then evaluate, save and classify ``texts``.

    Shots come from ``shots_file`` and/or ``shots`` per class of the dataset's
    training split; labels from ``labels``, else the dataset, else the shots.
    With shots: prompt fine-tuning (``finetune_epochs``) and, for similarity,
    prototypes (``prompt_weight`` < 1). Prints nothing except a note on stderr
    when cloze ignores shots (no fine-tuning epochs); the caller reports the rest.
    """
    config.validate()
    texts = list(texts)
    if not config.dataset and not texts and not config.output_dir:
        raise ConfigError("nothing to classify: pass texts as arguments, --file, --dataset to evaluate, "
                          "or --output-dir to save the classifier")
    if config.output_dir:
        check_output(config.output_dir, config.overwrite)     # a clash fails before any model is loaded
    shots = (read_task_file(config.shots_file, CLASSIFICATION, text_column=config.text_column,
                            label_column=config.label_column, pair_column=config.pair_column)
             if config.shots_file else [])
    data = None
    if config.dataset:
        data = load_dataset(config.dataset, seed=config.seed)
        if data.task != CLASSIFICATION:
            raise DataError(f"zero-shot needs a classification dataset; {config.dataset} is {data.task}")
        if config.shots:
            shots += sample_shots(data.train, config.shots, seed=config.seed)
    labels = list(config.labels) or (list(data.labels) if data else []) or sorted({ex.label for ex in shots})
    if not labels:
        raise ConfigError("give the candidate labels: --labels 'positive,negative' (or a --shots-file / --dataset)")
    verbalizer = parse_verbalizer(config.verbalizer) if config.verbalizer else None
    method = choose_method(config.method, config.template, config.model)
    clf = _build(method, config, labels, verbalizer, shots)
    if config.output_dir:  # a model folder: evaluate / predict / export / serve it like a fine-tuned one
        clf.save(config.output_dir, overwrite=config.overwrite, source_checkpoint=config.model,
                 dataset=config.dataset)
    run = ZeroShotRun(clf, method, f"{method}, {_mode(method, config, shots)}")
    if data:
        examples = data.test[:config.limit] if config.limit else data.test
        run.report, run.examples = clf.evaluate(examples), len(examples)
    if texts:
        run.results = [{"text": text, **result} for text, result in zip(texts, clf.classify(texts))]
    return run


def _build(method: str, config: ZeroShotConfig, labels: List[str], verbalizer, shots) -> PromptClassifier:
    tuning = dict(epochs=config.finetune_epochs, seed=config.seed,
                  learning_rate=config.learning_rate or recipe_for(config.model).learning_rate(CLASSIFICATION))
    if method == "cloze":
        clf = ClozeClassifier.from_checkpoint(labels, config.model, max_length=config.max_length,
                                              template=config.template or DEFAULT_CLOZE_TEMPLATE,
                                              verbalizer=verbalizer)
        if shots and config.finetune_epochs:
            clf.finetune(shots, **tuning)
        elif shots:
            print("[tfpipeline] cloze: shots are used only by prompt fine-tuning (--finetune-epochs N)",
                  file=sys.stderr)
        return clf
    clf = ZeroShotClassifier.from_checkpoint(labels, config.model, max_length=config.max_length,
                                             template=config.template or DEFAULT_TEMPLATE, verbalizer=verbalizer)
    if shots and config.finetune_epochs:
        clf.finetune(shots, **tuning)
    if shots and config.prompt_weight < 1.0:
        clf.fit_prototypes(shots, prompt_weight=config.prompt_weight)
    return clf


def _mode(method: str, config: ZeroShotConfig, shots: Sequence[TextExample]) -> str:
    if not shots:
        return "zero-shot"
    return (f"{len(shots)} shots"
            + (f", prompt fine-tuned {config.finetune_epochs} epochs" if config.finetune_epochs else "")
            + (f", prototypes (prompt weight {config.prompt_weight})"
               if config.prompt_weight < 1.0 and method == "similarity" else ""))
