"""Prompt-based zero-shot and few-shot classification by sentence-embedding similarity.

all-MiniLM-L6-v2 ships no masked-LM head, so cloze-style prompting ("it was
[MASK]", ``tfpipeline.models.cloze`` for checkpoints that have one) is not
available for it. It *is* trained so that mean-pooled, L2-normalised
token states of related sentences are close (cosine), so a text is classified
by its similarity to prompt-templated label descriptions:

    label vector  = normalise(mean over verbalizer words w of embed(template.format(w)))
    p(label|text) = softmax(cos(embed(text), label vector) / temperature)

Few-shot, two ways:

* prototypes (no training): each label vector is mixed with the mean
  embedding of its k examples: ``normalise(w * prompt + (1 - w) * mean(shots))``.
* prompt fine-tuning: the encoder is trained on the k-shot data so that
  ``softmax(cos(text, label prompts) / temperature)`` puts mass on the gold
  label (prompts are re-embedded by the trained encoder at every step), then
  predicts by similarity as above.

Deployment: ``ZeroShotClassifier.task_model()`` is a ``LabelVectorClassifier``
(encoder + fixed label vectors -> logits), so the classifier evaluates,
predicts, exports (same SavedModel signatures) and serves like a fine-tuned
model; ``save`` writes it as a model folder (the encoder as an HF checkpoint +
``label_vectors.npy``) that ``load_task_model`` reads back.
"""
from __future__ import annotations

import os
import random
import shutil
import time
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence

from tfpipeline import _env  # noqa: F401

import numpy as np
import tensorflow as tf
import tf_keras

from tfpipeline.data.examples import CLASSIFICATION, DataError, TextExample
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import FEATURES, TextEncoder

DEFAULT_TEMPLATE = "This review is {}."
LABEL_VECTOR_HEAD = "label_vectors"      # tfpipeline.json "head" of a saved zero/few-shot classifier
LABEL_VECTORS_FILE = "label_vectors.npy"


def format_prompt(template: str, word: str) -> str:
    """Fill ``{}`` or ``{label}`` in ``template``."""
    if "{label}" in template:
        return template.replace("{label}", word)
    if "{}" in template:
        return template.replace("{}", word)
    raise DataError(f"prompt template {template!r} needs a {{}} or {{label}} placeholder")


