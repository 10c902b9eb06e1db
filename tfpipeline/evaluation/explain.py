"""Integrated Gradients: which input words made a model folder's prediction, per word piece and per word.

Why Integrated Gradients (Sundararajan et al., 2017): it needs only gradients
(no retraining, no sampling), and it is *complete*: the attributions of a text
add up to the change of the explained score between a baseline input and the
text, so a user can check how much of the score the words account for. It
also batches well: the interpolation steps of a text are rows of one batch.

How it is done here:

* The transformers backbone is fed ``inputs_embeds`` (rows of its word-piece
  embedding matrix) instead of ids, so the path runs through embedding space.
  The baseline puts the [PAD] embedding (or zeros) at every word piece and
  keeps [CLS]/[SEP] as they are; position and segment embeddings are added by
  the model at both ends of the path, so they cancel.
* ``steps`` points on the straight path baseline -> input (Gauss-Legendre nodes
  by default, or the trapezoid rule) run as rows of ``batch_size``-row batches
  in one ``tf.function``. A piece's attribution is (input - baseline) times the
  quadrature-weighted sum of the score's gradients, summed over the hidden
  size; a word's is the sum over its pieces (words are ``TextEncoder.split_words``
  words, with character offsets).
* Every explanation reports its *completeness gap*: the sum of attributions
  minus (score(input) - score(baseline)). It shrinks as ``steps`` grows.

What is explained comes from a registry (``TASK_SCORES``): per task, how texts
are encoded (as raw text, or as words for NER), how logits become the values a
target weights (softmax probabilities for classification and NER), and which
targets a text has: the predicted or chosen class; for NER one per predicted
entity (the mean probability of its words' tags, read at their first pieces).
A score is always ``sum(weights * values)`` with a weight array shaped like one
text's values, so a new task is one ``register_task_score`` call. Regression
(logits = standardised predictions) would be ``transform=tf.identity``, the
text encoding, and a one-hot weight on the chosen output column
(``one_hot_target``).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfpipeline.bundle import ModelBundle
from tfpipeline.config.explain import (BASELINES, GAUSS_LEGENDRE, IG_METHODS, MIN_STEPS, PAD_BASELINE,
                                       TRAPEZOID)
from tfpipeline.data.examples import CLASSIFICATION, NER, REGRESSION
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.decoding import bio_tables, byte_to_char_offsets, merge_entities
from tfpipeline.errors import ConfigError, DataError
from tfpipeline.models.kinds import TASK_KIND

DEFAULT_STEPS = 50
DEFAULT_BATCH_SIZE = 64
KIND_NAMES = {"label_vectors": "a zero/few-shot label-vector classifier", "cloze": "a masked-LM prompt classifier",
              "image": "an image classifier", "embedding": "a text-embedding bi-encoder"}


# --------------------------------------------------------------------------- what one text looks like
@dataclass
class EncodedText:
    """One text as the model sees it, with the map from word pieces to words that attributions are summed by."""

    text: str
    ids: np.ndarray           # [T] piece ids, [CLS] ... [SEP]
    token_types: np.ndarray   # [T]
    words: List[dict]         # {"text", "start", "end"}: character offsets into ``text``
    piece_word: np.ndarray    # [T] word index of every position; -1 at [CLS]/[SEP]
    first_pieces: np.ndarray  # [W] position of every word's first piece; -1 if it has none (truncated away)
    truncated: bool           # some pieces did not fit in the encoder's max_length

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Target:
    """A scalar to explain: ``sum(weights * values)``, ``weights`` shaped like one text's values ([C] or [T, C])."""

    label: str
    weights: np.ndarray
    details: dict = field(default_factory=dict)   # e.g. the entity explained


@dataclass(frozen=True)
class TaskScore:
    """How one task is explained; see the module docstring. ``targets`` returns (prediction, targets)."""

    encode: Callable[[TextEncoder, Sequence[str]], List[EncodedText]]
    transform: Callable[[tf.Tensor], tf.Tensor]
    targets: Callable[[EncodedText, np.ndarray, LabelMap, Optional[str]], Tuple[dict, List[Target]]]
    check_target: Callable[[LabelMap, str], None]
    per_token: bool = False   # values are [T, C] per text (NER), not [C]


TASK_SCORES: Dict[str, TaskScore] = {}


