"""Charts for the analyses (matplotlib, Agg backend: no display needed, safe in CI and on servers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

# Series names are user text (method and sweep names): never mathtext.
from ..markup import figure_text


def pyplot():
    """matplotlib's pyplot on the headless Agg backend (no display on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Write the PNG through the package's one atomic writer (``io.atomic_write``): a killed run never
    leaves half a file, and the file gets the umask's permissions like every other output."""
    from ..io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"))


def series_colors(n: int) -> list:
    """``n`` distinct colours: matplotlib's tab10 up to ten series; up to twenty, tab20's ten dark shades and then
    its ten light ones (so neighbouring bars never get two shades of one hue); past that a continuous map."""
    plt = pyplot()
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in (*range(0, 20, 2), *range(1, 20, 2))[:n]]
    return [plt.get_cmap("viridis")(i / (n - 1)) for i in range(n)]


def grouped_bars(series: dict[str, Sequence[float]], path: str | Path, *, xlabel: str, ylabel: str,
                 title: str = "") -> None:
    """One group of bars per position (1..k), one bar per series, each series its own colour; NaN values are
    left out. Past four series the legend moves outside the axes so it never covers the bars."""
    plt = pyplot()
    names = list(series)
    k = max((len(v) for v in series.values()), default=0)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * k + 2, 0.12 * k * len(names) + 2), 4.0))
    for j, (name, color) in enumerate(zip(names, series_colors(len(names)), strict=True)):
        xs = [i + 1 + (j - (len(names) - 1) / 2) * width for i in range(len(series[name]))]
        ys = [0.0 if v is None or math.isnan(v) else v for v in series[name]]
        ax.bar(xs, ys, width=width, label=figure_text(name), color=color)
    ax.set_xticks(range(1, k + 1))
    _label(ax, len(names), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def _label(ax, n_series: int, *, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, the title and the legend; past four series the legend moves outside the axes so it
    never covers the data."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if n_series > 4:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=8)


def position_lines(series: dict[str, Sequence[float]], path: str | Path, *, xlabel: str, ylabel: str,
                   title: str = "") -> None:
    """One line per series over positions 1..k (the forecast's loss profile)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=figure_text(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def depth_curves(series: dict[str, tuple[Sequence[int], Sequence[float | None]]], path: str | Path, *,
                 ylabel: str = "safe rate [%]", title: str = "") -> None:
    """One line per series: a rate (in percent) against the number of prefilled harmful tokens. The x axis
    is symmetric-log, so k = 0 (no prefill) and the deep prefills both stay readable."""
    plt = pyplot()
    names = list(series)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for name, color in zip(names, series_colors(len(names)), strict=True):
        ks, values = series[name]
        shown = [(k, v) for k, v in zip(ks, values, strict=True) if v is not None and not math.isnan(v)]
        ax.plot([k for k, _ in shown], [v for _, v in shown], marker="o", label=figure_text(name), color=color)
    ks = sorted({k for xs, _ in series.values() for k in xs})
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_ylim(-2, 102)
    _label(ax, len(names), xlabel="prefilled harmful-answer tokens k", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)
