"""Pictures of results people compare: evaluation metrics and merge-weight sweeps (matplotlib, no screen)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..fileio import atomic_write

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@10", "spearman", "pearson")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'flagstack[eval]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(result: Mapping[str, Any]) -> str:
    name = result.get("reranker") if result.get("task") == "rerank" else result.get("model")
    name = os.path.basename(str(name or "?").rstrip("/"))
    if result.get("task") == "retrieval" and result.get("reranker"):
        name += " + " + os.path.basename(str(result["reranker"]).rstrip("/"))
    return name


def plot_results(
    results: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], metrics: Sequence[str] | None = None
) -> list[str]:
    """A grouped bar chart: one group per metric, one bar per result (e.g. several ``--output`` files).
    Returns the metrics drawn; the PNG is written atomically."""
    png, wanted = render_results(results, metrics)
    with atomic_write(path, "wb") as handle:
        handle.write(png)
    return wanted


def render_results(
    results: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None
) -> tuple[bytes, list[str]]:
    """:func:`plot_results`' PNG as bytes (nothing written), and the metrics drawn."""
    if not results:
        raise ValueError("nothing to plot: give at least one result")
    wanted = list(metrics) if metrics else [m for m in DEFAULT_METRICS if any(m in r["metrics"] for r in results)]
    if not wanted:
        wanted = sorted({m for r in results for m in r["metrics"]})[:8]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(wanted) * max(1, len(results)) ** 0.5), 3.6))
    width = 0.8 / len(results)
    for i, result in enumerate(results):
        values = [float(result["metrics"].get(m, 0.0)) for m in wanted]
        positions = [j + (i - (len(results) - 1) / 2) * width for j in range(len(wanted))]
        bars = ax.bar(positions, values, width=width, label=_label(result))
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(range(len(wanted)), wanted)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(f"flagstack eval: {results[0].get('task', '')}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig, plt), wanted


def plot_curve(
    xs: Sequence[float], ys: Sequence[float], path: str | os.PathLike[str], xlabel: str, ylabel: str, title: str = ""
) -> None:
    """A line plot of ``ys`` against ``xs`` (e.g. a metric across merge weights), written atomically."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(list(xs), list(ys), marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = _png(fig, plt)
    with atomic_write(path, "wb") as handle:
        handle.write(png)


def _png(fig: Any, plt: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()
