"""The comparison point for vs_pytorch.py: a plain Hugging Face PyTorch fine-tuning loop + ONNX export.

Deliberately what a PyTorch user would write from the transformers docs:
``BertForSequenceClassification`` loaded from the same safetensors folder,
the fast tokenizer, ``DataCollatorWithPadding`` (pad to the batch's longest,
no length bucketing), ``torch.optim.AdamW`` with no decay on bias/LayerNorm,
``get_linear_schedule_with_warmup`` and grad-norm clipping at 1.0 -- the
same recipe tfpipeline's ``ModelBundle.compile`` uses. Nothing here is tuned
for speed beyond ``torch.inference_mode`` for inference.

Needs ``torch`` (CPU build), ``onnx`` and ``onnxruntime``; see docs/benchmarks.md.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np


def load_model(checkpoint: str, label_names: Sequence[str], *, seed: int):
    """Sequence classifier from a local HF folder (safetensors or tf_model.h5), never from a hub."""
    import os

    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    from_tf = not any(f.endswith(".safetensors") for f in os.listdir(checkpoint))
    return BertForSequenceClassification.from_pretrained(
        checkpoint, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)}, local_files_only=True, from_tf=from_tf)


def load_tokenizer(checkpoint: str, max_length: int):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(checkpoint, local_files_only=True, model_max_length=max_length)


def training_loader(tokenizer, texts: Sequence[str], label_ids: Sequence[int], *, batch_size: int,
                    max_length: int, seed: int):
    """Tokenize once up front (like tf.data's cache), shuffle each epoch, pad each batch dynamically."""
    import torch
    from transformers import DataCollatorWithPadding

    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    rows = [{"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": y}
            for ids, mask, types, y in zip(encoded["input_ids"], encoded["attention_mask"],
                                           encoded["token_type_ids"], label_ids)]
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=True, generator=generator,
                                       collate_fn=DataCollatorWithPadding(tokenizer))


def make_optimizer(model, *, learning_rate: float, total_steps: int, warmup_ratio: float = 0.1,
                   weight_decay: float = 0.01):
    """AdamW (eps 1e-6) + linear warmup/decay, no weight decay on bias and LayerNorm."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, eps=1e-6)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(round(total_steps * warmup_ratio)), total_steps)
    return optimizer, scheduler


def train_epoch(model, loader, optimizer, scheduler, *, clip_norm: float = 1.0) -> Dict[str, float]:
    """One pass over ``loader``; returns mean loss, examples and padded share of positions."""
    import torch

    model.train()
    losses, examples, real, total = [], 0, 0, 0
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach().item())
        examples += int(batch["input_ids"].shape[0])
        real += int(batch["attention_mask"].sum())
        total += int(batch["attention_mask"].numel())
    return {"loss": float(np.mean(losses)), "examples": examples, "padding_fraction": 1.0 - real / max(total, 1)}


def predict_labels(model, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Argmax label ids for ``texts`` (eval mode, batches in input order)."""
    import torch

    model.eval()
    out: List[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            out.append(model(**batch).logits.argmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def torch_scores(model, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Class probabilities from token ids (int64 arrays), eval mode, no autograd."""
    import torch

    with torch.inference_mode():
        ids = torch.from_numpy(input_ids)
        logits = model(input_ids=ids, attention_mask=torch.from_numpy(attention_mask),
                       token_type_ids=torch.zeros_like(ids)).logits
    return softmax(logits.numpy())


def export_onnx(model, path: str, *, opset: int = 17) -> str:
    """TorchScript-based ONNX export with dynamic batch and sequence axes (ids in, logits out)."""
    import torch

    model.eval()
    dummy = torch.ones(2, 8, dtype=torch.long)
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings():   # TracerWarnings about constants are expected for BERT
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy, torch.ones_like(dummy), torch.zeros_like(dummy)), path,
                          input_names=list(inputs), output_names=["logits"], dynamic_axes=axes,
                          opset_version=opset, dynamo=False)
    return path


def onnx_session(path: str, threads: int):
    """ONNX Runtime CPU session with ``threads`` intra-op threads and full graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_scores(session, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    (logits,) = session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask,
                                         "token_type_ids": np.zeros_like(input_ids)})
    return softmax(logits)


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)


def threads_in_use() -> Optional[int]:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None
