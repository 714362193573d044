"""From cell results to a run's ``results.json`` (and ``results.csv``), which ``report/`` renders.

The document's contract is in docs/ARCHITECTURE.md: rates are fractions in 0..1; each table row
(``models``) and sweep point (``sweeps``) holds the primary task's metrics at the top and every task's
under ``by_task``; means and intervals over training seeds come from :func:`.cells.over_seeds`.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..analyse.stats import mean_present
from ..data.tasks import get_task
from ..methods import DATA_AXES, SEED_ROW, sweep_axes
from ..report.tables import METRICS, OVERREFUSAL, _name_key
from .cells import CellResult, over_seeds
from .plan import sweep_values


def _mean_lists(lists: Sequence[Sequence[float | None] | None]) -> list[float | None] | None:
    lists = [x for x in lists if x]
    if not lists:
        return None
    width = max(len(x) for x in lists)
    return [mean_present(x[i] if i < len(x) else None for x in lists) for i in range(width)]


def aggregate_entry(cells: list[CellResult]) -> dict[str, Any]:
    """One table row from its cells (one per training seed): means, per-seed values and intervals.

    With one seed the interval is the run's own (Wilson for rates, as the evaluation reported it);
    with several it is a 95% Student-t interval over the seeds' values (:func:`.cells.over_seeds`).
    """
    cells = sorted(cells, key=lambda c: c.seed)
    entry: dict[str, Any] = {"method": cells[0].method, "sweep": cells[0].sweep,
                             "seeds": [c.seed for c in cells], "n_seeds": len(cells),
                             "cells": [c.cell_id for c in cells], "per_seed": {}, "ci95": {}}
    for metric in (*METRICS, OVERREFUSAL):
        values, stats = over_seeds(cells, metric)
        entry["per_seed"][metric] = values
        entry[metric] = None if stats is None else stats["mean"]
        entry["ci95"][metric] = None if stats is None else stats["ci95"]
    entry["interval"] = "t over seeds" if len(cells) > 1 else "per run (Wilson for rates)"
    entry["kl"] = _mean_lists([c.kl for c in cells])
    if any(c.depths for c in cells):  # absent without a depth curve: older results stay byte for byte
        entry["depths"] = depth_curve(cells)
    costs = [c.cost for c in cells]
    trained = cells[0].method != SEED_ROW
    entry["train_seconds"] = mean_present(c.get("train_seconds") for c in costs) if trained else 0.0
    entry["tokens_trained"] = mean_present((c.get("tokens_seen") or {}).get("total") for c in costs) if trained else 0
    entry["answer_tokens_trained"] = (mean_present((c.get("tokens_seen") or {}).get("answer") for c in costs)
                                      if trained else 0)
    entry["peak_rss_mb"] = max((c["peak_rss_mb"] for c in costs if c.get("peak_rss_mb")), default=None)
    entry["peak_cuda_mb"] = max((c["peak_cuda_mb"] for c in costs if c.get("peak_cuda_mb")), default=None)
    entry["utility_metric"] = next((c.block("utility").get("metric") for c in cells if c.block("utility")), None)
    entry["instruments"] = instrument_means(cells)
    if any(c.agreement(m) for c in cells for m in SAFETY_METRICS):
        entry["agreement"] = judge_agreement(cells)
    return entry


SAFETY_METRICS = ("rsr", "jsr")


def judge_agreement(cells: list[CellResult]) -> dict[str, dict[str, Any]]:
    """``{metric: {"judges": {judge: {rate, k, n, ci95}}, "pairs": {"A vs B": {...}}}}`` over the cells
    (the training seeds): each judge's safe rate with its Wilson interval on the answers of every seed
    pooled, and each pair's pooled verdict table, flip counts and Cohen's kappa."""
    from ..analyse.stats import cohen_kappa, rate_with_ci

    out: dict[str, dict[str, Any]] = {}
    for metric in SAFETY_METRICS:
        names = [n for n in dict.fromkeys(n for c in cells for n in c.instrument_names(metric))]
        pairs: dict[str, dict[str, Any]] = {}
        for c in cells:
            for pair, row in c.agreement(metric).items():
                into = pairs.setdefault(pair, {})
                for k, v in row.items():
                    if k != "kappa" and isinstance(v, int):
                        into[k] = into.get(k, 0) + v
        if not pairs:
            continue
        for pair, row in pairs.items():
            a, b = pair.split(" vs ")
            row["kappa"] = cohen_kappa({"both": row.get("both_safe", 0), "neither": row.get("both_unsafe", 0),
                                        "only_first": row.get(f"only_{a}_safe", 0),
                                        "only_second": row.get(f"only_{b}_safe", 0)})
        judges = {}
        for name in names:
            blocks = [c.instrument_block(metric, name) for c in cells]
            k = sum(b.get("k") or 0 for b in blocks)
            n = sum(b.get("n") or 0 for b in blocks)
            judges[name] = rate_with_ci(k, n)
        out[metric] = {"judges": judges, "pairs": pairs}
    return out


def judge_order_flips(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every case of two judges ordering two table rows differently on RSR or JSR (one rate higher under
    one judge, lower under the other; ties are not flips): conclusions that depend on the judge."""
    flips = []
    names = sorted(models, key=_name_key)
    for metric in SAFETY_METRICS:
        rates = {m: {j: v["rate"] for j, v in ((models[m].get("agreement") or {}).get(metric) or {})
                     .get("judges", {}).items() if v.get("rate") is not None} for m in names}
        judges = list(dict.fromkeys(j for m in names for j in rates[m]))
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                for x, a in enumerate(judges):
                    for b in judges[x + 1:]:
                        if not all(j in rates[m] for j in (a, b) for m in (first, second)):
                            continue
                        da = rates[first][a] - rates[second][a]
                        db = rates[first][b] - rates[second][b]
                        if da * db < 0:
                            flips.append({"metric": metric, "methods": [first, second], "judges": [a, b],
                                          "rates": {a: [rates[first][a], rates[second][a]],
                                                    b: [rates[first][b], rates[second][b]]}})
    return flips


