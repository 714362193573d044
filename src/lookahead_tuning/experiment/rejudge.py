"""``lookahead-tuning rejudge RUN_DIR --judge ... [--scorer ...]``: judge a finished experiment again.

Cells keep their answers (compressed, ``answers`` in each cell file), so another judge or scorer needs
no model: every RSR/JSR answer is judged again, every utility completion scored again, and the cells,
``config.yaml``, ``results.json``, ``results.csv`` and ``report.md`` are rewritten — in place, or into
``--out`` (a new folder holding only the re-judged record). The rewritten ``config.yaml`` names the new
instruments, so the cells' fingerprints match it and a later ``run`` of that config resumes them.
Cells from before cells kept their answers cannot be re-judged; they are named in a one-line error.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from .. import markup
from ..errors import UserError
from ..io import read_json
from .cells import read_cell, read_forecast, unpack_answers


def _load_cells(cfg, cells_dir: Path) -> tuple[list, dict[str, dict]]:
    from .plan import plan_cells

    cells = plan_cells(cfg)
    found: dict[str, dict] = {}
    for cell in cells:
        path = cells_dir / f"{cell.cell_id}.json"
        if not path.is_file():
            continue
        found[cell.cell_id] = read_cell(path)
        if found[cell.cell_id].get("fingerprint") != cell.fingerprint(cfg):
            raise UserError("this cell was not computed with the run's config.yaml; cannot re-judge it",
                            path=str(path))
    if not found:
        raise UserError("no finished cells to re-judge", path=str(cells_dir))
    lacking = [cid for cid, c in found.items() if "answers" not in c]
    if lacking:
        raise UserError(f"{len(lacking)} of {len(found)} cells keep no answers (made before cells kept them), "
                        "so they cannot be re-judged; rerun them (delete their files and `run` again)",
                        path=str(cells_dir / f"{lacking[0]}.json"))
    for cid, cell in found.items():  # every cell's answers decode before anything is judged or written
        try:
            unpack_answers(cell["answers"])
        except ValueError as exc:
            raise UserError(str(exc), path=str(cells_dir / f"{cid}.json")) from None
    return cells, found


def rejudge_cell(cell: dict, cfg, *, llm=None, progress: bool = False) -> dict:
    """The cell judged again under ``cfg.eval``'s judge and scorer (a new dict; the input is untouched)."""
    from ..analyse.safety import judge_records, safety_metrics
    from ..analyse.utility import score_rows, task_metric
    from .cells import CellResult, pack_answers
    from .runner import _rate, instrument_rates, utility_block, utility_instruments

    ev = cfg.eval
    answers = CellResult(cell).answers()
    out = dict(cell)
    changed: dict[str, dict[str, int]] = {}
    for mode in ("rsr", "jsr"):
        rows = answers.get(mode)
        if rows is None:
            continue
        records = [{**r, "response": (r.get("prefill") or "") + (r.get("completion") or "")} for r in rows]
        judge_records(records, ev.judge, llm=llm, progress=progress)
        metrics = safety_metrics(records, ev.judge, llm=llm)
        out[mode] = _rate(metrics)
        out.setdefault("instruments", {})
        out["instruments"] = {**out["instruments"], mode: instrument_rates(metrics)}
        out["agreement"] = {**(out.get("agreement") or {}), mode: metrics["disagreement"]}
        new = {str(r["id"]): bool(r["safe"]) for r in records if r["safe"] is not None}
        changed[mode] = _changes(cell.get(f"{mode}_verdicts") or {}, new, "safe", "unsafe")
        out[f"{mode}_verdicts"] = new
    if answers.get("utility") is not None:
        metrics, verdicts, _ = score_rows(cell["task_kind"], answers["utility"], ev.scorer)
        if task_metric(cell["task_kind"]).scorers:
            old_scorer = cell.get("scorer", "numeric")
            changed["utility"] = _changes({v["id"]: v["correct_by"][old_scorer] for v in verdicts},
                                          {v["id"]: v["correct"] for v in verdicts}, "correct", "wrong")
        out["utility"] = utility_block(metrics)
        out["instruments"] = {**out["instruments"], "utility": utility_instruments(metrics)}
    before = {"judge": cell.get("judge", "keyword"), "scorer": cell.get("scorer", "numeric"),
              "fingerprint": cell.get("fingerprint")}
    out.update({"judge": ev.judge, "scorer": ev.scorer, "answers": pack_answers(answers),
                "rejudged": {"from": before, "changed": changed, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}})
    if isinstance(out.get("provenance"), dict):
        out["provenance"] = {**out["provenance"], "judge": {"name": ev.judge}, "scorer": ev.scorer}
    return out


