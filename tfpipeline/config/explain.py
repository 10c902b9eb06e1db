"""Options of ``tfpipeline explain``: Integrated Gradients attributions of a model folder's predictions.

The choices (quadrature rule, baseline) live here, in the config layer, so the
CLI lists them in ``--help`` without importing TensorFlow and the library
(``tfpipeline.evaluation.explain``) checks its arguments against the same tuples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tfpipeline.config.options import check_choice, check_positive, opt
from tfpipeline.errors import ConfigError

GAUSS_LEGENDRE, TRAPEZOID = "gauss_legendre", "trapezoid"
IG_METHODS = (GAUSS_LEGENDRE, TRAPEZOID)     # how the path integral is summed
PAD_BASELINE, ZERO_BASELINE = "pad", "zero"
BASELINES = (PAD_BASELINE, ZERO_BASELINE)    # the "no information" input every text is compared with
MIN_STEPS = 2                                # the trapezoid rule needs both ends of the path


@dataclass
class ExplainConfig:
    model_dir: str = opt(None, "trained model folder (classification or ner)", required=True)
    file: Optional[str] = opt(None, "text file, one text per line (also: arguments or stdin)")
    target: Optional[str] = opt(None, "explain this label instead of the predicted one (ner: an entity type, "
                                "e.g. PER: explain only entities of that type)")
    steps: int = opt(50, "interpolation steps from the baseline to the input (more: smaller completeness gap, "
                     "slower)")
    batch_size: int = opt(64, "interpolated inputs per model call")
    method: str = opt(GAUSS_LEGENDRE, "quadrature rule of the path integral", choices=IG_METHODS)
    baseline: str = opt(PAD_BASELINE, "baseline embedding of every word piece ([CLS]/[SEP] stay as they are): "
                        "the [PAD] token's or zeros", choices=BASELINES)
    json: bool = opt(False, "print one JSON result per line")
    html: Optional[str] = opt(None, "also write a self-contained page colouring the words (path ending in .html)")
    top_k: int = opt(10, "words listed per explanation in the printed table (largest |attribution| first)")

    def validate(self) -> "ExplainConfig":
        check_positive(self, "batch_size", "top_k")
        check_choice(self.method, "method", IG_METHODS)
        check_choice(self.baseline, "baseline", BASELINES)
        if self.steps < MIN_STEPS:
            raise ConfigError(f"steps must be >= {MIN_STEPS}, got {self.steps}")
        if self.html is not None and not self.html.lower().endswith(".html"):
            raise ConfigError(f"html must be a path ending in .html, got {self.html!r}")
        return self