def register_task_score(task: str, score: TaskScore) -> None:
    """Declare how models of ``task`` are explained."""
    TASK_SCORES[task] = score


def task_score(task: str) -> TaskScore:
    if task not in TASK_SCORES:
        raise ConfigError(f"explain does not support {task!r} models (supported: {', '.join(sorted(TASK_SCORES))})")
    return TASK_SCORES[task]


# --------------------------------------------------------------------------- encoding
def _strings(texts: Sequence[str]) -> tf.Tensor:
    return tf.constant(list(texts), dtype=tf.string)


def _word_spans(text: str, byte_starts: Sequence[int], byte_ends: Sequence[int]) -> List[dict]:
    starts, ends = byte_to_char_offsets(text, byte_starts), byte_to_char_offsets(text, byte_ends)
    return [{"text": text[s:e], "start": s, "end": e} for s, e in zip(starts, ends)]


def _word_at(byte_offset: int, word_starts: Sequence[int]) -> int:
    """Index of the word a piece starting at ``byte_offset`` belongs to (the last word starting at or before it)."""
    return max(0, bisect.bisect_right(word_starts, byte_offset) - 1)


def _first_pieces(piece_word: np.ndarray, num_words: int) -> np.ndarray:
    first = np.full(num_words, -1, np.int64)
    for position in range(len(piece_word) - 1, -1, -1):
        if piece_word[position] >= 0:
            first[piece_word[position]] = position
    return first


def encode_text(encoder: TextEncoder, texts: Sequence[str]) -> List[EncodedText]:
    """Texts encoded as ``Predictor.classify`` encodes them; pieces map to words by their byte offsets."""
    features = encoder.encode(_strings(texts))
    _, piece_starts, _ = encoder.tokenize_with_offsets(_strings(texts))
    _, word_starts, word_ends = encoder.split_words(_strings(texts))
    out = []
    for text, ids, types, starts, w_starts, w_ends in zip(
            texts, features["input_ids"].to_list(), features["token_type_ids"].to_list(),
            piece_starts.to_list(), word_starts.to_list(), word_ends.to_list()):
        kept = len(ids) - 2
        piece_word = np.array([-1] + [_word_at(s, w_starts) for s in starts[:kept]] + [-1], np.int64)
        out.append(EncodedText(text, np.array(ids, np.int32), np.array(types, np.int32),
                               _word_spans(text, w_starts, w_ends), piece_word,
                               _first_pieces(piece_word, len(w_starts)), truncated=len(starts) > kept))
    return out


def _piece_words(word_ids: Sequence[int]) -> np.ndarray:
    """``encode_words``' word ids (first pieces only) -> the word of every position (continuations included)."""
    out, current = np.full(len(word_ids), -1, np.int64), -1
    for position, word in enumerate(word_ids[1:-1], start=1):
        current = word if word >= 0 else current
        out[position] = current
    return out


def encode_words(encoder: TextEncoder, texts: Sequence[str]) -> List[EncodedText]:
    """Texts split into words and encoded as ``Predictor.extract`` does for NER."""
    words, word_starts, word_ends = encoder.split_words(_strings(texts))
    features, word_ids = encoder.encode_words(words)
    piece_counts = encoder.tokenize(words).merge_dims(1, 2).row_lengths().numpy()
    out = []
    for text, ids, types, row_word_ids, w_starts, w_ends, count in zip(
            texts, features["input_ids"].to_list(), features["token_type_ids"].to_list(), word_ids.to_list(),
            word_starts.to_list(), word_ends.to_list(), piece_counts):
        piece_word = _piece_words(row_word_ids)
        out.append(EncodedText(text, np.array(ids, np.int32), np.array(types, np.int32),
                               _word_spans(text, w_starts, w_ends), piece_word,
                               _first_pieces(piece_word, len(w_starts)), truncated=int(count) > len(ids) - 2))
    return out


# --------------------------------------------------------------------------- targets per task
def one_hot_target(label: str, index: int, size: int) -> Target:
    """The value at ``index`` of a per-text output vector (a class probability, a regression output)."""
    weights = np.zeros(size, np.float32)
    weights[index] = 1.0
    return Target(label, weights)


def check_label(labels: LabelMap, target: str) -> None:
    if target not in labels:
        raise ConfigError(f"target {target!r} is not a label of this model (labels: {', '.join(labels.names)})")


