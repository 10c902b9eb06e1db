"""The fine-tuning recipe a checkpoint comes with: what ``train`` uses for every option the user leaves out.

A recipe is chosen by the checkpoint's alias (``minilm``) or, for any other
local Hugging Face folder, by the encoder's width from its ``config.json``:
small encoders (hidden size <= 512: MiniLM, TinyBERT, BERT-small/mini) want a
higher learning rate than BERT-base; large ones (hidden size >= 1024) a lower one.

Where the numbers come from:

- ``minilm`` / small: measured on this project's built-in datasets with
  all-MiniLM-L6-v2 (README "Accuracy on the built-in datasets"): 5e-5, the
  BERT-base default, left it underfit (ATIS intents 91.9, WNUT-16 F1 0.0);
  1e-4 was the best or equal-best rate on the sentence-classification sets and
  2e-4 on both token-classification sets. Max length at most 128: the
  model card says its sentence-embedding training "limited [the sequence
  length] to 128 tokens" (its tokenizer.json truncates there too); 256 on
  long news articles (bbc_topics) scored 96.7 against 96.2 at 128 but cost
  about 4x the training time. Other small encoders keep 256. LoRA / adapters: 1e-3, the
  rate of the README's fine-tuning menu, where both came within a point of
  full fine-tuning on ATIS intents.
- base / large: the BERT paper's fine-tuning grid (Devlin et al. 2019,
  appendix A.3: 5e-5..2e-5, batch 16/32, 10% warmup) and RoBERTa's large
  setting (1e-5..2e-5); LoRA rates from the LoRA paper's RoBERTa-base/large
  GLUE runs (Hu et al. 2021: 4e-4..5e-4 and 3e-4..4e-4). Not re-measured
  here (no such checkpoint ships offline).

- ``embedding`` (bi-encoder, in-batch negatives): 2e-5 for small and base encoders,
  1e-5 for large ones -- sentence-transformers' rate for ``MultipleNegativesRankingLoss``
  fine-tuning, the loss all-MiniLM-L6-v2 itself was trained with; a higher rate
  quickly forgets the pretrained similarity (README: the FAQ recipe's comparison).
- ``mobilenet_v2`` (image classification, the offline image default): AdamW
  on the whole network with a new head; see the README's image table for the
  rate comparison it was chosen from. Resolution: a CNN runs at any size, so
  ``auto`` takes the training images' median side rounded up to a multiple of
  32, between 96 (MobileNetV2's smallest ImageNet-trained resolution) and 224
  (its pretraining resolution): small images are not blown up to 224 for
  nothing, large photos are not shrunk below what the features were learnt at.
- ViT folders (image classification): by width like the text encoders; their
  resolution is the checkpoint's own (its position embeddings fix it).

The data-dependent parts (how many epochs at most, which max length or image
size) are rules in ``training.effective_recipe``; their constants live here with the rest.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, IMAGE_CLASSIFICATION, NER
from tfpipeline.models.checkpoint import ALIASES, resolve_checkpoint
from tfpipeline.models.image_model import is_mobilenet, resolve_image_checkpoint
from tfpipeline.errors import CheckpointError


@dataclass(frozen=True)
class Recipe:
    """Training defaults for one kind of checkpoint (values the user did not give)."""

    name: str                              # printed as the source of each value, e.g. "minilm recipe"
    learning_rates: Dict[str, float]       # peak AdamW learning rate per task (full fine-tuning)
    peft_learning_rate: float = 1e-3       # LoRA / adapters: only small new weights train, so a higher rate
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length_cap: int = 256              # auto max length never exceeds this (nor the position table)
    length_percentile: float = 99.0        # auto max length covers this share of the training texts
    updates_per_label: int = 200           # epoch cap: optimizer steps planned per class / entity type ...
    min_updates: int = 1000                # ... at least this many ...
    max_updates: int = 3000                # ... at most this many,
    min_epochs: int = 3                    # ... and between these many epochs
    max_epochs: int = 20
    image_sizes: Tuple[int, int] = (224, 224)   # auto image size range (CNNs; ViTs use their own size)

    def learning_rate(self, task: str, peft: Optional[str] = None) -> float:
        if peft:
            return self.peft_learning_rate
        if task in self.learning_rates:
            return self.learning_rates[task]
        return self.learning_rates.get(CLASSIFICATION) or next(iter(self.learning_rates.values()))


SMALL = Recipe("small-encoder", {CLASSIFICATION: 1e-4, NER: 2e-4, EMBEDDING: 2e-5})
MINILM = Recipe("minilm", SMALL.learning_rates, max_length_cap=128)
BASE = Recipe("base-encoder", {CLASSIFICATION: 5e-5, NER: 5e-5, EMBEDDING: 2e-5}, peft_learning_rate=5e-4,
              max_length_cap=512)
LARGE = Recipe("large-encoder", {CLASSIFICATION: 2e-5, NER: 2e-5, EMBEDDING: 1e-5}, peft_learning_rate=3e-4,
               batch_size=16, max_length_cap=512)
MOBILENET = Recipe("mobilenet_v2", {IMAGE_CLASSIFICATION: 1e-3}, image_sizes=(96, 224))


def read_checkpoint_config(checkpoint_dir: str) -> Dict:
    path = os.path.join(checkpoint_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint config ({e})") from None


def recipe_for(model: Optional[str], task: str = CLASSIFICATION) -> Recipe:
    """The recipe of checkpoint ``model`` (an alias such as ``minilm``, or a local folder) for ``task``."""
    if task == IMAGE_CLASSIFICATION:
        if is_mobilenet(model):
            return MOBILENET
        return _by_width(resolve_image_checkpoint(model))
    if model is None or model in ALIASES:
        return MINILM
    return _by_width(resolve_checkpoint(model))


def _by_width(checkpoint_dir: str) -> Recipe:
    hidden = int(read_checkpoint_config(checkpoint_dir).get("hidden_size") or 768)
    if hidden <= 512:
        return SMALL
    return BASE if hidden < 1024 else LARGE


def position_limit(checkpoint_dir: str) -> int:
    """The longest sequence the checkpoint's position embeddings allow."""
    return int(read_checkpoint_config(checkpoint_dir).get("max_position_embeddings") or 512)
