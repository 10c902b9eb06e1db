"""Small helpers shared by the benchmarks: threads, interleaved timing, ratio tables, JSON.

Why interleaving: the benchmark machine (2 cores) is shared, so a slow
minute hits whichever engine happens to run in it. Every comparison here
runs all engines in the same process, alternating in small blocks with a
rotating order, and reports ratios against a baseline from that same run.
Process CPU time is recorded next to wall time because it is less
sensitive to other jobs' load (it does include the engines' spin-waiting).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence


def cpu_count() -> int:
    """Cores this process may run on (what the frameworks would use by default)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_tf_threads(threads: int) -> None:
    """Give TensorFlow ``threads`` intra-op and inter-op threads (call before any TF op runs)."""
    from tfpipeline.training.strategy import set_tf_threads

    set_tf_threads(threads, threads)


class Stopwatch:
    """Wall and process-CPU seconds of a ``with`` block."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        return False


def interleaved(calls: Dict[str, Callable[[int], object]], count: int, *, block: int = 1,
                warmup: int = 2) -> Dict[str, Dict[str, list]]:
    """Time ``calls[name](i)`` for i in range(count), alternating engines in blocks of ``block`` calls.

    The order of engines rotates every block so none always runs right after
    the same neighbour. Returns {name: {"wall": [s, ...], "cpu": [s, ...]}}.
    """
    names = list(calls)
    for name in names:                         # first calls pay for lazy initialisation
        for i in range(min(warmup, count)):
            calls[name](i)
    times = {name: {"wall": [], "cpu": []} for name in names}
    for round_index, start in enumerate(range(0, count, block)):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            for i in range(start, min(start + block, count)):
                with Stopwatch() as sw:
                    calls[name](i)
                times[name]["wall"].append(sw.wall)
                times[name]["cpu"].append(sw.cpu)
    return times


def summarize(seconds: Sequence[float], items_per_call: Optional[Sequence[int]] = None) -> dict:
    """Latency percentiles (ms) and throughput (items/s) of a list of per-call timings."""
    ordered = sorted(seconds)
    total = sum(seconds)

    def pct(p: float) -> float:
        return 1000.0 * ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]

    items = sum(items_per_call) if items_per_call is not None else len(seconds)
    return {"calls": len(seconds), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
            "mean_ms": 1000.0 * statistics.fmean(seconds), "items_per_s": items / total if total else 0.0}


def ratio_rows(section: str, metric: str, values: Dict[str, float], baseline: str, *,
               higher_is_better: bool) -> List[dict]:
    """Rows ``value / baseline`` oriented so that > 1.0 always means "better than the baseline"."""
    base = values[baseline]
    rows = []
    for engine, value in values.items():
        if higher_is_better:
            ratio = value / base if base else float("nan")
        else:
            ratio = base / value if value else float("nan")
        rows.append({"section": section, "metric": metric, "engine": engine, "value": value,
                     "baseline": baseline, "ratio": ratio, "higher_is_better": higher_is_better})
    return rows


def print_ratio_table(rows: Sequence[dict], title: str = "", group_by: Optional[str] = None) -> str:
    """Print (and return) rows as a fixed-width table; ratio > 1.0 = better than the baseline.

    With ``group_by`` (a row key), a blank line separates rows whose value of that key differs.
    """
    lines = []
    if title:
        lines.append(title)
    width = max([26] + [len(r["section"]) + 2 for r in rows])
    lines.append(f"{'section':<{width}}{'metric':<26}{'engine':<34}{'value':>12}{'vs baseline':>13}")
    for i, r in enumerate(rows):
        if group_by and i and r.get(group_by) != rows[i - 1].get(group_by):
            lines.append("")
        mark = "  (baseline)" if r["engine"] == r["baseline"] else ""
        lines.append(f"{r['section']:<{width}}{r['metric'][:25]:<26}{r['engine'][:33]:<34}"
                     f"{r['value']:>12.4g}{r['ratio']:>12.2f}x{mark}")
    lines.append("(vs baseline > 1.0 = better than the baseline: faster, lower latency or more accurate)")
    text = "\n".join(lines)
    print(text)
    return text


def machine_info() -> dict:
    """What the numbers were measured on, including the load other jobs put on the machine."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": cpu_count()}
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def write_json(path: str, data: dict) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
    return path


def plot_ratios(rows: Sequence[dict], path: str, title: str) -> Optional[str]:
    """Horizontal bar chart of ``ratio`` per row (log scale, 1.0 = baseline); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    rows = [r for r in rows if isinstance(r.get("ratio"), (int, float)) and math.isfinite(r["ratio"])
            and r["ratio"] > 0]                     # a log axis has no place for nan / 0 ratios
    if not rows:
        return None
    labels = [f"{r['section']} | {r['metric']} | {r['engine']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    colors = ["#888888" if r["engine"] == r["baseline"] else ("#2a9d8f" if r["ratio"] >= 1 else "#e76f51")
              for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.38 * len(rows) + 1.6))
    ax.barh(range(len(rows)), ratios, color=colors)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    low, high = min(ratios + [1.0]), max(ratios + [1.0])
    ax.set_xlim(low / 1.25, high * 1.6)          # room for the value labels right of the longest bar
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    # over more than ~1.5 decades label only the 2x and 5x minor ticks (all of them would overlap)
    sparse = matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain if high / low < 30 else sparse)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for y, value in enumerate(ratios):
        ax.text(value, y, f" {value:.2f}x", va="center", fontsize=7)
    ax.set_xlabel("vs baseline (log scale; > 1 = better than the baseline)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def replace_readme_block(readme: str, start: str, end: str, lines: Sequence[str]) -> None:
    """Replace the lines between a README's ``start`` and ``end`` marker comments (they must exist)."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: no {start} ... {end} block to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(head + "\n".join([start, *lines, end]) + tail)