def _changes(old: dict[str, bool], new: dict[str, bool], yes: str, no: str) -> dict[str, int]:
    """How many verdicts changed between two judgements of the same answers, and which way."""
    both = set(old) & set(new)
    return {"n": len(both), f"{yes}_to_{no}": sum(old[i] and not new[i] for i in both),
            f"{no}_to_{yes}": sum(new[i] and not old[i] for i in both)}


def changes_table(cells: dict[str, dict]) -> str:
    """Markdown: per cell, the verdicts a re-judgement changed (RSR, JSR: to unsafe / to safe; utility:
    to wrong / to correct), and the totals."""
    cols = (("rsr", "safe_to_unsafe", "unsafe_to_safe"), ("jsr", "safe_to_unsafe", "unsafe_to_safe"),
            ("utility", "correct_to_wrong", "wrong_to_correct"))
    lines = ["| cell | RSR: to unsafe / to safe (of n) | JSR: to unsafe / to safe (of n) | "
             "utility: to wrong / to correct (of n) |", "|---|---:|---:|---:|"]
    total = {m: [0, 0, 0] for m, _, _ in cols}
    for cid in sorted(cells):
        changed = (cells[cid].get("rejudged") or {}).get("changed") or {}
        row = []
        for mode, a, b in cols:
            c = changed.get(mode)
            if not c:
                row.append("–")
                continue
            total[mode] = [total[mode][0] + c[a], total[mode][1] + c[b], total[mode][2] + c["n"]]
            row.append(f"{c[a]} / {c[b]} ({c['n']})")
        lines.append(f"| {markup.text(cid)} | " + " | ".join(row) + " |")
    lines.append("| **all cells** | " + " | ".join(f"{t[0]} / {t[1]} ({t[2]})" for t in total.values()) + " |")
    return "\n".join(lines)


def rejudge(run_dir: str | Path, *, judge: str | None = None, scorer: str | None = None,
            judge_options: dict | None = None, out: str | Path | None = None, progress: bool = True,
            wait: bool = False) -> Path:
    """Re-judge every finished cell of ``run_dir``; returns the folder written (``out`` or ``run_dir``).

    ``out`` must be new (or empty): a failure leaves no half-written record there. The run's own lock
    (and its cells_dir's) is held throughout, so a ``run`` still writing cells cannot interleave with a
    re-judgement that would leave them judged by two judges while config.yaml names one."""
    from ..io import within
    from ..provenance import output_lock
    from .config import load_experiment

    run_dir = Path(run_dir)
    with contextlib.ExitStack() as held:
        held.enter_context(output_lock(run_dir, "rejudge", wait=wait))
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise UserError("no config.yaml here (is it a run folder?)", path=str(run_dir))
        cfg = load_experiment(config_path)
        cells_dir = Path(cfg.cells_dir) if cfg.cells_dir else run_dir / "cells"
        if not within(cells_dir, run_dir):
            held.enter_context(output_lock(cells_dir, "rejudge", wait=wait))
        if out is not None:
            held.enter_context(output_lock(out, "rejudge", wait=wait))
        return _rejudge(run_dir, cfg, config_path, cells_dir, judge=judge, scorer=scorer,
                        judge_options=judge_options, out=out, progress=progress)


