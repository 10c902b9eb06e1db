"""A compact inference graph for BERT text models: the same weights and logits, a fraction of the ops.

Why: the transformers TF BERT call, traced for one batch-1 request, is ~880
graph nodes (MiniLM-L6), and at batch 1 the executor's per-op cost, not the
~0.3 GFLOP of arithmetic, decides serving latency (issue 13). ``export
--optimize compact`` re-expresses the *inference* forward pass of the encoder
and of each text task's head in plain TF ops, shaped for TF's CPU graph
rewrites (Grappler's remapper / oneDNN fusions):

* query, key and value are one ``[H, 3H]`` MatMul + BiasAdd (1/sqrt(head size)
  folded into the query weights), split with one reshape + transpose;
* attention is two batched matmuls and one softmax per layer; the padding-mask
  bias is computed once for all layers;
* activations stay 2-D (``[B*T, H]``) between layers, so every dense layer is
  a single MatMul + BiasAdd (no tensordot reshapes);
* layer norm as plain reductions and arithmetic (cheaper at batch 1 than the
  one ``_MklLayerNorm`` op Grappler makes of Keras' fused form; see
  ``LayerNorm``), and GELU as ``tf.nn.gelu`` (exact erf or tanh
  approximation: the checkpoint's ``hidden_act``), which Grappler's remapper
  fuses into the preceding MatMul + BiasAdd (``_MklNativeFusedMatMul``);
* no dropout, no unused outputs (hidden states, attentions, the pooler of a
  token classifier).

The weights are new ``tf.Variable``s built at export time from the trained
Keras model's values (LoRA updates folded into their kernels); the serving
module keeps only these, so an export holds each weight once.

``compact+xla`` additionally compiles the ids -> logits function with XLA
(``jit_compile``; the tokenizer stays outside: tf-text ops cannot be
compiled). XLA compiles once per input shape, so that function is called on
shapes rounded up to buckets: the sequence length to a multiple of
``XLA_LENGTH_BUCKET`` and the batch to a power of two (padding rows and
positions are masked, and cut from the outputs). TF Serving runs such a
function only when started with ``--xla_cpu_compilation_enabled``.

``compact+bf16`` stores the encoder layers' dense weights in bfloat16 and
runs those matmuls (with their bias and GELU) in bfloat16; embeddings, layer
norms, attention scores, softmax, residual sums and the head stay float32.
Why: most of a call's time is the dense matmuls; bfloat16 halves the weight
bytes they read (and the export's size) and, with native bfloat16
instructions, doubles the arithmetic per instruction (``bench/matmul_kernels.py``:
the same 24 matmuls 1.5-1.9x faster). It pays only where oneDNN has native
bfloat16 kernels (AVX512_BF16 or AMX); elsewhere the same graph runs emulated
and slower, so it is opt-in. Predictions can differ from float32 near a decision boundary:
``bench/export_agreement.py`` measures how often on a trained model.

Supported (the model kinds that serve text through a BERT encoder):
``TaskModel`` on ``TFBertForSequenceClassification`` (classification,
regression: pooler + classifier) or ``TFBertForTokenClassification`` (NER:
per-token classifier), ``EmbeddingModel`` (mean pooling + L2 norm) and the
zero/few-shot ``LabelVectorClassifier`` (mean pooling, cosine to the label
vectors / temperature). Anything else -- adapter PEFT models (their extra
layers are not in this graph), non-BERT architectures, image and cloze
models, unknown activations -- raises ``ExportError`` naming why: the user
asked for ``compact`` explicitly, so there is no silent fallback to the
Keras graph (export with ``--optimize none``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
from transformers import TFBertForSequenceClassification, TFBertForTokenClassification, TFBertModel

from tfpipeline.config.commands import (EXPORT_OPTIMIZATIONS, OPTIMIZE_AUTO, OPTIMIZE_COMPACT, OPTIMIZE_COMPACT_BF16,
                                        OPTIMIZE_COMPACT_XLA, OPTIMIZE_NONE)
from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, NER, REGRESSION
from tfpipeline.errors import ExportError
from tfpipeline.models.embedding_model import EmbeddingModel
from tfpipeline.models.peft import LoraDense, applied_method
from tfpipeline.models.task_model import TaskModel
from tfpipeline.models.zeroshot import LabelVectorClassifier

MASK_BIAS = -10000.0          # transformers TF BERT's additive bias for a masked key (kept for identical logits)
XLA_LENGTH_BUCKET = 16        # compact+xla: sequence lengths are padded up to a multiple of this
IDS_SPEC = tf.TensorSpec([None, None], tf.int32)

# hidden_act -> the function transformers uses for it (activations_tf.ACT2FN)
ACTIVATIONS: Dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
    "relu": tf.nn.relu,
}

SEQUENCE_HEAD = "pooled_classifier"      # [CLS] -> pooler (dense + tanh) -> classifier
TOKEN_HEAD = "token_classifier"          # every token -> classifier
MEAN_POOL_HEAD = "mean_pool"             # masked mean of the tokens, L2-normalised
LABEL_VECTOR_HEAD = "label_vectors"      # mean_pool, then cosine to each label vector / temperature


def check_optimization(optimize: str) -> str:
    """``optimize`` if it is a known export optimisation, else ``ExportError`` listing them."""
    if optimize not in EXPORT_OPTIMIZATIONS:
        raise ExportError(f"unknown export optimisation {optimize!r} (known: {', '.join(EXPORT_OPTIMIZATIONS)})")
    return optimize


def inference_model(model, task: str, optimize: str = OPTIMIZE_NONE):
    """What a serving module calls as ``model(features, training=False)``: the Keras model itself for ``none``,
    its ``CompactBertModel`` for ``compact`` / ``compact+xla`` / ``compact+bf16`` / ``compact+tflite`` (the
    SavedModel of the last is plain ``compact``; ``ExportError`` if the model has none) and, for ``auto``,
    the compact one where the model has one (``applied_optimization`` says which)."""
    if check_optimization(optimize) == OPTIMIZE_NONE:
        return model
    if optimize == OPTIMIZE_AUTO:
        try:
            return CompactBertModel.from_keras(model, task)
        except ExportError:   # images, other architectures, unmerged adapters: the Keras graph
            return model
    return CompactBertModel.from_keras(model, task, xla=optimize == OPTIMIZE_COMPACT_XLA,
                                       bf16=optimize == OPTIMIZE_COMPACT_BF16)


def applied_optimization(serving_model) -> str:
    """The optimisation an ``inference_model`` result carries (``auto`` resolved), as export metadata records it."""
    if not isinstance(serving_model, CompactBertModel):
        return OPTIMIZE_NONE
    if serving_model.xla:
        return OPTIMIZE_COMPACT_XLA
    return OPTIMIZE_COMPACT_BF16 if serving_model.bf16 else OPTIMIZE_COMPACT


def unsupported(why: str) -> ExportError:
    return ExportError(f"--optimize compact cannot export this model: {why}; export it with --optimize none")


@dataclass(frozen=True)
class HeadPlan:
    """Which head the model has, and the Keras objects to read its weights from."""

    kind: str
    backbone: object                       # the transformers TF model (TFBertFor* / TFBertModel)
    classifier: Optional[object] = None    # Dense (sequence / token heads)
    label_vectors: Optional[np.ndarray] = None
    temperature: float = 1.0


def head_plan(model, task: str) -> HeadPlan:
    """The compact head for ``model``, or ``ExportError`` saying why it has none."""
    if task not in (CLASSIFICATION, REGRESSION, NER, EMBEDDING):
        raise unsupported(f"its task is {task}; the compact graph covers BERT text models only")
    if applied_method(model) == "adapter":
        raise unsupported("it carries unmerged bottleneck adapters (PEFT), extra layers the compact encoder "
                          "does not have")
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "config"):
        raise unsupported(f"{type(model).__name__} is not a transformers-backed model")
    config = backbone.config
    if getattr(config, "model_type", None) != "bert":
        raise unsupported(f"its architecture is {getattr(config, 'model_type', type(backbone).__name__)!r}, "
                          "not BERT (the compact encoder implements BERT's layers exactly)")
    if isinstance(model, TaskModel):
        if isinstance(backbone, TFBertForSequenceClassification) and task in (CLASSIFICATION, REGRESSION):
            return HeadPlan(SEQUENCE_HEAD, backbone, classifier=backbone.classifier)
        if isinstance(backbone, TFBertForTokenClassification) and task == NER:
            return HeadPlan(TOKEN_HEAD, backbone, classifier=backbone.classifier)
    elif isinstance(model, EmbeddingModel) and isinstance(backbone, TFBertModel) and task == EMBEDDING:
        return HeadPlan(MEAN_POOL_HEAD, backbone)
    elif isinstance(model, LabelVectorClassifier) and isinstance(backbone, TFBertModel):
        return HeadPlan(LABEL_VECTOR_HEAD, backbone, label_vectors=model.label_vectors.numpy(),
                        temperature=model.temperature)
    raise unsupported(f"no compact head for a {type(model).__name__} on {type(backbone).__name__} ({task})")


def _check_encoder_config(config) -> None:
    if config.hidden_act not in ACTIVATIONS:
        raise unsupported(f"hidden_act {config.hidden_act!r} (supported: {', '.join(ACTIVATIONS)})")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise unsupported(f"position_embedding_type {config.position_embedding_type!r} (only absolute)")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise unsupported("it is a decoder / cross-attention BERT")
    if config.hidden_size % config.num_attention_heads:
        raise unsupported(f"hidden size {config.hidden_size} is not a multiple of {config.num_attention_heads} heads")


def _values(weight) -> np.ndarray:
    return np.asarray(weight.numpy(), np.float32)


def _kernel(dense) -> np.ndarray:
    """A Dense kernel as served: LoRA's low-rank update folded in (``LoraDense.merged_kernel``)."""
    if isinstance(dense, LoraDense):
        return np.asarray(dense.merged_kernel().numpy(), np.float32)
    return _values(dense.kernel)