def depth_curve(cells: list[CellResult]) -> dict[str, list]:
    """The row's prefill-depth curve: for each k measured, the mean safe rate over training seeds and its
    interval (:func:`.cells.over_seeds`' rule: t over seeds, or the one run's Wilson interval)."""
    from ..analyse.stats import mean_ci

    ks = sorted({k for c in cells for k in c.depths})
    means, intervals = [], []
    for k in ks:
        values = [c.depths[k] for c in cells if c.depths.get(k) is not None]
        stats = mean_ci(values) if values else None
        means.append(None if stats is None else stats["mean"])
        if stats is not None and stats["ci95"] is None and len(values) == 1:
            point = next(p for c in cells for p in c.data["depths"] if p["k"] == k and p.get("safe_rate") is not None)
            intervals.append(point.get("ci95"))
        else:
            intervals.append(None if stats is None else stats["ci95"])
    return {"k": ks, "mean": means, "ci95": intervals, "n_seeds": [sum(c.depths.get(k) is not None for c in cells)
                                                                     for k in ks]}


def instrument_means(cells: list[CellResult]) -> dict[str, dict[str, float | None]]:
    """``{metric: {judge or scorer: mean over the cells}}`` from the cells' ``instruments`` (cells made
    before every instrument was recorded contribute nothing)."""
    out: dict[str, dict[str, float | None]] = {}
    for metric in METRICS:
        names: list[str] = []
        for c in cells:
            for name in c.instrument_names(metric):
                if name not in names:
                    names.append(name)
        out[metric] = {name: mean_present(c.instrument(metric, name) for c in cells) for name in names}
    return out


def aggregate(cell_results: Iterable[CellResult], primary_task: str, task_order: Sequence[str] | None = None
              ) -> dict[str, dict[str, Any]]:
    """``{"models": {NAME: entry}, "sweeps": {NAME@x: entry}}`` from cell results.

    An entry's top-level metrics are the primary task's; ``by_task`` holds every task's.
    """
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for cell in cell_results:
        groups.setdefault((cell.name, cell.task), []).append(cell)
    tasks = list(task_order or sorted({t for _, t in groups}))
    out: dict[str, dict[str, Any]] = {"models": {}, "sweeps": {}}
    names = sorted({n for n, _ in groups}, key=_name_key)
    for name in names:
        by_task = {t: aggregate_entry(groups[(name, t)]) for t in tasks if (name, t) in groups}
        main = by_task.get(primary_task) or next(iter(by_task.values()))
        entry = {**main, "by_task": by_task}
        out["sweeps" if "@" in name else "models"][name] = entry
    return out