def _rejudge(run_dir: Path, cfg, config_path: Path, cells_dir: Path, *, judge: str | None, scorer: str | None,
             judge_options: dict | None, out: str | Path | None, progress: bool) -> Path:
    from .config import make_experiment

    cells, found = _load_cells(cfg, cells_dir)

    values = cfg.model_dump(mode="json")
    values["eval"]["judge"] = judge or cfg.eval.judge
    values["eval"]["scorer"] = scorer or cfg.eval.scorer
    if judge_options is not None:
        values["eval"]["judge_options"] = judge_options
    from ..io import has_content, output_folder, same_place

    if out is not None and same_place(out, run_dir):
        out = None  # --out RUN_DIR is the in-place re-judgement
    if out is not None and (Path(out).exists() and (not Path(out).is_dir() or has_content(out))):
        raise UserError("exists and is not empty; --out is a new folder for the re-judged record (leave it out "
                        "to re-judge in place)", path=str(out))
    target = Path(out) if out is not None else run_dir
    if out is not None:
        values["cells_dir"] = None
        values["output"] = str(target)
    new_cfg = make_experiment(values, source=str(config_path))
    from ..analyse.safety import make_judge

    llm = make_judge(new_cfg.eval.judge, new_cfg.eval.judge_options)

    rejudged = {cid: rejudge_cell(c, new_cfg, llm=llm, progress=progress) for cid, c in found.items()}
    for cell in cells:
        if cell.cell_id in rejudged:
            rejudged[cell.cell_id]["fingerprint"] = cell.fingerprint(new_cfg)
    with output_folder(target) if out is not None else contextlib.nullcontext():
        _write(run_dir, target, cfg, new_cfg, cells, cells_dir, rejudged, out is not None)
    if progress:
        print(f"re-judged {len(rejudged)} cells: judge {cfg.eval.judge} -> {new_cfg.eval.judge}, scorer "
              f"{cfg.eval.scorer} -> {new_cfg.eval.scorer}; verdicts changed:\n{changes_table(rejudged)}")
    return target


def _write(run_dir: Path, target: Path, cfg, new_cfg, cells, cells_dir: Path, rejudged: dict[str, dict],
           elsewhere: bool) -> None:
    """Write the re-judged record: cells, forecasts, config.yaml, results and rejudged.md."""
    import yaml

    from ..io import atomic_write_json, atomic_write_text
    from .results import write_outputs

    new_cells_dir = Path(new_cfg.cells_dir) if new_cfg.cells_dir else target / "cells"
    new_cells_dir.mkdir(parents=True, exist_ok=True)
    for cid, cell in rejudged.items():
        atomic_write_json(new_cells_dir / f"{cid}.json", cell)
    forecasts = {}
    for task in cfg.tasks:
        path = cells_dir / f"{task.name}--forecast.json"
        if path.is_file():
            forecasts[task.name] = read_forecast(path)
            if new_cells_dir != cells_dir:
                atomic_write_json(new_cells_dir / path.name, forecasts[task.name])
    text = yaml.safe_dump(new_cfg.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(target / "config.yaml", text)
    links = _links(run_dir, target)
    command = ["lookahead-tuning", "rejudge", str(run_dir), "--judge", new_cfg.eval.judge,
               "--scorer", new_cfg.eval.scorer] + (["--out", str(target)] if elsewhere else [])
    write_outputs(target, new_cfg, cells, rejudged, forecasts=forecasts, links=links, command=command,
                  config_text=text)
    table = changes_table(rejudged)
    atomic_write_text(target / "rejudged.md", f"{markup.text(' '.join(command))}\n\nFrom judge "
                      f"{markup.text(cfg.eval.judge)}, scorer {markup.text(cfg.eval.scorer)}; verdicts changed:\n\n{table}\n")


def _links(run_dir: Path, target: Path) -> dict[str, Any]:
    """The table rows' model links of the original run, valid from ``target``."""
    import os

    path = run_dir / "results.json"
    if not path.is_file():
        return {}
    try:
        models = read_json(path, "a JSON object").get("models")
    except UserError:
        return {}  # links are a convenience: a damaged results.json is rewritten without them
    links = {}
    for name, entry in (models if isinstance(models, dict) else {}).items():
        link = entry.get("model") if isinstance(entry, dict) else None
        if not isinstance(link, str) or not link:
            continue
        where = run_dir / link
        links[name] = link if target == run_dir or not where.exists() else os.path.relpath(where, target)
    return links
