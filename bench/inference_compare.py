"""Part (b) of vs_pytorch.py: batch-1 latency and batch-32 throughput, interleaved, same requests.

Two levels, each with its own baseline (the tfpipeline SavedModel = 1.0):

* ids: every engine gets the *same* token-id arrays (tfpipeline's
  tokenization, padded to the batch's longest text): model cost only.
* text: every engine gets raw strings and tokenizes them its own way (the
  SavedModel's in-graph tf-text tokenizer vs the HF fast tokenizer), which
  is what a service pays per request. tfpipeline's in-process ``Predictor``
  is listed too.

The fine-tuned models of part (a) are used: the Keras model exported with
tfpipeline's exporter, the PyTorch model as is and exported to ONNX. The
SavedModel is exported once per ``--optimize`` setting (``none`` = the Keras
graph, the baseline; ``compact``; ``compact+xla``; ``compact+bf16``: see
tfpipeline/export/compact_encoder.py; ``compact+tflite``: its model.tflite, see
tfpipeline/export/tflite_text.py), each a row of its own. Without PyTorch
(``pt_model`` None) only the TensorFlow engines run.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

import benchlib
import tf_engines
import torch_baseline as tb

SM_IDS = tf_engines.engine_name("none", "predict_ids")
SM_TEXT = tf_engines.engine_name("none", "text")
PREDICTOR = "tfpipeline Predictor (Keras)"
PT = "PyTorch eager"
ORT = "ONNX Runtime"
HF_PT = "HF tokenizer + PyTorch eager"
HF_ORT = "HF tokenizer + ONNX Runtime"


def request_batches(texts: Sequence[str], size: int, count: int) -> List[List[str]]:
    """``count`` request batches of ``size`` consecutive test texts (wrapping around)."""
    return [[texts[(i * size + j) % len(texts)] for j in range(size)] for i in range(count)]


def compare_inference(args, *, tf_model, encoder, labels, task, predictor, pt_model, tokenizer,
                      texts: Sequence[str], threads: int, tmp: str) -> Tuple[dict, list]:
    """``pt_model``/``tokenizer`` None: TensorFlow engines only. ``args.optimize``: the SavedModel variants."""
    optimizations = ["none"] + [o for o in getattr(args, "optimize", ["none"]) if o != "none"]
    paths = {o: tf_engines.export_saved_model(tf_model, encoder, labels, task, os.path.join(tmp, "export"), o)
             for o in optimizations}
    saved_models = {o: tf_engines.load_signatures(path, threads) for o, path in paths.items()}
    session = None
    if pt_model is not None:
        if not args.skip_onnx:
            session = tb.onnx_session(tb.export_onnx(pt_model, os.path.join(tmp, "model.onnx")), threads)
        pt_model.eval()

    result = {"saved_model": paths["none"], "saved_models": paths,
              "checks": checks(saved_models, predictor, pt_model, session, encoder, texts)}
    print(f"inference: SavedModel agreement checks {result['checks']}", flush=True)
    rows = []
    for size, count in ((1, args.requests), (32, args.batches)):
        batches = request_batches(texts, size, count)
        block = 10 if size == 1 else 2
        ids = [tf_engines.encode_ids(encoder, b) for b in batches]
        ids64 = [(i.astype(np.int64), m.astype(np.int64)) for i, m in ids]
        id_calls, text_calls = {}, {}
        for o, saved in saved_models.items():
            id_calls[tf_engines.engine_name(o, "predict_ids")] = lambda i, saved=saved: saved["ids"](*ids[i])
            text_calls[tf_engines.engine_name(o, "text")] = lambda i, saved=saved: saved["text"](batches[i])
        text_calls[PREDICTOR] = lambda i: predictor.class_probabilities(batches[i])
        if pt_model is not None:
            id_calls[PT] = lambda i: tb.torch_scores(pt_model, *ids64[i])
            text_calls[HF_PT] = lambda i: _hf_torch(pt_model, tokenizer, batches[i], args.max_length)
        if session is not None:
            id_calls[ORT] = lambda i: tb.onnx_scores(session, *ids64[i])
            text_calls[HF_ORT] = lambda i: _hf_onnx(session, tokenizer, batches[i], args.max_length)
        # Both levels in one interleaved run, so ids and text rows share the same machine load too.
        times = benchlib.interleaved({**id_calls, **text_calls}, count, block=block)
        for level, calls, base in (("ids", id_calls, SM_IDS), ("text", text_calls, SM_TEXT)):
            stats = {name: {"wall": benchlib.summarize(times[name]["wall"], [size] * count),
                            "cpu_ms_per_call": 1000.0 * float(np.mean(times[name]["cpu"]))} for name in calls}
            result[f"{level}_batch{size}"] = stats
            section = f"inference {level} b{size}"
            if size == 1:
                rows += benchlib.ratio_rows(section, "p50 latency ms",
                                            {n: s["wall"]["p50_ms"] for n, s in stats.items()},
                                            base, higher_is_better=False)
            else:
                # from the median call: one preempted call on a shared machine should not decide the ratio
                rows += benchlib.ratio_rows(section, "examples/s (p50 call)",
                                            {n: 1000.0 * size / s["wall"]["p50_ms"] for n, s in stats.items()},
                                            base, higher_is_better=True)
            print(f"  {section}: " + ", ".join(f"{n} p50 {s['wall']['p50_ms']:.1f} ms" for n, s in stats.items()),
                  flush=True)
    return result, rows


def checks(saved_models, predictor, pt_model, session, encoder, texts) -> Dict[str, float]:
    """Each engine must compute what its reference computes (else the timings mean nothing)."""
    sample = list(texts[:16])
    ids, mask = tf_engines.encode_ids(encoder, sample)
    keras = predictor.class_probabilities(sample)
    out = {}
    for o, saved in saved_models.items():
        prefix = "savedmodel" if o == "none" else f"savedmodel_{o}"
        out[f"{prefix}_ids_vs_keras_max_abs"] = float(np.abs(saved["ids"](ids, mask) - keras).max())
        out[f"{prefix}_text_vs_keras_max_abs"] = float(np.abs(saved["text"](sample) - keras).max())
    if session is not None:
        ids64, mask64 = ids.astype(np.int64), mask.astype(np.int64)
        out["onnx_vs_torch_max_abs"] = float(np.abs(tb.onnx_scores(session, ids64, mask64)
                                                    - tb.torch_scores(pt_model, ids64, mask64)).max())
    return out


def _hf_torch(model, tokenizer, texts, max_length):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return tb.torch_scores(model, batch["input_ids"], batch["attention_mask"])


def _hf_onnx(session, tokenizer, texts, max_length):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return tb.onnx_scores(session, batch["input_ids"], batch["attention_mask"])
