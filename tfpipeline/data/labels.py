"""Label maps: the ordered label names saved with every model (``labels.json``)."""
from __future__ import annotations

import json
import os
from typing import Iterable, List, Sequence

from tfpipeline.data.examples import NER
from tfpipeline.errors import DataError

LABELS_FILE = "labels.json"


class LabelMap:
    """Bidirectional name <-> id map. Order is the model's output order."""

    def __init__(self, names: Sequence[str]):
        names = [str(n) for n in names]
        if not names:
            raise DataError("label map is empty")
        if len(set(names)) != len(names):
            raise DataError(f"label map has duplicates: {names}")
        self.names: List[str] = names
        self._ids = {n: i for i, n in enumerate(names)}

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name) -> bool:
        return name in self._ids

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelMap) and other.names == self.names

    def id(self, name: str, origin: str = "") -> int:
        """Label name -> id; an unknown name is an error naming where it came from."""
        try:
            return self._ids[name]
        except KeyError:
            where = f"{origin}: " if origin else ""
            known = ", ".join(self.names[:20]) + (" ..." if len(self.names) > 20 else "")
            raise DataError(f"{where}unknown label {name!r} (the model knows: {known})") from None

    def name(self, index: int) -> str:
        return self.names[int(index)]

    @classmethod
    def from_examples(cls, examples: Iterable, task: str) -> "LabelMap":
        """Collect labels from training examples: sorted, with 'O' first for NER."""
        seen = set()
        for ex in examples:
            if task == NER:
                seen.update(ex.tags or ())
            elif ex.label is not None:
                seen.add(ex.label)
        if not seen:
            raise DataError("training data has no labels")
        names = sorted(seen)
        if task == NER:
            names = ["O"] + [n for n in names if n != "O"]
        return cls(names)

    def save(self, directory: str) -> str:
        path = os.path.join(directory, LABELS_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"labels": self.names}, f, indent=2, ensure_ascii=False)
        return path

    @classmethod
    def load(cls, directory: str) -> "LabelMap":
        path = os.path.join(directory, LABELS_FILE)
        if not os.path.exists(path):
            raise DataError(f"{path}: label map not found (is this a tfpipeline model directory?)")
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f)["labels"])
