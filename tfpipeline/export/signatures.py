"""The serving graph: a tf.Module holding only the model weights and the ``TextEncoder``.

The module deliberately does not track the Keras model (that would drag the
optimizer and Keras' own per-layer SavedModel traces along). It keeps the
model's variables in a list and calls the model from its tf.functions, so
the export holds weights + tokenizer + label names and nothing else. The
"model" is anything called as ``model(features, training=False)`` with
``variables``: the Keras model, or its ``CompactBertModel`` (``export
--optimize compact``, ``compact_encoder.py``), whose fused variables are then
the only weights saved.

Raw-text signatures run the *same* ``TextEncoder`` methods that the tf.data
training pipeline uses (``encode``, ``split_words``, ``encode_words``) and the
same decoding (``tfpipeline.decoding``) as ``Predictor``; ``predict_ids`` takes token ids
and needs only core TF ops (for servers without tensorflow-text).

Signature table (B = batch, T = tokens, W = words, E = entities, C = labels):

classification
    serving_default, predict   text[B] string -> label[B] string, label_id[B] int32, scores[B,C] float32
    predict_pair               text[B], text_pair[B] string -> same as predict
    classify (Classify API)    inputs[B] serialized tf.Example{text} -> classes[B,C] string, scores[B,C]
    predict_ids                input_ids[B,T], attention_mask[B,T] int32 -> label_id[B], scores[B,C]
ner
    serving_default, predict   text[B] string -> tokens/labels[B,W] string, scores[B,W] float32,
                               start/end[B,W] int32 (character offsets), num_tokens[B] int32,
                               entity_type/entity_text[B,E] string, entity_start/entity_end[B,E] int32,
                               num_entities[B] int32
    predict_ids                input_ids[B,T], attention_mask[B,T] int32 -> label_id[B,T] int32,
                               scores[B,T,C] float32 (per piece; first pieces carry the word label)

image_classification (the ``ImageEncoder`` -- decode, resize, normalise -- is in the graph)
    serving_default, predict   image_bytes[B] string (encoded JPEG/PNG/GIF/BMP; REST: {"b64": ...})
                               -> label[B] string, label_id[B] int32, scores[B,C] float32
    classify (Classify API)    inputs[B] serialized tf.Example{image: bytes} -> classes[B,C] string, scores[B,C]
    predict_pixels             pixels[B,H,W,3] float32, 0..255, any H and W (already decoded; core ops only)
                               -> label_id[B] int32, scores[B,C] float32

regression (T = targets, in their own units)
    serving_default, predict   text[B] string -> predictions[B,T] float32
    predict_pair               text[B], text_pair[B] string -> predictions[B,T]
    predict_ids                input_ids[B,T'], attention_mask[B,T'] int32 -> predictions[B,T]
    regress (Regress API)      inputs[B] serialized tf.Example{text} -> outputs[B] float32 (one target;
                               ``regress_<target>`` per target when there are several)

embedding (H = hidden size, K = the index's top_k)
    serving_default, embed     text[B] string -> embedding[B,H] float32 (L2-normalised: dot = cosine)
    predict_ids                input_ids[B,T], attention_mask[B,T] int32 -> embedding[B,H]
    search (with an index)     text[B] string -> ids[B,K] string, texts[B,K] string, scores[B,K] float32
                               (exact top-K cosine against the documents embedded at export time)

Padding in [B,W] / [B,E] outputs: "" for strings, 0 for scores, -1 for offsets.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import numpy as np

import tensorflow as tf

from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER, REGRESSION
from tfpipeline.data.images import PIXELS, ImageEncoder
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.pipeline import TargetScaling
from tfpipeline.data.tokenization import TextEncoder
from tfpipeline.decoding import bio_tables, char_offsets, merge_bio, word_scores
from tfpipeline.errors import ExportError

TEXT = tf.TensorSpec([None], tf.string, name="text")
TEXT_PAIR = tf.TensorSpec([None], tf.string, name="text_pair")
EXAMPLES = tf.TensorSpec([None], tf.string, name="inputs")
IDS = tf.TensorSpec([None, None], tf.int32, name="input_ids")
MASK = tf.TensorSpec([None, None], tf.int32, name="attention_mask")
IMAGE_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")
PIXEL_INPUT = tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")
EXAMPLE_TEXT_FEATURE = "text"
EXAMPLE_IMAGE_FEATURE = "image"
PAD_OFFSET = -1

SERVING_MODULES: Dict[str, type] = {}


def register_serving_module(task: str):
    """Class decorator: the ``ServingModule`` subclass that exports models of ``task``."""
    def register(cls):
        SERVING_MODULES[task] = cls
        return cls
    return register


class ServingModule(tf.Module):
    """Weights + encoder + label names; subclasses add the task's signature functions."""

    def __init__(self, model, encoder: Union[TextEncoder, ImageEncoder], labels: LabelMap, asset_dir: str = ""):
        super().__init__(name="tfpipeline_serving")
        self.encoder = encoder
        self.model_variables = list(model.variables)   # tracked: the only state that is saved
        # The model and the one-text tokenization are each one tf.function that every signature calls, so
        # an export traces them once instead of once per signature (a tiny model's export: 7.9 s -> 3.6 s,
        # same serving latency). The lambdas keep them untracked: the export saves only the signatures.
        logits = tf.function(lambda features: model(features, training=False), reduce_retracing=True)
        self._logits: Callable = lambda features: logits(features)
        if isinstance(encoder, TextEncoder):
            text_features = tf.function(lambda text: encoder.pad(encoder.encode(text)), reduce_retracing=True)
            self._text_features: Callable = lambda text: text_features(text)
        self.label_names = tf.constant(labels.names)
        self.num_labels = len(labels)
        if asset_dir:  # the encoder's and label files, copied into <export>/assets/: the export describes itself
            self.asset_files = [tf.saved_model.Asset(os.path.join(asset_dir, name))
                                for name in sorted(os.listdir(asset_dir))]

    def text_features(self, text: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Raw texts [B] -> the model's padded inputs, by the training pipeline's ``TextEncoder``."""
        return self._text_features(text)

    def logits_from_ids(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        return self._logits({"input_ids": input_ids, "attention_mask": attention_mask,
                             "token_type_ids": tf.zeros_like(input_ids)})

    def decode_classes(self, logits):
        """Class logits -> the classification outputs: label, label_id, scores (softmax)."""
        scores = tf.nn.softmax(logits, axis=-1)
        label_id = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return {"label": tf.gather(self.label_names, label_id), "label_id": label_id, "scores": scores}

    def signatures(self) -> Dict[str, tf.types.experimental.PolymorphicFunction]:
        """{signature key: tf.function with an input signature}.

        Functions, not concrete functions: ``tf.saved_model.save`` traces them
        inside its save context, and its tracing cache keys on that context,
        so a function traced before ``save`` is traced a second time while
        saving (about a third of an export's time, measured on a tiny model).
        """
        raise NotImplementedError

    def method_names(self) -> Dict[str, str]:
        """Signatures whose TF Serving method is not Predict (``tf.saved_model.save`` writes Predict for all)."""
        return {}


@register_serving_module(CLASSIFICATION)
class ClassifierServing(ServingModule):
    """Sentence (pair) classification signatures."""

    @tf.function(input_signature=[TEXT])
    def predict_text(self, text):
        return self.decode_classes(self._logits(self.text_features(text)))

    @tf.function(input_signature=[TEXT, TEXT_PAIR])
    def predict_pair(self, text, text_pair):
        return self.decode_classes(self._logits(self.encoder.pad(self.encoder.encode(text, text_pair))))

    @tf.function(input_signature=[EXAMPLES])
    def classify_examples(self, inputs):
        parsed = tf.io.parse_example(inputs, {EXAMPLE_TEXT_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        features = self.text_features(parsed[EXAMPLE_TEXT_FEATURE])
        scores = self.decode_classes(self._logits(features))
        classes = tf.tile(self.label_names[tf.newaxis], [tf.shape(inputs)[0], 1])
        return {"classes": classes, "scores": scores["scores"]}

    @tf.function(input_signature=[IDS, MASK])
    def predict_ids(self, input_ids, attention_mask):
        out = self.decode_classes(self.logits_from_ids(input_ids, attention_mask))
        return {"label_id": out["label_id"], "scores": out["scores"]}

    def signatures(self):
        text = self.predict_text
        return {"serving_default": text, "predict": text,
                "predict_pair": self.predict_pair,
                "classify": self.classify_examples,
                "predict_ids": self.predict_ids}

    def method_names(self):
        return {"classify": tf.saved_model.CLASSIFY_METHOD_NAME}   # TF Serving's Classify API routes here


@register_serving_module(REGRESSION)
class RegressorServing(ServingModule):
    """Numeric targets: raw text in, predictions in the targets' units out; one Regress API signature per target.

    The model predicts standardised targets; the training targets' mean/std
    (``TargetScaling``) are constants of the graph that undo it.
    """

    def __init__(self, model, encoder: TextEncoder, labels: LabelMap, asset_dir: str = "",
                 target_scaling: Optional[TargetScaling] = None):
        super().__init__(model, encoder, labels, asset_dir)
        if target_scaling is None:
            raise ExportError("a regression export needs the model's target scaling (ModelBundle.target_scaling)")
        self.target_mean = tf.constant(target_scaling.mean, tf.float32)
        self.target_std = tf.constant(target_scaling.std, tf.float32)
        self.target_names = list(labels.names)
        self.regress_functions = {regress_signature_name(name, self.target_names): self._regress_function(i)
                                  for i, name in enumerate(self.target_names)}

    def _predictions(self, logits):
        return logits * self.target_std + self.target_mean

    @tf.function(input_signature=[TEXT])
    def predict_text(self, text):
        return {"predictions": self._predictions(self._logits(self.text_features(text)))}

    @tf.function(input_signature=[TEXT, TEXT_PAIR])
    def predict_pair(self, text, text_pair):
        features = self.encoder.pad(self.encoder.encode(text, text_pair))
        return {"predictions": self._predictions(self._logits(features))}

    @tf.function(input_signature=[IDS, MASK])
    def predict_ids(self, input_ids, attention_mask):
        return {"predictions": self._predictions(self.logits_from_ids(input_ids, attention_mask))}

    def _regress_function(self, column: int):
        @tf.function(input_signature=[EXAMPLES])
        def regress(inputs):
            parsed = tf.io.parse_example(inputs, {EXAMPLE_TEXT_FEATURE: tf.io.FixedLenFeature([], tf.string)})
            features = self.text_features(parsed[EXAMPLE_TEXT_FEATURE])
            return {"outputs": self._predictions(self._logits(features))[:, column]}
        return regress

    def signatures(self):
        text = self.predict_text
        out = {"serving_default": text, "predict": text, "predict_pair": self.predict_pair,
               "predict_ids": self.predict_ids}
        out.update(self.regress_functions)
        return out

    def method_names(self):
        return {name: tf.saved_model.REGRESS_METHOD_NAME for name in self.regress_functions}


def regress_signature_name(target: str, targets: List[str]) -> str:
    """``regress`` for a single-target model, ``regress_<target>`` per target otherwise (TF Serving's Regress API
    returns one value per example)."""
    return "regress" if len(targets) == 1 else f"regress_{target}"


@register_serving_module(NER)
class TaggerServing(ServingModule):
    """Token classification (NER) signatures: words, tags, offsets and merged entity spans."""

    def __init__(self, model, encoder: TextEncoder, labels: LabelMap, asset_dir: str = ""):
        super().__init__(model, encoder, labels, asset_dir)
        prefixes, kinds, type_names = bio_tables(labels.names)
        self.bio_prefix = tf.constant(prefixes, tf.int32)
        self.bio_kind = tf.constant(kinds, tf.int32)
        self.entity_types = tf.constant(type_names)

    @tf.function(input_signature=[TEXT])
    def predict_text(self, text):
        words, byte_start, byte_end = self.encoder.split_words(text)
        features, word_ids = self.encoder.encode_words(words)
        logits = self._logits(self.encoder.pad(features))
        num_words = words.row_lengths()
        probs = word_scores(logits, word_ids.to_tensor(default_value=-1), num_words)   # [B, W, C]
        label_id = tf.RaggedTensor.from_tensor(tf.argmax(probs, -1, output_type=tf.int32), lengths=num_words)
        score = tf.RaggedTensor.from_tensor(tf.reduce_max(probs, -1), lengths=num_words)
        rows = words.value_rowids()

        entities = merge_bio(label_id, byte_start, byte_end, self.bio_prefix, self.bio_kind)
        ent_rows = entities["start"].value_rowids()
        ent_start, ent_end = entities["start"].flat_values, entities["end"].flat_values
        ent_text = tf.strings.substr(tf.gather(text, ent_rows), ent_start, ent_end - ent_start)

        def chars(offsets, row_ids):
            return offsets.with_flat_values(char_offsets(text, row_ids, offsets.flat_values))

        return {
            "tokens": words.to_tensor(default_value=""),
            "labels": tf.ragged.map_flat_values(tf.gather, self.label_names, label_id).to_tensor(""),
            "scores": score.to_tensor(0.0),
            "start": chars(byte_start, rows).to_tensor(PAD_OFFSET),
            "end": chars(byte_end, rows).to_tensor(PAD_OFFSET),
            "num_tokens": tf.cast(num_words, tf.int32),
            "entity_type": tf.ragged.map_flat_values(tf.gather, self.entity_types,
                                                     entities["kind"]).to_tensor(""),
            "entity_text": entities["start"].with_flat_values(ent_text).to_tensor(""),
            "entity_start": chars(entities["start"], ent_rows).to_tensor(PAD_OFFSET),
            "entity_end": chars(entities["end"], ent_rows).to_tensor(PAD_OFFSET),
            "num_entities": tf.cast(entities["start"].row_lengths(), tf.int32),
        }

    @tf.function(input_signature=[IDS, MASK])
    def predict_ids(self, input_ids, attention_mask):
        scores = tf.nn.softmax(self.logits_from_ids(input_ids, attention_mask), axis=-1)
        return {"label_id": tf.argmax(scores, -1, output_type=tf.int32), "scores": scores}

    def signatures(self):
        text = self.predict_text
        return {"serving_default": text, "predict": text,
                "predict_ids": self.predict_ids}


@register_serving_module(IMAGE_CLASSIFICATION)
class ImageClassifierServing(ServingModule):
    """Image classification signatures: encoded bytes (or decoded pixels) in, label and scores out."""

    @tf.function(input_signature=[IMAGE_BYTES])
    def predict_images(self, image_bytes):
        return self.decode_classes(self._logits({PIXELS: self.encoder.encode_batch(image_bytes)}))

    @tf.function(input_signature=[EXAMPLES])
    def classify_examples(self, inputs):
        parsed = tf.io.parse_example(inputs, {EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        pixels = self.encoder.encode_batch(parsed[EXAMPLE_IMAGE_FEATURE])
        scores = self.decode_classes(self._logits({PIXELS: pixels}))
        classes = tf.tile(self.label_names[tf.newaxis], [tf.shape(inputs)[0], 1])
        return {"classes": classes, "scores": scores["scores"]}

    @tf.function(input_signature=[PIXEL_INPUT])
    def predict_pixels(self, pixels):
        out = self.decode_classes(self._logits({PIXELS: self.encoder.encode_pixels(pixels)}))
        return {"label_id": out["label_id"], "scores": out["scores"]}

    def signatures(self):
        images = self.predict_images
        return {"serving_default": images, "predict": images,
                "classify": self.classify_examples,
                "predict_pixels": self.predict_pixels}

    def method_names(self):
        return {"classify": tf.saved_model.CLASSIFY_METHOD_NAME}


@dataclass(frozen=True)
class DocumentIndex:
    """Documents embedded once, stored in an ``embedding`` export for its ``search`` signature."""

    ids: List[str]
    texts: List[str]
    vectors: np.ndarray      # [N, H] unit vectors, row i = document i
    top_k: int = 10

    def __post_init__(self):
        if not self.ids or len(self.ids) != len(self.texts) or len(self.ids) != len(self.vectors):
            raise ExportError(f"a document index needs as many ids, texts and vectors (got {len(self.ids)}, "
                              f"{len(self.texts)}, {len(self.vectors)}), at least one")
        if len(set(self.ids)) != len(self.ids):
            raise ExportError("document ids must be unique")
        if self.top_k < 1:
            raise ExportError(f"top_k must be >= 1, got {self.top_k}")


@register_serving_module(EMBEDDING)
class EmbeddingServing(ServingModule):
    """Text -> vector signatures, plus exact top-k ``search`` over an index stored in the export."""

    def __init__(self, model, encoder: TextEncoder, labels: LabelMap, asset_dir: str = "",
                 index: Optional[DocumentIndex] = None):
        super().__init__(model, encoder, labels, asset_dir)
        self.has_index = index is not None
        if index is not None:   # variables, not constants: a large index stays out of the GraphDef
            self.document_ids = tf.Variable(index.ids, trainable=False, name="document_ids")
            self.document_texts = tf.Variable(index.texts, trainable=False, name="document_texts")
            self.document_vectors = tf.Variable(np.asarray(index.vectors, np.float32), trainable=False,
                                                name="document_vectors")
            self.top_k = min(index.top_k, len(index.ids))
            # a tf.function attribute only with an index: saving traces every tf.function the module has
            self.search = tf.function(self._search, input_signature=[TEXT])

    @tf.function(input_signature=[TEXT])
    def embed_text(self, text):
        return {"embedding": self._logits(self.text_features(text))}

    @tf.function(input_signature=[IDS, MASK])
    def embed_ids(self, input_ids, attention_mask):
        return {"embedding": self.logits_from_ids(input_ids, attention_mask)}

    def _search(self, text):
        queries = self._logits(self.text_features(text))
        scores, index = tf.math.top_k(tf.matmul(queries, self.document_vectors, transpose_b=True), k=self.top_k)
        return {"ids": tf.gather(self.document_ids, index), "texts": tf.gather(self.document_texts, index),
                "scores": scores}

    def signatures(self):
        text = self.embed_text
        out = {"serving_default": text, "embed": text, "predict_ids": self.embed_ids}
        if self.has_index:
            out["search"] = self.search
        return out


def serving_module(model, encoder: Union[TextEncoder, ImageEncoder], labels: LabelMap, task: str,
                   asset_dir: str = "", **options) -> ServingModule:
    """The registered serving module for ``task``; ``options`` (None values ignored) go to modules that take
    them: ``index`` (embedding: the documents ``search`` ranks), ``target_scaling`` (regression)."""
    if task not in SERVING_MODULES:
        raise ExportError(f"no serving module for task {task!r} (registered: {', '.join(sorted(SERVING_MODULES))})")
    options = {name: value for name, value in options.items() if value is not None}
    wanted = set(inspect.signature(SERVING_MODULES[task]).parameters) - {"model", "encoder", "labels", "asset_dir"}
    if set(options) - wanted:
        raise ExportError(f"a {task} export takes no {', '.join(sorted(set(options) - wanted))}")
    return SERVING_MODULES[task](model, encoder, labels, asset_dir, **options)
