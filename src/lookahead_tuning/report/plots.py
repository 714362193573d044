"""The report's figures, drawn from ``results.json`` alone.

- Figure 3 analog: per-position KL(seed || model) on harmful answers, one bar per method
  (drawn by :func:`analyse.kl.plot_kl`, the same chart ``analyze kl`` makes).
- Prefill-depth curves: the safe rate against the number of prefilled harmful tokens, one line per
  method (the seed's included): the other view of "how deep is the alignment" beside the KL bars.
- Figure 4 analogs: RSR / JSR / utility along each method's sweep axes (methods.py: the preview
  length m of lookahead-real, the prefix string of lookahead-virtual), with interval bars when
  several seeds ran.
- Poisoned data: RSR / JSR / utility against the poison ratio (a data axis, every method swept along
  it), a panel per metric and a line per method, each point with its interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import markup

# One figure backend and one atomic PNG writer for the whole package (Agg, temp file + rename).
from ..analyse.plots import pyplot, save_figure
from ..methods import SEED_ROW, SweepAxis
from .tables import _name_key, data_axis_rows, row_label, sweep_rows

SERIES = (("utility", "Utility"), ("rsr", "RSR"), ("jsr", "JSR"))


def kl_figure(results: dict, path: str | Path) -> bool:
    """Per-position KL bars for every tuned table row (the seed has none), labelled from the registry;
    ``False`` when there is nothing to draw."""
    from ..analyse.kl import plot_kl

    series = {row_label(n): [float("nan") if v is None else v for v in e["kl"]]
              for n, e in sorted(results.get("models", {}).items(), key=lambda kv: _name_key(kv[0])) if e.get("kl")}
    if not series:
        return False
    plot_kl(series, path)
    return True


def depth_figure(results: dict, path: str | Path) -> bool:
    """Every table row's prefill-depth curve (the seed's included) in one figure; ``False`` when no row
    measured one."""
    from ..analyse.plots import depth_curves

    series = {row_label(n): (e["depths"]["k"], [None if v is None else 100 * v for v in e["depths"]["mean"]])
              for n, e in sorted(results.get("models", {}).items(), key=lambda kv: _name_key(kv[0]))
              if e.get("depths")}
    if not series:
        return False
    depth_curves(series, path, title="Safe rate against the depth of the prefilling attack (primary task)")
    return True


def _errors(rows: list[tuple[Any, dict]], metric: str) -> tuple[list[float], list[list[float]] | None]:
    values = [100 * (e.get(metric) or 0.0) for _, e in rows]
    cis = [(e.get("ci95") or {}).get(metric) for _, e in rows]
    if not any(ci and (e.get("n_seeds") or 1) > 1 for ci, (_, e) in zip(cis, rows, strict=True)):
        return values, None
    lo = [max(0.0, v - 100 * ci[0]) if ci else 0.0 for v, ci in zip(values, cis, strict=True)]
    hi = [max(0.0, 100 * ci[1] - v) if ci else 0.0 for v, ci in zip(values, cis, strict=True)]
    return values, [lo, hi]


def sweep_figure(results: dict, method: str, axis: SweepAxis, path: str | Path) -> bool:
    """Utility, RSR and JSR (percent) along one of ``method``'s sweep axes: a line per metric against a
    numeric axis (with the seed's rates as lines), grouped bars per value otherwise; ``False`` when
    fewer than two points ran."""
    rows = sweep_rows(results, method, axis.key)
    if len(rows) < 2:
        return False
    plt = pyplot()
    if axis.numeric:
        fig, ax = plt.subplots(figsize=(6.5, 4.0))
        xs = [value for value, _ in rows]
        for metric, label in SERIES:
            if all(e.get(metric) is None for _, e in rows):
                continue
            ys, err = _errors(rows, metric)
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{method} {label}")
        seed = results.get("models", {}).get(SEED_ROW, {})
        for metric, label in SERIES[1:]:
            if seed.get(metric) is not None:
                ax.axhline(100 * seed[metric], linestyle=":", linewidth=1, color="grey")
                ax.annotate(f"seed {label}", (xs[-1], 100 * seed[metric]), fontsize=7, color="grey")
        if axis.log2:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel(axis.axis_label)
        ax.grid(alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(max(6.5, 2.2 * len(rows)), 4.0))
        width = 0.8 / len(SERIES)
        for j, (metric, label) in enumerate(SERIES):
            ys, err = _errors(rows, metric)
            xs = [i + (j - 1) * width for i in range(len(rows))]
            ax.bar(xs, ys, width=width, yerr=err, capsize=3, label=label)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([markup.figure_text(_short(str(v))) for v, _ in rows], fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    ax.set_ylabel("percent")
    ax.set_ylim(0, 100)
    ax.set_title(axis.caption, fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
    return True


def data_axis_figure(results: dict, axis: SweepAxis, path: str | Path) -> bool:
    """Utility, RSR and JSR (percent) against a numeric data axis (the poison ratio), one panel each and a
    line per method, every point with its interval (the entry's: Wilson for one seed, t over seeds);
    the seed's rates as dotted lines. ``False`` when no method has two values to draw."""
    found = {m: rows for m, rows in data_axis_rows(results, axis.key).items() if len(rows) >= 2}
    if not axis.numeric or not found:
        return False
    plt = pyplot()
    fig, panels = plt.subplots(1, len(SERIES), figsize=(13.0, 4.0), sharey=True)
    seed = results.get("models", {}).get(SEED_ROW, {})
    for ax, (metric, label) in zip(panels, SERIES, strict=True):
        for method, rows in found.items():
            xs = [value for value, _ in rows]
            ys = [100 * (e.get(metric) or 0.0) for _, e in rows]
            cis = [(e.get("ci95") or {}).get(metric) for _, e in rows]
            err = [[max(0.0, y - 100 * ci[0]) if ci else 0.0 for y, ci in zip(ys, cis, strict=True)],
                   [max(0.0, 100 * ci[1] - y) if ci else 0.0 for y, ci in zip(ys, cis, strict=True)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=markup.figure_text(row_label(method)))
        if metric != "utility" and seed.get(metric) is not None:
            ax.axhline(100 * seed[metric], linestyle=":", linewidth=1, color="grey", label="seed")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(axis.axis_label, fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("percent")
    panels[-1].legend(fontsize=7)
    fig.suptitle(axis.caption, fontsize=10)
    save_figure(fig, path)
    plt.close(fig)
    return True


def _short(text: str, width: int = 28) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"
