"""One page a user can open from the run folder: ``report.html`` with scores, curves, errors and recipe.

The JSON report is for programs; this page is for people. It is self-contained
(the plots are inlined as base64 PNG data URIs, the CSS is inline, there is no
script and no external URL), so it opens offline, from an archive or an e-mail.
The same PNGs are also written next to it, for slides and notebooks. Every
user-provided string (labels, dataset names, paths) is HTML-escaped.
"""
from __future__ import annotations

import base64
import io
import json
import os
from html import escape
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfpipeline.data.examples import CLASSIFICATION, EMBEDDING, NER, REGRESSION
from tfpipeline.errors import ConfigError, DataError

REPORT_HTML = "report.html"
PLOTS = ("curves", "confusion_matrix", "entity_f1")     # PNG names (before the prefix), see png_names
NOT_PLOTTED = ("lr", "learning_rate")                   # history entries that are no training curves
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
h1{margin-bottom:.2em}.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}img{max-width:100%;height:auto}.note{color:#666;font-style:italic}"""


def png_names(filename: str = REPORT_HTML) -> Dict[str, str]:
    """{plot: PNG file name}: ``curves.png`` next to ``report.html``, ``eval_curves.png`` next to ``eval.html``."""
    prefix = "" if filename == REPORT_HTML else filename[:-len(".html")] + "_"
    return {plot: f"{prefix}{plot}.png" for plot in PLOTS}


def write_html_report(directory: str, report: dict, *, history: Optional[dict] = None,
                      recipe: Optional[dict] = None, title: Optional[str] = None,
                      filename: str = REPORT_HTML) -> str:
    """Write ``directory/filename`` (a self-contained page) and its PNGs; return the page's path.

    ``report`` is a ``classification_report``/``ner_report`` dict (plus the trainer's or
    ``evaluate_model``'s keys), ``history`` a Keras ``History.history`` dict and ``recipe``
    ``{name: {"value": v, "source": s}}``. A PNG of an earlier page of the same name that this
    page has no plot for (no history this time, say) is removed, so the folder matches the page.
    """
    if os.path.basename(filename) != filename or not filename.endswith(".html"):
        raise ConfigError(f"report page name must be a file name ending in .html, got {filename!r}")
    if report.get("task") not in (CLASSIFICATION, NER, EMBEDDING, REGRESSION):
        raise DataError(f"not an evaluation report: task {report.get('task')!r}")
    os.makedirs(directory, exist_ok=True)
    figures = {"curves": curves_figure(history or {}, kept_epoch(report))}
    if report["task"] == CLASSIFICATION:
        figures["confusion_matrix"] = confusion_figure(report["confusion_matrix"])
    elif report["task"] == NER:
        figures["entity_f1"] = entity_figure(report["per_type"])
    images = {}
    for plot, name in png_names(filename).items():
        path = os.path.join(directory, name)
        if figures.get(plot) is None:
            if os.path.exists(path):
                os.remove(path)
            continue
        images[plot] = png_bytes(figures[plot])
        with open(path, "wb") as f:
            f.write(images[plot])
    page = render_page(report, images, recipe, title)
    out = os.path.join(directory, filename)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out


def save_report(path: str, report: dict) -> str:
    """``evaluate --output``: a path ending in ``.html`` gets the page (PNGs beside it), any other JSON."""
    if path.lower().endswith(".html"):
        directory, filename = os.path.split(os.path.abspath(path))
        return write_html_report(directory, report, filename=filename[:-5] + ".html")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return path


# -- figures ---------------------------------------------------------------------------------------------

def kept_epoch(report: Mapping) -> Optional[int]:
    """The 1-based epoch whose weights were kept (``report["epochs"]["kept"]``), if the report says."""
    epochs = report.get("epochs")
    kept = epochs.get("kept") if isinstance(epochs, Mapping) else None
    return int(kept) if isinstance(kept, (int, float)) and not isinstance(kept, bool) else None


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    fig.clear()
    return buffer.getvalue()


def curves_figure(history: Mapping[str, Sequence[float]], kept: Optional[int]) -> Optional[Figure]:
    """A loss panel and a metric panel; each metric drawn with its ``val_`` twin in the same colour."""
    names = sorted({k[4:] if k.startswith("val_") else k for k, v in history.items() if len(v)} - set(NOT_PLOTTED))
    panels = [(title, group) for title, group in (("loss", [n for n in names if "loss" in n]),
                                                  ("metrics", [n for n in names if "loss" not in n])) if group]
    if not panels:
        return None
    fig = new_figure(6 * len(panels), 4)
    for index, (title, group) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), index)
        for colour, name in enumerate(group):
            for key, style in ((name, "-"), ("val_" + name, "--")):
                values = [float(v) for v in history.get(key, ())]
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, marker="o", color=f"C{colour}", label=key)
        if kept:
            ax.axvline(kept, color="grey", linestyle=":", label=f"kept epoch {kept}")
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(cm: Mapping) -> Figure:
    """Heatmap, rows true / columns predicted, coloured by share of the true class; counts up to 20 labels."""
    labels, counts = list(cm["labels"]), np.asarray(cm["matrix"], dtype=float).reshape(len(cm["labels"]), -1)
    n = len(labels)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    side = max(5.0, 0.25 * n + 2)
    fig = new_figure(side + 1, side)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    font = 9 if n <= 20 else max(5, 8 - n // 40)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true")
    if n <= 20:
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, int(value), ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
    fig.tight_layout()
    return fig


def entity_figure(per_type: Mapping[str, Mapping[str, float]]) -> Figure:
    """Grouped precision / recall / F1 bars per entity type."""
    types = list(per_type)
    fig = new_figure(max(6.0, 1.2 * len(types) + 2), 4)
    ax = fig.add_subplot()
    x = np.arange(len(types))
    for offset, (key, name) in zip((-0.27, 0, 0.27), (("precision", "precision"), ("recall", "recall"),
                                                      ("f1-score", "F1"))):
        ax.bar(x + offset, [per_type[t][key] for t in types], width=0.27, label=name)
    ax.set_xticks(x, types, rotation=30 if len(types) > 8 else 0)
    ax.set(ylim=(0, 1.05), ylabel="score", title="entity scores per type (seqeval, strict spans)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


# -- HTML -----------------------------------------------------------------------------------------------

def table(header: Sequence[str], rows: List[Sequence], numeric_from: int = 1) -> str:
    """An HTML table; every cell is escaped, cells from column ``numeric_from`` on are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    cell = ('<td class="num">', "<td>")
    body = "".join("<tr>" + "".join(f"{cell[i < numeric_from]}{escape(str(c))}</td>" for i, c in enumerate(row))
                   + "</tr>\n" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def image(png: bytes, alt: str) -> str:
    return f'<p><img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></p>\n'


def headline(report: Mapping) -> List[Tuple[str, str]]:
    if report["task"] == CLASSIFICATION:
        rows = [("accuracy", f"{report['accuracy']:.4f}"), ("macro-F1", f"{report['macro_f1']:.4f}"),
                ("weighted-F1", f"{report['weighted_f1']:.4f}"), ("examples", str(report["examples"]))]
    elif report["task"] == REGRESSION:
        rows = [(name, f"{report[name]:.4f}") for name in ("pearson", "spearman", "mae", "rmse")]
        rows.append(("examples", str(report["examples"])))
    elif report["task"] == EMBEDDING:
        rows = [(name, f"{report[name]:.4f}") for name in report["metrics"]]
        rows += [("queries", str(report["queries"])), ("candidates", str(report["candidates"]))]
    else:
        rows = [("entity precision", f"{report['precision']:.4f}"), ("entity recall", f"{report['recall']:.4f}"),
                ("entity F1", f"{report['f1']:.4f}"), ("token accuracy", f"{report['token_accuracy']:.4f}"),
                ("sentences", str(report["sentences"]))]
    if report.get("train_seconds") is not None:
        rows.append(("train seconds", f"{float(report['train_seconds']):.1f}"))
    epochs = report.get("epochs")
    if isinstance(epochs, Mapping) and epochs.get("run"):
        rows.append(("kept epoch", f"{epochs.get('kept')} of {epochs['run']} (stopped: {epochs.get('stopped')})"))
    for key in ("trainable_params", "skipped_rows"):
        if report.get(key) is not None:
            rows.append((key.replace("_", " "), str(report[key])))
    return rows


def scores_rows(per_name: Mapping[str, Mapping[str, float]]) -> List[Sequence]:
    return [(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1-score']:.3f}",
             int(row["support"])) for name, row in per_name.items()]


def recipe_value(entry) -> Tuple[str, str]:
    """(value, source) of a recipe entry; a bare value has no source."""
    value, source = (entry.get("value"), entry.get("source", "")) if isinstance(entry, Mapping) else (entry, "")
    return (f"{value:.6g}" if isinstance(value, float) else str(value)), str(source or "")


def render_page(report: Mapping, images: Mapping[str, bytes], recipe: Optional[Mapping],
                title: Optional[str]) -> str:
    where = [str(report[k]) for k in ("dataset", "source", "split") if report.get(k)]
    title = title or " · ".join(where) or "run report"
    facts = [f"task: {report['task']}"] + [f"{k}: {report[k]}" for k in ("dataset", "source", "split", "model_dir")
                                            if report.get(k)]
    parts = [f'<h1>{escape(title)}</h1>\n<p class="sub">{escape(" | ".join(facts))}</p>\n',
             "<h2>Scores</h2>\n", table(("metric", "value"), headline(report)), "<h2>Training curves</h2>\n"]
    if "curves" in images:
        parts.append(image(images["curves"], "training and validation curves per epoch"))
    else:
        parts.append('<p class="note">No training history for this report.</p>\n')
    if report["task"] == CLASSIFICATION:
        parts += ["<h2>Confusion matrix</h2>\n<p>Rows: true label; columns: predicted label.</p>\n",
                  image(images["confusion_matrix"], "confusion matrix"), "<h2>Per-class scores</h2>\n",
                  table(("label", "precision", "recall", "F1", "support"), scores_rows(report["per_class"]))]
    elif report["task"] == REGRESSION:
        parts += ["<h2>Per-target scores</h2>\n",
                  table(("target", "Pearson", "Spearman", "MAE", "RMSE"),
                        [(name, *(f"{row[m]:.4f}" for m in ("pearson", "spearman", "mae", "rmse")))
                         for name, row in report["per_target"].items()])]
    elif report["task"] == NER:
        parts += ["<h2>Entity scores per type</h2>\n", image(images["entity_f1"], "entity scores per type"),
                  "<h2>Per-type scores</h2>\n",
                  table(("entity type", "precision", "recall", "F1", "support"), scores_rows(report["per_type"]))]
    if recipe:
        rows = [(name, *recipe_value(entry)) for name, entry in recipe.items()]
        parts += ["<h2>Recipe</h2>\n", table(("setting", "value", "source"), rows, numeric_from=3)]
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>\n{CSS}\n</style>\n</head>\n<body>\n{''.join(parts)}</body>\n</html>\n")
