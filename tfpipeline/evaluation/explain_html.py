"""A page a person can read: the explained texts with every word coloured by its attribution.

``tfpipeline.evaluation.explain`` returns JSON-ready dicts for programs; this
renders them for people. Like ``report.html`` the page is self-contained (inline
CSS, no script, no external URL), so it opens offline and can be mailed. Red
words raise the explained score, blue words lower it; the colour's strength is
the word's |attribution| relative to the largest one of that explanation (a
legend says so), and hovering a word shows its value; for NER the words of the
entity being explained are underlined. Every string that comes
from the user or the model (texts, labels, entity types, word pieces) is
HTML-escaped.
"""
from __future__ import annotations

import os
from html import escape
from typing import Collection, List, Sequence

from tfpipeline.errors import ConfigError

TITLE = "Integrated Gradients explanations"
RAISES, LOWERS = (214, 39, 40), (31, 119, 180)    # red raises the explained score, blue lowers it
MAX_ALPHA = 0.85
UNDERLINE = "border-bottom:2px solid #222"
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
h1{margin-bottom:.2em}.sub{color:#555;margin-top:0}section{border-top:1px solid #ddd;padding:.5em 0 1em}
.text{font-size:1.15em;line-height:2;white-space:pre-wrap}.w{border-radius:.2em;padding:.05em .1em}
.legend{display:flex;align-items:center;gap:.6em;margin:1em 0}.bar{width:16em;height:1em;border:1px solid #ccc;
background:linear-gradient(to right,rgba(31,119,180,.85),#fff,rgba(214,39,40,.85))}
.meta{color:#555;font-size:.9em}table{border-collapse:collapse;margin:.3em 0}
th,td{border:1px solid #ccc;padding:.15em .5em;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}"""


def word_style(value: float, largest: float) -> str:
    """Inline background colour of a word: red for positive, blue for negative, alpha by relative magnitude."""
    if largest <= 0 or value == 0:
        return "background:none"
    red, green, blue = RAISES if value > 0 else LOWERS
    alpha = MAX_ALPHA * min(1.0, abs(value) / largest)
    return f"background:rgba({red},{green},{blue},{alpha:.3f})"


def coloured_text(text: str, words: Sequence[dict], attributions: Sequence[float],
                  underlined: Collection[int] = ()) -> str:
    """The text as HTML, each word in a span coloured by its attribution; the characters between words kept.

    ``underlined`` words (the NER entity being explained) are underlined.
    """
    largest = max((abs(a) for a in attributions), default=0.0)
    parts, cursor = [], 0
    for index, (word, value) in enumerate(zip(words, attributions)):
        parts.append(escape(text[cursor:word["start"]]))
        style = word_style(value, largest) + (";" + UNDERLINE if index in underlined else "")
        parts.append(f'<span class="w" style="{style}" title="{escape(word["text"])}: {value:+.4f}">'
                     f'{escape(text[word["start"]:word["end"]])}</span>')
        cursor = word["end"]
    parts.append(escape(text[cursor:]))
    return "".join(parts)


def legend() -> str:
    return ('<div class="legend"><span>lowers the score</span><span class="bar"></span>'
            '<span>raises the score</span><span class="meta">(strength: |attribution| relative to the '
            "explanation's largest; hover a word for its value)</span></div>")


def prediction_html(result: dict) -> str:
    prediction = result["prediction"]
    if "label" in prediction:
        return f"predicted <b>{escape(prediction['label'])}</b> ({prediction['score']:.3f})"
    entities = ", ".join(f"{escape(e['text'])} [{escape(e['type'])}]" for e in prediction.get("entities", []))
    return f"entities: {entities or 'none'}"


def target_html(explanation: dict) -> str:
    entity = explanation.get("entity")
    if entity:
        return f"entity <b>{escape(entity['text'])}</b> [{escape(entity['type'])}]"
    return f"<b>{escape(explanation['target'])}</b>"


def word_table(result: dict, explanation: dict) -> str:
    rows = sorted(zip(result["words"], explanation["word_attributions"]), key=lambda pair: -abs(pair[1]))
    body = "".join(f'<tr><td>{escape(w["text"])}</td><td class="num">{a:+.4f}</td></tr>' for w, a in rows)
    return (f"<details><summary>all {len(rows)} words by |attribution|</summary>"
            f"<table><tr><th>word</th><th>attribution</th></tr>{body}</table></details>")


def explanation_html(result: dict, explanation: dict) -> str:
    text = coloured_text(result["text"], result["words"], explanation["word_attributions"],
                         explanation.get("entity", {}).get("words", ()))
    scores = (f"score {explanation['score']:.4f}, baseline {explanation['baseline_score']:.4f}, "
              f"attributions sum {explanation['attribution_sum']:+.4f}, completeness gap "
              f"{explanation['completeness_gap']:+.2e}")
    return (f"<p>explaining {target_html(explanation)} <span class=\"meta\">{scores}</span></p>"
            f'<p class="text">{text}</p>{word_table(result, explanation)}')


def result_html(index: int, result: dict) -> str:
    parts = [f"<section><h2>Text {index + 1}</h2><p>{prediction_html(result)}</p>"]
    if result.get("truncated"):
        parts.append('<p class="meta">Truncated to the model\'s max length: later words get no attribution.</p>')
    if not result["explanations"]:
        parts.append(f'<p class="text">{escape(result["text"])}</p><p class="meta">Nothing to explain.</p>')
    parts += [explanation_html(result, explanation) for explanation in result["explanations"]]
    return "".join(parts) + "</section>"


def settings_line(results: Sequence[dict]) -> str:
    settings = results[0].get("integrated_gradients", {}) if results else {}
    described = ", ".join(f"{k} {escape(str(v))}" for k, v in settings.items())
    return f"Integrated Gradients over the input embeddings ({described})" if described else ""


def render_explanations_html(results: Sequence[dict], *, title: str = TITLE) -> str:
    """The whole page (a string) for ``explain``'s results."""
    sections: List[str] = [result_html(i, result) for i, result in enumerate(results)]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
            f'<p class="sub">{settings_line(results)}</p>{legend()}{"".join(sections)}</body></html>\n')


def write_explanations_html(path: str, results: Sequence[dict], *, title: str = TITLE) -> str:
    """Write the page to ``path`` (ending in .html; its folder is created); return the path."""
    if not path.lower().endswith(".html"):
        raise ConfigError(f"explanations page must be a path ending in .html, got {path!r}")
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_explanations_html(results, title=title))
    return path