def _bias(dense) -> np.ndarray:
    return _values((dense.base if isinstance(dense, LoraDense) else dense).bias)


class LayerNorm(tf.Module):
    """Layer norm over the last axis of 2-D ``x`` as plain reductions and arithmetic (7 small ops).

    Not Keras' fused form (each row one "channel" of a ``FusedBatchNormV3``), although Grappler's
    remapper turns that into one ``_MklLayerNorm`` op on oneDNN CPUs: measured with MiniLM-L6 on
    2 threads, that op cost ~2.5 ms of a ~12 ms batch-1 call (``bench/serving_profile.py``: about
    0.2 ms each, for 13 of them, likely a oneDNN primitive built per new input shape), and this form
    made ``compact`` 10.0 ms vs 13.6 ms at batch 1 with the same batch-32 throughput (143.5 vs
    143.2 ex/s; ``bench/vs_pytorch.py --skip-training``, one run each, ratios to ``none`` in the same
    run: 1.23x vs 1.09x)."""

    def __init__(self, keras_layer, name: str):
        super().__init__(name=name)
        self.epsilon = float(keras_layer.epsilon)
        self.gamma = tf.Variable(_values(keras_layer.gamma), trainable=False, name="gamma")
        self.beta = tf.Variable(_values(keras_layer.beta), trainable=False, name="beta")

    def __call__(self, x):
        centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)
        return centred * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta


