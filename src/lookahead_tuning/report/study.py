"""A multi-seed study's tables and figures (docs/findings.md), from the summary ``experiment/summary.py``
computes out of the cell files (``lookahead-tuning study-summary CELLS_DIR ... --out DIR`` writes
``summary.json``, ``summary.md`` and four figures):

- ``safety_utility.png``: RSR and JSR against utility per method, with 95% intervals over seeds;
- ``m_sweep.png``: RSR / JSR against the preview length m (when swept);
- ``kl_vs_drop.png``: first-token KL(seed || model) against the refusal drop, one point per cell —
  does the paper's mechanism predict the outcome?
- ``forecast_vs_drop.png``: the seed's forecast (early-token loss per method) against the measured drop.

Rates are fractions in the JSON and percentages in the Markdown.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .. import markup


def m_sweep_lines(summary: dict[str, Any]) -> dict[tuple[str, str], list[dict]]:
    """The real-preview rows of each (folder, task) that covers at least two preview lengths, by m.

    Rows of different folders (learning rates, adapters) are different experiments: one line each,
    never joined."""
    lines: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in summary["groups"]:
        if r.get("m") is not None:
            lines[(r["group"], r["task"])].append(r)
    return {k: sorted(v, key=lambda r: r["m"]) for k, v in sorted(lines.items()) if len({r["m"] for r in v}) > 1}


def _pct(stat: dict | None) -> str:
    if not stat:
        return "–"
    text = f"{100 * stat['mean']:.2f}"
    if stat.get("ci95"):
        lo, hi = stat["ci95"]
        text += f" [{100 * lo:.2f}, {100 * hi:.2f}]"
    return text


def _p(test: dict | None) -> str:
    if not test:
        return "–"
    return f"{test['a_safe_b_unsafe']}/{test['a_unsafe_b_safe']}, p={test['p_value']:.3g}"


def markdown(summary: dict) -> str:
    """The tables of docs/findings.md (percentages, two decimals, 95% t-intervals over seeds)."""
    lines = ["| group | seed model RSR | JSR | utility | over-refusal |", "|---|---|---|---|---|"]
    for s in summary["seed_models"]:
        cells = [f"{100 * v:.2f}" if v is not None else "–" for v in (s["rsr"], s["jsr"], s["utility"],
                                                                       s["overrefusal"])]
        lines.append(f"| {markup.text(s['group'])} | " + " | ".join(cells) + " |")
    # Over-refusal and cost columns appear only where some row has them (older studies: unchanged tables).
    over = any("overrefusal" in r for r in summary["groups"])
    cost = any("cost_vs_vanilla" in r for r in summary["groups"])
    head = ["group", "method", "seeds", "RSR", "JSR", "utility"] + (["over-refusal"] if over else []) + [
        "RSR drop", "JSR drop", "KL pos 1", "vs vanilla RSR (b/c, p)", "vs vanilla JSR"] + (
        ["time / vanilla", "tokens / vanilla"] if cost else [])
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["groups"]:
        kl = r["kl1"]
        kl_text = "–" if not kl else f"{kl['mean']:.3f}" + (
            f" [{kl['ci95'][0]:.3f}, {kl['ci95'][1]:.3f}]" if kl.get("ci95") else "")
        vs = r.get("vs_vanilla") or {}
        ratio = r.get("cost_vs_vanilla") or {}
        cells = [markup.text(r["group"]), markup.text(r["name"]), str(len(r["seeds"])), _pct(r["rsr"]), _pct(r["jsr"]), _pct(r["utility"])]
        cells += [_pct(r.get("overrefusal"))] if over else []
        cells += [_pct(r.get("rsr_drop")), _pct(r.get("jsr_drop")), kl_text, _p(vs.get("rsr")), _p(vs.get("jsr"))]
        cells += [f"{ratio['time']:.3f}x" if ratio else "–", f"{ratio['tokens']:.3f}x" if ratio else "–"] if cost else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figures(summary: dict, out: Path) -> list[str]:
    """Write the study's figures; returns the file names written."""
    from ..analyse.plots import pyplot, save_figure, series_colors

    plt = pyplot()
    written: list[str] = []

    def finish(fig, name: str) -> None:
        save_figure(fig, out / name)
        plt.close(fig)
        written.append(name)

    base = [r for r in summary["groups"] if "@" not in r["name"] and r["utility"]]
    if base:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
        colours = series_colors(len(base))  # distinct past ten rows (a study of every method)
        for ax, key in zip(axes, ("rsr", "jsr"), strict=True):
            for r, colour in zip(base, colours, strict=True):
                if not r[key]:
                    continue
                x, y = 100 * r["utility"]["mean"], 100 * r[key]["mean"]
                xerr = None if not r["utility"].get("ci95") else [[x - 100 * r["utility"]["ci95"][0]],
                                                                  [100 * r["utility"]["ci95"][1] - x]]
                yerr = None if not r[key].get("ci95") else [[y - 100 * r[key]["ci95"][0]], [100 * r[key]["ci95"][1] - y]]
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3, color=colour,
                            label=markup.figure_text(f"{r['name']} ({r['group']})"))
            for s in summary["seed_models"]:
                if s[key] is not None and s["utility"] is not None:
                    ax.scatter(100 * s["utility"], 100 * s[key], marker="*", s=150, color="black")
            ax.set_xlabel("utility (%)")
            ax.set_ylabel(f"{key.upper()} (%)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle("Safety vs utility (mean over seeds, 95% t-intervals; star = seed model)")
        finish(fig, "safety_utility.png")
    lines = m_sweep_lines(summary)
    if lines:
        fig, ax = plt.subplots(figsize=(6, 4))
        several = len(lines) > 1
        for i, ((group, task), rows) in enumerate(lines.items()):
            tag = f" ({group}{'/' + task if len({t for _, t in lines}) > 1 else ''})" if several else ""
            for key, style in (("rsr", "o-"), ("jsr", "x--")):
                ax.plot([r["m"] for r in rows], [100 * r[key]["mean"] if r[key] else float("nan") for r in rows],
                        style, color=f"C{i % 10}", label=markup.figure_text(key.upper() + tag))
        if not several:
            ax.set_title(markup.figure_text(f"real preview, {'/'.join(next(iter(lines)))} (mean over seeds)"), fontsize=9)
        ax.set_xlabel("preview length m")
        ax.set_ylabel("safe rate (%)")
        ax.legend(fontsize=7 if several else None)
        ax.grid(alpha=0.3)
        finish(fig, "m_sweep.png")
    if summary["kl_points"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
        names = sorted({p["name"] for p in summary["kl_points"]})
        for ax, key in zip(axes, ("rsr_drop", "jsr_drop"), strict=True):
            for name, colour in zip(names, series_colors(len(names)), strict=True):
                pts = [p for p in summary["kl_points"] if p["name"] == name]
                ax.scatter([p["kl1"] for p in pts], [100 * p[key] for p in pts], label=markup.figure_text(name),
                           color=colour)
            ax.set_xlabel("KL(seed || model) at answer position 1 (nats)")
            ax.set_ylabel(f"{key.split('_')[0].upper()} drop vs seed (points)")
            ax.axhline(0, color="grey", lw=0.8)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle("Does the first-token shift predict the refusal drop? (one point per cell)")
        finish(fig, "kl_vs_drop.png")
    pairs = []
    for key, fc in summary["forecasts"].items():
        group = key.split("/")[0]
        per_method = fc.get("methods") or {}
        for r in summary["groups"]:
            if r["group"] == group and r["name"] in per_method and r.get("rsr_drop"):
                losses = per_method[r["name"]].get("mean_first_3")
                if losses is not None:
                    pairs.append((r["name"], group, float(losses), 100 * r["rsr_drop"]["mean"],
                                  100 * r["jsr_drop"]["mean"] if r.get("jsr_drop") else float("nan")))
    if pairs:
        # One colour per method (a legend, not labels on the points: cells of several groups share a
        # forecast, so their labels would sit on top of each other); a group tag only where needed.
        fig, ax = plt.subplots(figsize=(7, 4.5))
        methods = sorted({name for name, *_ in pairs})
        colours = {name: f"C{i % 10}" for i, name in enumerate(methods)}
        several_groups = len({group for _, group, *_ in pairs}) > 1
        placed: list[tuple[float, float]] = []  # tags already drawn, to stagger ones that would touch
        x_span = (max(p[2] for p in pairs) - min(p[2] for p in pairs)) or 1.0
        for name, group, loss, rsr_drop, jsr_drop in sorted(pairs, key=lambda p: (p[2], p[3])):
            ax.scatter(loss, rsr_drop, marker="o", color=colours[name])
            ax.scatter(loss, jsr_drop, marker="x", color=colours[name])
            if several_groups:
                near = sum(1 for x, y in placed if abs(x - loss) < 0.05 * x_span and abs(y - rsr_drop) < 2.0)
                placed.append((loss, rsr_drop))
                ax.annotate(markup.figure_text(group), (loss, rsr_drop), xytext=(4, -7 * near), textcoords="offset points",
                            fontsize=6, va="center")
        for name in methods:
            ax.scatter([], [], marker="s", color=colours[name], label=markup.figure_text(name))
        ax.legend(fontsize=7)
        ax.set_xlabel("forecast: seed's mean loss at answer positions 1-3 (nats)")
        ax.set_ylabel("measured drop vs seed (points; o RSR, x JSR)")
        ax.grid(alpha=0.3)
        finish(fig, "forecast_vs_drop.png")
    return written
