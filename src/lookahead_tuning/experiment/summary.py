"""A multi-seed study's summary from its cell files (``lookahead-tuning study-summary``): cells that
differ only in their training seed are grouped per folder (a learning rate, an adapter), averaged with
:func:`.cells.over_seeds`, compared with the seed (drops) and with vanilla (paired McNemar tests that
pool the per-prompt verdicts of all seeds: prompt x seed pairs, matched by id). ``report/study.py``
renders the result.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..methods import BASELINE, DATA_AXES, SEED_ROW, get_method, point_name, sweep_axis
from .cells import CellResult, check_one_precision, check_one_seed, over_seeds


def _label(cell: CellResult) -> str:
    """The row's name; a string point is quoted, so a prefix's spaces show."""
    return point_name(cell.method, {k: v if sweep_axis(k).numeric else repr(v) for k, v in cell.sweep.items()})


def _pooled_mcnemar(cells_a: list[CellResult], cells_b: list[CellResult], metric: str, *,
                    paired_by_seed: bool = True) -> dict | None:
    """Exact McNemar on (seed, prompt) pairs: how many prompts flipped safe -> unsafe and back. Cells of
    ``cells_b`` are matched to ``cells_a``'s by training seed, or position by position when
    ``paired_by_seed`` is false (the untrained seed model stands beside every trained seed)."""
    from ..analyse.stats import mcnemar_exact, paired_counts

    if paired_by_seed:
        by_seed_b = {c.seed: c.verdicts(metric) for c in cells_b}
        pairs = [(c.verdicts(metric), by_seed_b.get(c.seed)) for c in cells_a]
    else:
        pairs = [(a.verdicts(metric), b.verdicts(metric)) for a, b in zip(cells_a, cells_b, strict=True)]
    matched = [(verdict, other[pid]) for mine, other in pairs if other is not None
               for pid, verdict in mine.items() if pid in other and verdict is not None and other[pid] is not None]
    table = paired_counts([bool(a) for a, _ in matched], [bool(b) for _, b in matched])
    b, c = table["only_first"], table["only_second"]
    if b + c == 0 and not cells_a:
        return None
    return {"a_safe_b_unsafe": b, "a_unsafe_b_safe": c, "p_value": mcnemar_exact(b, c)}


def _cost_ratios(rows: list[dict], groups: dict[tuple[str, str, str], list[CellResult]]) -> None:
    """Each row's mean training time and training tokens over vanilla's (same folder and task), where
    both were recorded: the token ratio is the floor of LookAhead's time ratio. Added to the rows."""
    from ..analyse.stats import mean_present

    def means(members: list[CellResult]) -> tuple[float | None, float | None]:
        costs = [c.cost for c in members if c.cost]
        seconds = mean_present([c.get("train_seconds") for c in costs])
        tokens = mean_present([(c.get("tokens_seen") or {}).get("total") for c in costs])
        return seconds, tokens

    for row in rows:
        vanilla = groups.get((row["group"], row["task"], BASELINE))
        if not vanilla:
            continue
        (seconds, tokens), (base_s, base_t) = means(groups[(row["group"], row["task"], row["name"])]), means(vanilla)
        if seconds and base_s and tokens and base_t:
            row["cost_vs_vanilla"] = {"time": round(seconds / base_s, 3), "tokens": round(tokens / base_t, 3)}


def summarise(cells: list[CellResult], forecasts: dict[str, dict]) -> dict[str, Any]:
    """Group cells by (folder, task, method/sweep) across seeds; intervals, drops and paired tests."""
    from ..analyse.stats import mean_ci

    by_group: dict[str | None, list[CellResult]] = defaultdict(list)
    for cell in cells:
        by_group[cell.group].append(cell)
    for group, members in by_group.items():  # a folder (or a --group) is one seed model's table
        check_one_seed(members, group or "the cells")
        check_one_precision(members, group or "the cells")
    seeds = {(c.group, c.task): c for c in cells if c.method == SEED_ROW}
    groups: dict[tuple[str, str, str], list[CellResult]] = defaultdict(list)
    for cell in cells:
        if cell.method != SEED_ROW:
            groups[(cell.group, cell.task, _label(cell))].append(cell)
    rows = []
    for (group, task, label), members in sorted(groups.items()):
        seed = seeds.get((group, task))
        row: dict[str, Any] = {"group": group, "task": task, "name": label, "seeds": sorted(c.seed for c in members)}
        for axis in get_method(members[0].method).axes:  # a numeric axis' value, as the cell trained it
            if axis.numeric:
                row[axis.key] = members[0].train.get(axis.key)
        for axis in DATA_AXES:  # only where a cell set it: summaries of clean cells keep their keys
            if members[0].train.get(axis.key) is not None:
                row[axis.key] = members[0].train[axis.key]
        for key in ("rsr", "jsr", "utility"):
            per_seed, row[key] = over_seeds(members, key, run_interval=False)
            values = [v for v in per_seed if v is not None]
            row[f"{key}_per_seed"] = values
            if seed is not None and key != "utility" and values and seed.value(key) is not None:
                row[f"{key}_drop"] = mean_ci([seed.value(key) - v for v in values])
        per_seed, overrefusal = over_seeds(members, "overrefusal", run_interval=False)
        if any(v is not None for v in per_seed):  # added only where measured (older studies did not)
            row["overrefusal"] = overrefusal
            row["overrefusal_per_seed"] = [v for v in per_seed if v is not None]
        kl1 = [c.kl[0] for c in members if c.kl and c.kl[0] is not None]
        row["kl1"] = mean_ci(kl1) if kl1 else None
        row["train_seconds"] = mean_ci([c.cost["train_seconds"] for c in members if c.cost]) \
            if any(c.cost for c in members) else None
        vanilla = groups.get((group, task, BASELINE))
        if vanilla and label != BASELINE:
            row["vs_vanilla"] = {k: _pooled_mcnemar(members, vanilla, k) for k in ("rsr", "jsr")}
        if seed is not None:
            row["vs_seed"] = {k: _pooled_mcnemar(members, [seed] * len(members), k, paired_by_seed=False)
                              for k in ("rsr", "jsr")}
        rows.append(row)
    _cost_ratios(rows, groups)
    seed_rows = [{"group": g, "task": t, "rsr": c.value("rsr"), "jsr": c.value("jsr"),
                  "utility": c.value("utility"), "overrefusal": c.value("overrefusal")}
                 for (g, t), c in sorted(seeds.items())]
    points = []
    for cell in cells:
        seed = seeds.get((cell.group, cell.task))
        if cell.method == SEED_ROW or seed is None or not cell.kl:
            continue
        points.append({"group": cell.group, "name": _label(cell), "seed": cell.seed, "kl1": cell.kl[0],
                       "kl2": cell.kl[1] if len(cell.kl) > 1 else None,
                       "rsr_drop": (seed.value("rsr") or 0) - (cell.value("rsr") or 0),
                       "jsr_drop": (seed.value("jsr") or 0) - (cell.value("jsr") or 0)})
    return {"seed_models": seed_rows, "groups": rows, "kl_points": points, "forecasts": forecasts,
            "n_cells": len(cells)}