PACKAGES = ("lookahead-tuning", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed")


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that decide the numbers."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machines(done: list) -> list[dict[str, Any]]:
    """The machines the cells were computed on, as their provenance records them (once each)."""
    seen: list[dict[str, Any]] = []
    for cell in done:
        record = (cell.data.get("provenance") or {}).get("machine")
        if record and record not in seen:
            seen.append(record)
    return seen


def build_results(cfg, cells: list, cell_results: dict[str, dict], *, forecasts: dict | None = None,
                  links: dict[str, str] | None = None, command: list[str] | None = None,
                  config_text: str | None = None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """The ``results.json`` document (its contract is in docs/ARCHITECTURE.md)."""
    from ..train.config import TrainConfig

    done = [CellResult(cell_results[c.cell_id]) for c in cells if c.cell_id in cell_results]
    primary = cfg.tasks[0].name
    grouped = aggregate(done, primary, [t.name for t in cfg.tasks])
    links = links or {}
    for name, entry in grouped["models"].items():
        entry["model"] = links.get(name)
    sweep_base: dict[str, dict[str, Any]] = {}
    owned = [(method, key) for key, (method, _) in sweep_axes().items()]
    for method, key in owned + [(m.name, axis.key) for axis in DATA_AXES for m in cfg.methods]:
        spec = cfg.method(method)
        if spec is not None and sweep_values(cfg, method, key):
            value = {**cfg.train, **spec.overrides}.get(key, TrainConfig.model_fields[key].default)
            if value is not None:  # a table cell with no value of the axis (no poison_count) is no point of it
                sweep_base.setdefault(method, {})[key] = value
    ev = cfg.eval
    rerun = ["lookahead-tuning", "run", "config.yaml"] + (["--out", str(run_dir)] if run_dir else [])
    agreement = {} if not any("agreement" in e for e in grouped["models"].values()) else \
        {"judge_order_flips": judge_order_flips(grouped["models"])}
    return {
        "name": cfg.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "primary_task": primary,
        "tasks": [{"name": t.name, "kind": t.kind,
                   "metric": get_task(t.kind).metric,
                   "n_train": t.n_train, "n_test": t.n_test} for t in cfg.tasks],
        "seeds": list(cfg.seeds),
        "planned_cells": len(cells),
        "finished_cells": len(done),
        "models": grouped["models"],
        "sweeps": grouped["sweeps"],
        **agreement,
        "sweep_base": sweep_base,
        "forecast": forecasts or {},
        "evaluation": {"safety_set": ev.safety or "built-in held-out harmful set", "judge": ev.judge,
                       "scorer": ev.scorer,
                       "prefill_tokens": ev.prefill_tokens, "max_new_tokens": ev.max_new_tokens,
                       "limit": ev.limit, "decoding": "greedy",
                       "n_safety": next((r.block("rsr")["n"] for r in done if r.block("rsr")), None)},
        "seed_model": cfg.model.identity(),
        "seed_weights": next((c.seed_weights for c in done if c.seed_weights), None),
        "machines": machines(done),
        "environment": versions(),
        "commands": {"ran": shlex.join(command) if command else None, "rerun": shlex.join(rerun)},
        "config": config_text,
    }


def results_rows(cell_results: list[CellResult]) -> list[dict[str, Any]]:
    """``results.csv``: one flat row per cell (same columns for every row)."""
    width = max((len(c.kl or []) for c in cell_results), default=0)
    # The methods' axes are columns of every file; a data axis only where a cell sets it (files of runs
    # without poisoning keep their columns).
    keys = [*sweep_axes(), *(axis.key for axis in DATA_AXES
                             if any(c.sweep.get(axis.key, c.train.get(axis.key)) is not None for c in cell_results))]
    rows = []
    for c in cell_results:
        cost = c.cost
        tokens = cost.get("tokens_seen") or {}
        row: dict[str, Any] = {
            "cell_id": c.cell_id, "task": c.task, "name": c.name, "method": c.method,
            "seed": c.seed, **{key: c.sweep.get(key, c.train.get(key)) for key in keys},
        }
        for metric in ("rsr", "jsr", "utility", "overrefusal"):
            ci = c.interval(metric) or [None, None]
            row[metric] = c.value(metric)
            row[f"{metric}_lo"], row[f"{metric}_hi"] = ci[0], ci[1]
        row.update({"train_seconds": cost.get("train_seconds"), "tokens_trained": tokens.get("total"),
                    "answer_tokens": tokens.get("answer"), "peak_rss_mb": cost.get("peak_rss_mb"),
                    "cell_seconds": c.data.get("cell_seconds")})
        kl = c.kl or []
        for i in range(width):
            row[f"kl_{i + 1}"] = kl[i] if i < len(kl) else None
        rows.append(row)
    return rows


def write_outputs(run_dir: Path, cfg, cells: list, cell_results: dict[str, dict], *, forecasts: dict | None = None,
                  links: dict[str, str] | None = None, command: list[str] | None = None,
                  config_text: str | None = None) -> dict[str, Any]:
    """Write results.json, results.csv, figures/ and report.md into ``run_dir``; returns results.json."""
    from ..io import atomic_write_json, atomic_write_text, write_records
    from ..report.writer import draw_figures, render_report

    run_dir = Path(run_dir)
    results = build_results(cfg, cells, cell_results, forecasts=forecasts, links=links, command=command,
                            config_text=config_text, run_dir=run_dir)
    atomic_write_json(run_dir / "results.json", results)
    done = [CellResult(cell_results[c.cell_id]) for c in cells if c.cell_id in cell_results]
    if done:
        write_records(run_dir / "results.csv", results_rows(done))
    figures = draw_figures(results, run_dir)
    atomic_write_text(run_dir / "report.md", render_report(results, figures))
    return results