class Dense(tf.Module):
    """``activation(x @ kernel + bias)`` on 2-D ``x`` (MatMul + BiasAdd [+ GELU]: one fused op after Grappler),
    computed and returned in ``dtype`` (``x`` is cast to it; a no-op when it already has it)."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, name: str, dtype: tf.DType = tf.float32):
        super().__init__(name=name)
        self.units = int(kernel.shape[1])
        self.dtype = dtype
        self.kernel = tf.Variable(tf.cast(kernel, dtype), trainable=False, name="kernel")
        self.bias = tf.Variable(tf.cast(bias, dtype), trainable=False, name="bias")

    @classmethod
    def from_keras(cls, dense, name: str, dtype: tf.DType = tf.float32) -> "Dense":
        return cls(_kernel(dense), _bias(dense), name, dtype)

    def __call__(self, x, activation: Optional[Callable[[tf.Tensor], tf.Tensor]] = None):
        y = tf.nn.bias_add(tf.matmul(tf.cast(x, self.dtype), self.kernel), self.bias)
        return y if activation is None else activation(y)


class EncoderLayer(tf.Module):
    """One BERT layer: fused-QKV self-attention + FFN, each with residual and post layer norm.

    ``matmul_dtype``: the dtype of its four dense layers (bfloat16 for ``compact+bf16``); everything between
    them is float32."""

    def __init__(self, keras_layer, config, name: str, matmul_dtype: tf.DType = tf.float32):
        super().__init__(name=name)
        attention = keras_layer.attention.self_attention
        self.heads = int(config.num_attention_heads)
        self.head_size = int(config.hidden_size) // self.heads
        scale = 1.0 / math.sqrt(self.head_size)     # folded into the query projection
        kernels = [_kernel(attention.query) * scale, _kernel(attention.key), _kernel(attention.value)]
        biases = [_bias(attention.query) * scale, _bias(attention.key), _bias(attention.value)]
        self.qkv = Dense(np.concatenate(kernels, axis=1), np.concatenate(biases), "qkv", matmul_dtype)
        self.attention_output = Dense.from_keras(keras_layer.attention.dense_output.dense, "attention_output",
                                                 matmul_dtype)
        self.attention_norm = LayerNorm(keras_layer.attention.dense_output.LayerNorm, "attention_norm")
        self.intermediate = Dense.from_keras(keras_layer.intermediate.dense, "intermediate", matmul_dtype)
        self.output_dense = Dense.from_keras(keras_layer.bert_output.dense, "output", matmul_dtype)
        self.output_norm = LayerNorm(keras_layer.bert_output.LayerNorm, "output_norm")
        self.activation = ACTIVATIONS[config.hidden_act]

    def __call__(self, x, mask_bias, batch, length):
        """``x``: [B*T, H]; ``mask_bias``: [B, 1, 1, T] (0 or MASK_BIAS)."""
        qkv = tf.reshape(tf.cast(self.qkv(x), tf.float32), [batch, length, 3, self.heads, self.head_size])
        query, key, value = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]))          # each [B, heads, T, d]
        probs = tf.nn.softmax(tf.matmul(query, key, transpose_b=True) + mask_bias)
        context = tf.reshape(tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3]), [-1, self.heads * self.head_size])
        x = self.attention_norm(x + tf.cast(self.attention_output(context), tf.float32))
        ffn = self.output_dense(self.intermediate(x, self.activation))     # stays in the matmul dtype between
        return self.output_norm(x + tf.cast(ffn, tf.float32))


class CompactBertModel(tf.Module):
    """``features -> logits`` with the Keras model's interface (``model(features, training=False)``).

    Build it with ``from_keras``; its ``variables`` are the only state a serving module saves.
    """

    def __init__(self, plan: HeadPlan, *, xla: bool = False, bf16: bool = False):
        super().__init__(name="compact_bert")
        backbone = plan.backbone
        config = backbone.config
        _check_encoder_config(config)
        main = getattr(backbone, backbone.base_model_prefix)
        embeddings = main.embeddings
        self.head = plan.kind
        self.xla = bool(xla)
        self.bf16 = bool(bf16)
        if self.xla and self.bf16:
            raise ExportError("compact export: choose XLA or bfloat16, not both")
        self.hidden_size = int(config.hidden_size)
        self.max_positions = int(config.max_position_embeddings)
        self.word_embeddings = tf.Variable(_values(embeddings.weight), trainable=False, name="word_embeddings")
        self.position_embeddings = tf.Variable(_values(embeddings.position_embeddings), trainable=False,
                                               name="position_embeddings")
        self.token_type_embeddings = tf.Variable(_values(embeddings.token_type_embeddings), trainable=False,
                                                 name="token_type_embeddings")
        self.embedding_norm = LayerNorm(embeddings.LayerNorm, "embedding_norm")
        matmul_dtype = tf.bfloat16 if self.bf16 else tf.float32
        self.layers: List[EncoderLayer] = [EncoderLayer(layer, config, f"layer_{i}", matmul_dtype)
                                           for i, layer in enumerate(main.encoder.layer)]
        if plan.kind == SEQUENCE_HEAD:
            self.pooler = Dense.from_keras(main.pooler.dense, "pooler")
        if plan.classifier is not None:
            self.classifier = Dense.from_keras(plan.classifier, "classifier")
        if plan.label_vectors is not None:
            self.label_vectors = tf.Variable(np.asarray(plan.label_vectors, np.float32), trainable=False,
                                             name="label_vectors")
            self.temperature = float(plan.temperature)
        self.logits_from_features = tf.function(self._forward, input_signature=[IDS_SPEC] * 3,
                                                jit_compile=self.xla or None)

    @classmethod
    def from_keras(cls, model, task: str, *, xla: bool = False, bf16: bool = False) -> "CompactBertModel":
        """The compact twin of a trained Keras text model (``ExportError`` if it has none; see the module doc)."""
        return cls(head_plan(model, task), xla=xla, bf16=bf16)

    def __call__(self, features, training: bool = False):
        if training:
            raise ExportError("the compact BERT graph is for inference only")
        input_ids = tf.cast(features["input_ids"], tf.int32)
        mask = tf.cast(features["attention_mask"], tf.int32) if "attention_mask" in features \
            else tf.ones_like(input_ids)
        types = tf.cast(features["token_type_ids"], tf.int32) if "token_type_ids" in features \
            else tf.zeros_like(input_ids)
        if not self.xla:
            return self.logits_from_features(input_ids, mask, types)
        return self._bucketed(input_ids, mask, types)

    def _bucketed(self, input_ids, mask, types):
        """Pad to the bucket shape (masked rows/positions), run the compiled function, cut the padding off."""
        # XLA's gather clamps bad indices silently; TF's (and the Keras model's) refuse them: keep that error
        check = tf.debugging.assert_less(input_ids, tf.shape(self.word_embeddings, out_type=tf.int32)[0],
                                         message="input_ids outside the vocabulary")
        with tf.control_dependencies([check, tf.debugging.assert_non_negative(input_ids)]):
            input_ids = tf.identity(input_ids)
        batch, length = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        padded_length = tf.maximum(length, tf.minimum(
            (length + XLA_LENGTH_BUCKET - 1) // XLA_LENGTH_BUCKET * XLA_LENGTH_BUCKET, self.max_positions))
        powers = tf.constant([1 << i for i in range(31)], tf.int32)
        padded_batch = tf.gather(powers, tf.reduce_sum(tf.cast(powers < batch, tf.int32)))   # next power of 2
        pad = [[0, padded_batch - batch], [0, padded_length - length]]
        logits = self.logits_from_features(tf.pad(input_ids, pad), tf.pad(mask, pad), tf.pad(types, pad))
        logits = logits[:batch]
        return logits[:, :length] if self.head == TOKEN_HEAD else logits

    def _forward(self, input_ids, attention_mask, token_type_ids):
        batch, length = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        hidden = (tf.gather(self.word_embeddings, input_ids) + self.position_embeddings[tf.newaxis, :length]
                  + tf.gather(self.token_type_embeddings, token_type_ids))
        x = self.embedding_norm(tf.reshape(hidden, [-1, self.hidden_size]))               # [B*T, H]
        mask = tf.cast(attention_mask, tf.float32)
        mask_bias = tf.reshape((1.0 - mask) * MASK_BIAS, [batch, 1, 1, length])          # once for all layers
        for layer in self.layers:
            x = layer(x, mask_bias, batch, length)
        if self.head == TOKEN_HEAD:
            return tf.reshape(self.classifier(x), [batch, length, self.classifier.units])   # static labels dim
        if self.head == SEQUENCE_HEAD:
            first = tf.reshape(x, [batch, length, self.hidden_size])[:, 0]
            return self.classifier(tf.tanh(self.pooler(first)))
        hidden = tf.reshape(x, [batch, length, self.hidden_size])
        weights = mask[:, :, tf.newaxis]
        pooled = tf.reduce_sum(hidden * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1e-9)
        embedding = tf.math.l2_normalize(pooled, axis=-1)
        if self.head == MEAN_POOL_HEAD:
            return embedding
        return tf.matmul(embedding, self.label_vectors, transpose_b=True) / self.temperature