def parse_verbalizer(text: str) -> Dict[str, List[str]]:
    """'positive=good,great;negative=bad' -> {'positive': ['good', 'great'], 'negative': ['bad']}."""
    out: Dict[str, List[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        label, sep, words = part.partition("=")
        if not sep or not words.strip():
            raise DataError(f"verbalizer entry {part!r}: expected label=word1,word2")
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


# ------------------------------------------------------------------ sentence embeddings
def mean_pool(hidden: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Masked mean over positions, L2-normalised (the sentence-transformers recipe)."""
    mask = tf.cast(mask, hidden.dtype)[..., None]
    pooled = tf.reduce_sum(hidden * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
    return tf.math.l2_normalize(pooled, axis=-1)


class SentenceEncoder:
    """Sentence embeddings from a BERT checkpoint's encoder (``minilm``, any checkpoint or model folder)."""

    def __init__(self, checkpoint: Optional[str] = "minilm", *, max_length: int = 128, batch_size: int = 64):
        from tfpipeline.models.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(checkpoint)
        self.backbone = load_base_model(path)      # a transformers TF*Model (no task head)
        self.main = getattr(self.backbone, self.backbone.base_model_prefix)
        self.encoder = TextEncoder.from_directory(path, max_length=max_length)
        self.batch_size = batch_size
        spec = {k: tf.TensorSpec([None, None], tf.int32) for k in ("input_ids", "attention_mask",
                                                                   "token_type_ids")}
        self._embed = tf.function(lambda f: self.embed_features(f), input_signature=[spec])

    def embed_features(self, features, training: bool = False) -> tf.Tensor:
        hidden = self.main(features, training=training).last_hidden_state
        return mean_pool(hidden, features["attention_mask"])

    def features(self, texts: Sequence[str]) -> Dict[str, tf.Tensor]:
        return self.encoder.pad(self.encoder.encode(tf.constant(list(texts))))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[N, hidden] unit vectors, in input order (batches grouped by length)."""
        if not len(texts):
            return np.zeros((0, self.main.config.hidden_size), np.float32)
        out = np.zeros((len(texts), self.main.config.hidden_size), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._embed(self.features([texts[i] for i in idx])).numpy()
        return out


def load_base_model(path: str):
    """The checkpoint's encoder as a transformers ``TFAutoModel`` (h5, safetensors, or a tfpipeline model folder)."""
    from transformers import AutoConfig, TFAutoModel

    from tfpipeline.models.checkpoint import load_safetensors_into, weights_file

    kind, wfile = weights_file(path)
    if kind == "tf":
        return TFAutoModel.from_pretrained(path)
    model = TFAutoModel.from_config(AutoConfig.from_pretrained(path))
    model(model.dummy_inputs, training=False)
    load_safetensors_into(model, wfile)
    return model


# ------------------------------------------------------------------ deployable classifier
class LabelVectorClassifier(tf_keras.Model):
    """``features -> cos(mean-pooled text embedding, label vector) / temperature`` logits.

    The zero/few-shot classifier as a plain Keras model with the
    ``TaskModel`` interface (``backbone``, ``task``), so ``Predictor``,
    evaluation, ``export_model`` and the model server use it unchanged.
    """

    def __init__(self, backbone, label_vectors: np.ndarray, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.task = CLASSIFICATION
        self.temperature = float(temperature)
        vectors = np.asarray(label_vectors, np.float32)
        self.label_vectors = self.add_weight(name="label_vectors", shape=vectors.shape, trainable=False,
                                             initializer=tf_keras.initializers.Constant(vectors))

    def call(self, inputs, training=False):
        features = {k: inputs[k] for k in FEATURES if k in inputs}
        main = getattr(self.backbone, self.backbone.base_model_prefix)
        texts = mean_pool(main(features, training=training).last_hidden_state, features["attention_mask"])
        return tf.matmul(texts, tf.cast(self.label_vectors, texts.dtype), transpose_b=True) / self.temperature


def load_label_vector_classifier(directory: str, meta: Mapping) -> LabelVectorClassifier:
    """The model of a folder written by ``ZeroShotClassifier.save`` (called by ``load_task_model``)."""
    from tfpipeline.models.checkpoint import CheckpointError

    path = os.path.join(directory, LABEL_VECTORS_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{directory}: zero-shot model folder lacks {LABEL_VECTORS_FILE}")
    model = LabelVectorClassifier(load_base_model(directory), np.load(path), meta.get("temperature", 0.05))
    model({k: tf.ones([1, 4], tf.int32) for k in FEATURES}, training=False)
    return model


# ------------------------------------------------------------------ prompt fine-tuning model
class PromptSimilarityModel(tf_keras.Model):
    """``features -> cos(text, label prompt) / temperature`` logits; trains the encoder end to end."""

    def __init__(self, sentence_encoder: SentenceEncoder, prompt_features: Dict[str, tf.Tensor],
                 prompt_labels: Sequence[int], num_labels: int, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.sentence_encoder = sentence_encoder
        self.main = sentence_encoder.main  # tracked here, so its weights train
        self.prompt_features = {k: tf.constant(v) for k, v in prompt_features.items()}
        self.prompt_labels = tf.constant(list(prompt_labels), tf.int32)
        self.num_labels, self.temperature = int(num_labels), float(temperature)

    def call(self, inputs, training=False):
        features = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        texts = self.sentence_encoder.embed_features(features, training=training)
        prompts = self.sentence_encoder.embed_features(self.prompt_features, training=training)
        labels = tf.math.l2_normalize(
            tf.math.unsorted_segment_mean(prompts, self.prompt_labels, self.num_labels), axis=-1)
        return tf.matmul(texts, labels, transpose_b=True) / self.temperature


# ------------------------------------------------------------------ classifier
class ZeroShotClassifier:
    """Label prompts (+ optional few-shot prototypes) -> classification by cosine similarity."""

    def __init__(self, encoder: SentenceEncoder, labels: Sequence[str], *, template: str = DEFAULT_TEMPLATE,
                 verbalizer: Optional[Mapping[str, Sequence[str]]] = None, temperature: float = 0.05):
        self.encoder = encoder
        self.labels = LabelMap(labels)
        self.template = template
        verbalizer = dict(verbalizer or {})
        unknown = sorted(set(verbalizer) - set(self.labels.names))
        if unknown:
            raise DataError(f"verbalizer names unknown labels {unknown} (labels: {self.labels.names})")
        self.verbalizer = {n: list(verbalizer.get(n) or [n]) for n in self.labels.names}
        self.temperature = float(temperature)
        self.shots: List[TextExample] = []
        self.prompt_weight = 1.0
        self.label_vectors = self.prompt_vectors()

    @classmethod
    def from_checkpoint(cls, labels: Sequence[str], checkpoint: Optional[str] = "minilm", *,
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
            raise ValueError(f"prompt_weight must be in [0, 1], got {prompt_weight}")
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
        from tfpipeline.data.pipeline import make_dataset
        from tfpipeline.training.optimization import create_optimizer

        if not shots:
            raise DataError("prompt fine-tuning needs labelled examples")
        tf_keras.utils.set_random_seed(seed)
        ids, texts = zip(*self.prompts())
        model = PromptSimilarityModel(self.encoder, self.encoder.features(list(texts)), ids, len(self.labels),
                                      temperature or self.temperature)
        steps = epochs * max(1, -(-len(shots) // batch_size))
        model.compile(optimizer=create_optimizer(learning_rate, steps, warmup_ratio=0.1),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        data = make_dataset(list(shots), self.encoder.encoder, self.labels, CLASSIFICATION,
                            batch_size=batch_size, training=True, seed=seed)
        started = time.perf_counter()
        history = model.fit(data, epochs=epochs, verbose=verbose)
        self.train_seconds = time.perf_counter() - started
        self.label_vectors = self._vectors()  # re-embed prompts (and prototypes) with the new encoder
        return dict(history.history)

    # -------------------------------------------------------------- prediction
    def class_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        sims = self.encoder.embed(list(texts)) @ self.label_vectors.T
        return _softmax(sims / self.temperature)

    def classify(self, texts: Sequence[str]) -> List[Dict]:
        probs = self.class_probabilities(texts)
        return [{"label": self.labels.name(int(p.argmax())), "score": float(p.max()),
                 "scores": {n: float(s) for n, s in zip(self.labels.names, p)}} for p in probs]

    # -------------------------------------------------------------- deployment
    def task_model(self) -> LabelVectorClassifier:
        """The classifier as a Keras model (shares the encoder's weights; label vectors are copied)."""
        return LabelVectorClassifier(self.encoder.backbone, self.label_vectors, self.temperature)

    def predictor(self, batch_size: int = 64):
        """A ``Predictor`` (what evaluate / export / serving take) for the current label vectors."""
        from tfpipeline.inference import Predictor

        return Predictor(self.task_model(), self.encoder.encoder, self.labels, CLASSIFICATION, batch_size)

    def save(self, directory: str, *, overwrite: bool = False, source_checkpoint: Optional[str] = None,
             **meta) -> str:
        """Write a model folder that loads, evaluates, exports and serves like a fine-tuned one.

        The folder appears only when complete (written as ``<directory>.partial``, then renamed).
        """
        from tfpipeline.models.task_model import save_task_model
        from tfpipeline.training.trainer import prepare_output, publish_run

        staging = prepare_output(directory, overwrite)
        try:
            save_task_model(self.task_model(), self.encoder.encoder, self.labels, staging,
                            head=LABEL_VECTOR_HEAD, temperature=self.temperature, template=self.template,
                            verbalizer=self.verbalizer, shots=len(self.shots), prompt_weight=self.prompt_weight,
                            source_checkpoint=source_checkpoint, **meta)
            np.save(os.path.join(staging, LABEL_VECTORS_FILE), self.label_vectors.astype(np.float32))
            publish_run(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory

    def evaluate(self, examples: Sequence[TextExample]) -> Dict:
        from tfpipeline.evaluation.reports import classification_report

        if not examples:
            raise DataError("nothing to evaluate: no examples")
        for ex in examples:
            self.labels.id(ex.label, ex.origin)
        probs = self.class_probabilities([ex.text for ex in examples])
        predicted = [self.labels.name(i) for i in probs.argmax(axis=1)]
        return classification_report([ex.label for ex in examples], predicted, self.labels.names)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------ the three numbers
def zero_few_shot_report(train: Sequence[TextExample], test: Sequence[TextExample], labels: Sequence[str], *,
                         checkpoint: Optional[str] = "minilm", template: str = DEFAULT_TEMPLATE,
                         verbalizer: Optional[Mapping[str, Sequence[str]]] = None, shots_per_class: int = 16,
                         prompt_weight: float = 0.5, epochs: int = 5, learning_rate: float = 2e-5,
                         max_length: int = 128, seed: int = 13) -> Dict:
    """Accuracy / macro-F1 of zero-shot, few-shot prototypes and few-shot prompt fine-tuning on ``test``."""
    shots = sample_shots(train, shots_per_class, seed)
    clf = ZeroShotClassifier.from_checkpoint(labels, checkpoint, max_length=max_length, template=template,
                                             verbalizer=verbalizer)

    def scores(report):
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}

    out = {"test_examples": len(test), "shots": len(shots), "shots_per_class": shots_per_class,
           "template": template, "verbalizer": clf.verbalizer}
    out["zero_shot"] = scores(clf.evaluate(test))
    out["few_shot_prototypes"] = scores(clf.fit_prototypes(shots, prompt_weight).evaluate(test))
    clf.fit_prototypes([], 1.0)
    clf.finetune(shots, epochs=epochs, learning_rate=learning_rate, seed=seed)
    out["few_shot_finetuned"] = scores(clf.evaluate(test))
    out["few_shot_finetuned"]["train_seconds"] = round(clf.train_seconds, 1)
    out["few_shot_finetuned_prototypes"] = scores(clf.fit_prototypes(shots, prompt_weight).evaluate(test))
    return out