def classification_targets(case: EncodedText, probabilities: np.ndarray, labels: LabelMap,
                           target: Optional[str]) -> Tuple[dict, List[Target]]:
    """The predicted class (or ``target``): its softmax probability."""
    predicted = int(np.argmax(probabilities))
    chosen = labels.id(target) if target is not None else predicted
    prediction = {"label": labels.name(predicted), "score": float(probabilities[predicted])}
    return prediction, [one_hot_target(labels.name(chosen), chosen, len(labels))]


def entity_types(labels: LabelMap) -> List[str]:
    return [name for name in bio_tables(labels.names)[2] if name]


def check_entity_type(labels: LabelMap, target: str) -> None:
    types = entity_types(labels)
    if target not in types:
        raise ConfigError(f"target {target!r} is not an entity type of this model (types: "
                          f"{', '.join(types) or 'none'}); give a type such as {types[0] if types else 'PER'}, "
                          "not a tag")


def _word_tags(case: EncodedText, probabilities: np.ndarray) -> List[int]:
    """Each word's predicted tag id, read at its first piece (words without a piece are label 0, as in serving)."""
    return [int(np.argmax(probabilities[p])) if p >= 0 else 0 for p in case.first_pieces]


def _entity_target(case: EncodedText, entity: dict, tags: List[int], probabilities: np.ndarray) -> Target:
    """The mean probability of the entity's word tags at their first pieces."""
    members = [i for i, w in enumerate(case.words)
               if w["start"] >= entity["start"] and w["end"] <= entity["end"] and case.first_pieces[i] >= 0]
    weights = np.zeros(probabilities.shape, np.float32)
    for word in members:
        weights[case.first_pieces[word], tags[word]] = 1.0 / len(members)
    return Target(entity["type"], weights, {"entity": {**entity, "words": members}})


def entity_targets(case: EncodedText, probabilities: np.ndarray, labels: LabelMap,
                   target: Optional[str]) -> Tuple[dict, List[Target]]:
    """One target per predicted entity (of type ``target`` only, if given)."""
    tags = _word_tags(case, probabilities)
    tokens = [{**word, "label": labels.name(tag)} for word, tag in zip(case.words, tags)]
    entities = merge_entities(case.text, tokens)
    chosen = [e for e in entities if target is None or e["type"] == target]
    return ({"entities": entities},
            [_entity_target(case, entity, tags, probabilities) for entity in chosen])


def _softmax(logits: tf.Tensor) -> tf.Tensor:
    return tf.nn.softmax(logits, axis=-1)


register_task_score(CLASSIFICATION, TaskScore(encode_text, _softmax, classification_targets, check_label))
register_task_score(NER, TaskScore(encode_words, _softmax, entity_targets, check_entity_type, per_token=True))


def regression_targets(case: EncodedText, outputs: np.ndarray, labels: LabelMap,
                       target: Optional[str]) -> Tuple[dict, List[Target]]:
    """Every target (or the one named ``target``): the model's standardised output for it (attributions are in
    standard deviations of the training targets)."""
    prediction = {"label": labels.names[0], "score": float(outputs[0])}
    chosen = [labels.id(target)] if target is not None else range(len(labels))
    return prediction, [one_hot_target(labels.name(i), i, len(labels)) for i in chosen]


register_task_score(REGRESSION, TaskScore(encode_text, tf.identity, regression_targets, check_label))


# --------------------------------------------------------------------------- the path integral
def quadrature(method: str, steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of ``steps`` points on [0, 1] whose weighted sum approximates the integral."""
    if steps < MIN_STEPS:
        raise ConfigError(f"steps must be >= {MIN_STEPS}, got {steps}")
    if method == GAUSS_LEGENDRE:
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return ((nodes + 1.0) / 2.0).astype(np.float32), (weights / 2.0).astype(np.float32)
    if method == TRAPEZOID:
        weights = np.full(steps, 1.0 / (steps - 1), np.float32)
        weights[[0, -1]] /= 2.0
        return np.linspace(0.0, 1.0, steps, dtype=np.float32), weights
    raise ConfigError(f"method must be one of {', '.join(IG_METHODS)}, not {method!r}")


def word_embedding_matrix(backbone) -> tf.Variable:
    """The backbone's [vocab, hidden] word-piece embedding matrix (``embeddings.weight`` in transformers TF BERT)."""
    try:
        matrix = getattr(backbone.get_input_embeddings(), "weight", None)
    except (AttributeError, NotImplementedError):
        matrix = None
    if matrix is None:
        raise ConfigError(f"{type(backbone).__name__}: no word-embedding matrix found, so its inputs cannot be "
                          "attributed")
    return matrix


def check_explainable(bundle: ModelBundle) -> TaskScore:
    """The bundle's task score; models other than fine-tuned text task models are a ``ConfigError``."""
    if bundle.kind != TASK_KIND:
        what = f" ({KIND_NAMES[bundle.kind]})" if bundle.kind in KIND_NAMES else ""
        where = f"{bundle.directory}: " if bundle.directory else ""
        raise ConfigError(f"{where}explain needs a fine-tuned classification or ner model; this is a model of "
                          f"kind {bundle.kind!r}{what}")
    return task_score(bundle.task)


@dataclass
class _Batch:
    """Texts padded to one length, as arrays for the model: ids, which positions stay fixed, mask, types."""

    ids: np.ndarray
    fixed: np.ndarray
    mask: np.ndarray
    types: np.ndarray


class Explainer:
    """Integrated Gradients for one model bundle; keeps its traced functions across ``explain`` calls."""

    def __init__(self, bundle: ModelBundle, *, steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
                 method: str = GAUSS_LEGENDRE, baseline: str = PAD_BASELINE):
        self.score = check_explainable(bundle)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if baseline not in BASELINES:
            raise ConfigError(f"baseline must be one of {', '.join(BASELINES)}, not {baseline!r}")
        self.bundle, self.encoder, self.labels = bundle, bundle.encoder, bundle.labels
        self.steps, self.batch_size, self.method, self.baseline = steps, batch_size, method, baseline
        self.alphas, self.coefficients = quadrature(method, steps)
        self._backbone = bundle.model.backbone
        self._matrix = word_embedding_matrix(self._backbone)
        ints = tf.TensorSpec([None, None], tf.int32)
        batch = [ints, tf.TensorSpec([None, None], tf.bool), ints, ints]
        weights = tf.TensorSpec([None] * (3 if self.score.per_token else 2), tf.float32)
        rows = [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32)]
        self._endpoints = tf.function(self._endpoint_values, input_signature=batch)
        self._path = tf.function(self._path_contributions, input_signature=batch + [weights] + rows)

    # ------------------------------------------------------------------ graph functions
    def _values(self, embeds, mask, types):
        features = {"inputs_embeds": embeds, "attention_mask": mask, "token_type_ids": types}
        logits = self._backbone(features, training=False).logits   # a dict: Keras needs a first argument
        return self.score.transform(tf.cast(logits, tf.float32))

    def _ends(self, ids, fixed):
        """Input embeddings and their baselines: [PAD] (or zero) rows except at the fixed positions."""
        inputs = tf.gather(self._matrix, ids)
        pad_row = tf.gather(self._matrix, self.encoder.pad_id)
        baseline_row = pad_row if self.baseline == PAD_BASELINE else tf.zeros_like(pad_row)
        return inputs, tf.where(fixed[..., None], inputs, baseline_row)

    def _endpoint_values(self, ids, fixed, mask, types):
        """The task's values at the inputs and at their baselines."""
        inputs, baselines = self._ends(ids, fixed)
        both = self._values(tf.concat([inputs, baselines], 0), tf.concat([mask, mask], 0),
                            tf.concat([types, types], 0))
        return tf.split(both, 2)

    def _path_contributions(self, ids, fixed, mask, types, weights, job, alpha, coefficient):
        """[rows, T]: each path point's quadrature-weighted gradient . (input - baseline), per position."""
        inputs, baselines = self._ends(ids, fixed)
        delta = tf.gather(inputs - baselines, job)
        path = tf.gather(baselines, job) + alpha[:, None, None] * delta
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(path)
            values = self._values(path, tf.gather(mask, job), tf.gather(types, job))
            weighted = values * tf.gather(weights, job)
            scores = tf.reduce_sum(tf.reshape(weighted, [tf.shape(weighted)[0], -1]), axis=1)
        gradients = tape.gradient(scores, path)
        return coefficient[:, None] * tf.reduce_sum(gradients * delta, axis=-1)

    # ------------------------------------------------------------------ batching
    def _pad(self, cases: Sequence[EncodedText]) -> _Batch:
        length = max(len(c) for c in cases)
        ids = np.full((len(cases), length), self.encoder.pad_id, np.int32)
        fixed = np.ones((len(cases), length), bool)
        mask = np.zeros((len(cases), length), np.int32)
        types = np.zeros((len(cases), length), np.int32)
        for row, case in enumerate(cases):
            n = len(case)
            ids[row, :n], mask[row, :n], types[row, :n] = case.ids, 1, case.token_types
            fixed[row, :n] = case.piece_word < 0
        return _Batch(ids, fixed, mask, types)

    def _unpadded(self, values: np.ndarray, case: EncodedText) -> np.ndarray:
        return values[:len(case)] if self.score.per_token else values

    def endpoint_values(self, cases: Sequence[EncodedText]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """Per text: the task's values (e.g. probabilities) at the input and at the baseline."""
        at_input: List[Optional[np.ndarray]] = [None] * len(cases)
        at_baseline: List[Optional[np.ndarray]] = [None] * len(cases)
        order = sorted(range(len(cases)), key=lambda i: len(cases[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            batch = self._pad([cases[i] for i in chunk])
            values, baseline_values = (v.numpy() for v in self._endpoints(batch.ids, batch.fixed, batch.mask,
                                                                          batch.types))
            for row, i in enumerate(chunk):
                at_input[i] = self._unpadded(values[row], cases[i])
                at_baseline[i] = self._unpadded(baseline_values[row], cases[i])
        return at_input, at_baseline

    def _padded_weights(self, targets: Sequence[Target], length: int) -> np.ndarray:
        if not self.score.per_token:
            return np.stack([t.weights for t in targets]).astype(np.float32)
        out = np.zeros((len(targets), length, targets[0].weights.shape[-1]), np.float32)
        for row, target in enumerate(targets):
            out[row, :len(target.weights)] = target.weights
        return out

    def integrate(self, jobs: Sequence[Tuple[EncodedText, Target]]) -> List[np.ndarray]:
        """Per (text, target) job: the attribution of every position ([T]; 0 at [CLS]/[SEP])."""
        totals = [np.zeros(len(case), np.float64) for case, _ in jobs]
        order = sorted(range(len(jobs)), key=lambda j: len(jobs[j][0]))
        rows = [(j, step) for j in order for step in range(self.steps)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            members = list(dict.fromkeys(j for j, _ in chunk))
            local = {j: k for k, j in enumerate(members)}
            batch = self._pad([jobs[j][0] for j in members])
            weights = self._padded_weights([jobs[j][1] for j in members], batch.ids.shape[1])
            contributions = self._path(
                batch.ids, batch.fixed, batch.mask, batch.types, weights,
                np.array([local[j] for j, _ in chunk], np.int32),
                self.alphas[[step for _, step in chunk]], self.coefficients[[step for _, step in chunk]]).numpy()
            for (j, _), row in zip(chunk, contributions):
                totals[j] += row[:len(totals[j])]
        return totals

    # ------------------------------------------------------------------ results
    def explain(self, texts: Sequence[str], target: Optional[str] = None) -> List[dict]:
        """One JSON-ready result per text; see ``explain``."""
        if isinstance(texts, str):
            raise DataError("explain takes a list of texts, not one string")
        texts = list(texts)
        if target is not None:
            self.score.check_target(self.labels, target)
        if not texts:
            return []
        cases = self.score.encode(self.encoder, texts)
        at_input, at_baseline = self.endpoint_values(cases)
        predictions, jobs, owners = [], [], []
        for i, case in enumerate(cases):
            prediction, targets = self.score.targets(case, at_input[i], self.labels, target)
            predictions.append(prediction)
            jobs += [(case, t) for t in targets]
            owners += [i] * len(targets)
        attributions = self.integrate(jobs) if jobs else []
        results = [self._result(case, prediction) for case, prediction in zip(cases, predictions)]
        for i, (case, job_target), positions in zip(owners, jobs, attributions):
            results[i]["explanations"].append(
                self._explanation(case, job_target, positions, at_input[i], at_baseline[i]))
        return results

    def _result(self, case: EncodedText, prediction: dict) -> dict:
        pieces = [{"piece": self.encoder.vocab[int(i)], "word": int(w)}
                  for i, w in zip(case.ids, case.piece_word) if w >= 0]
        return {"text": case.text, "task": self.bundle.task, "prediction": prediction, "words": case.words,
                "tokens": pieces, "truncated": case.truncated, "explanations": [],
                "integrated_gradients": {"steps": self.steps, "method": self.method, "baseline": self.baseline}}

    def _explanation(self, case: EncodedText, target: Target, positions: np.ndarray, at_input: np.ndarray,
                     at_baseline: np.ndarray) -> dict:
        score = float(np.sum(target.weights * at_input))
        baseline_score = float(np.sum(target.weights * at_baseline))
        pieces = case.piece_word >= 0
        words = np.zeros(len(case.words), np.float64)
        np.add.at(words, case.piece_word[pieces], positions[pieces])
        total = float(positions.sum())
        return {"target": target.label, **target.details, "score": score, "baseline_score": baseline_score,
                "attribution_sum": total, "completeness_gap": total - (score - baseline_score),
                "word_attributions": [float(a) for a in words],
                "token_attributions": [float(a) for a in positions[pieces]]}


def explain(bundle: ModelBundle, texts: Sequence[str], *, target: Optional[str] = None,
            steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE, method: str = GAUSS_LEGENDRE,
            baseline: str = PAD_BASELINE) -> List[dict]:
    """Integrated Gradients attributions of ``bundle``'s prediction (or ``target``) for each text.

    ``target``: a label name (classification) or an entity type (NER: explain only
    entities of that type); default: the predicted class / every predicted entity.
    ``steps`` path points ("gauss_legendre" or "trapezoid" ``method``) from a
    ``baseline`` of [PAD] ("pad") or zero ("zero") embeddings; ``batch_size``
    path points per model call.

    Returns one JSON-ready dict per text: ``text``, ``task``, ``prediction``
    (``label``/``score``, or ``entities``), ``words`` (text, character ``start``/``end``),
    ``tokens`` (word pieces without [CLS]/[SEP], each with its ``word`` index),
    ``truncated``, ``integrated_gradients`` (the settings) and ``explanations``:
    one per target with ``target``, ``entity`` (NER), ``score`` (at the input),
    ``baseline_score``, ``attribution_sum``, ``completeness_gap`` (sum minus
    score difference), ``word_attributions`` (aligned with ``words``) and
    ``token_attributions`` (aligned with ``tokens``). Positive attributions
    raise the explained score.
    """
    explainer = Explainer(bundle, steps=steps, batch_size=batch_size, method=method, baseline=baseline)
    return explainer.explain(texts, target=target)


# --------------------------------------------------------------------------- printing
def top_words(result: dict, explanation: dict, k: int) -> List[Tuple[dict, float]]:
    """The ``k`` words with the largest |attribution| (word dict, attribution), largest first."""
    pairs = list(zip(result["words"], explanation["word_attributions"]))
    return sorted(pairs, key=lambda pair: -abs(pair[1]))[:k]


def describe_prediction(result: dict) -> str:
    prediction = result["prediction"]
    if "label" in prediction:
        return f"{prediction['label']} ({prediction['score']:.3f})"
    return ", ".join(f"{e['text']} [{e['type']}]" for e in prediction.get("entities", [])) or "no entity"


def describe_target(explanation: dict) -> str:
    entity = explanation.get("entity")
    return f"entity {entity['text']!r} [{entity['type']}]" if entity else explanation["target"]


def format_explanations(results: Sequence[dict], top_k: int = 10) -> str:
    """A plain-text table per text: the prediction, then per explanation its scores and top-``top_k`` words."""
    blocks = []
    for result in results:
        lines = [f"text: {result['text']}", f"prediction: {describe_prediction(result)}"]
        if result["truncated"]:
            lines.append("(text truncated to the model's max length: later words get no attribution)")
        if not result["explanations"]:
            lines.append("nothing to explain (no entity predicted)")
        for explanation in result["explanations"]:
            lines.append(f"explaining {describe_target(explanation)}: score {explanation['score']:.4f}, "
                         f"baseline {explanation['baseline_score']:.4f}, attributions sum "
                         f"{explanation['attribution_sum']:+.4f} (completeness gap "
                         f"{explanation['completeness_gap']:+.2e})")
            lines.append(f"  {'attribution':>11}  word")
            lines += [f"  {value:>+11.4f}  {word['text']}" for word, value in top_words(result, explanation, top_k)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
