"""``lookahead-tuning report RUN_DIR``: the report stage's verb. It reads a run's ``results.json`` and never
runs a model (``study-summary``, which aggregates cell files first, is experiment/cli.py's)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..io import read_json


def check_results(results: dict, path: str) -> None:
    """The parts of a ``results.json`` the report reads, so a hand-edited or foreign file is a
    one-line error naming the key rather than a crash half-way through the figures."""
    models = results.get("models")
    if not isinstance(models, dict):
        raise UserError("key 'models': expected an object of table rows (is it a run's results.json?)", path=path)
    for name, row in models.items():
        if not isinstance(row, dict):
            raise UserError(f"key 'models.{name}': expected an object, found {type(row).__name__}", path=path)
    for key, kind in (("tasks", list), ("sweeps", dict), ("forecast", dict), ("seeds", list)):
        if key in results and results[key] is not None and not isinstance(results[key], kind):
            raise UserError(f"key '{key}': expected {'an array' if kind is list else 'an object'}", path=path)


def _report(args: argparse.Namespace) -> int:
    from ..io import atomic_write_text
    from .writer import draw_figures, render_report

    run_dir = Path(args.run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError("no results.json here (is it a run folder?)", path=str(run_dir))
    results = read_json(path, "a JSON object")
    check_results(results, str(path))
    atomic_write_text(run_dir / "report.md", render_report(results, draw_figures(results, run_dir)))
    print(run_dir / "report.md")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``report``."""
    r = subparsers.add_parser("report", help="re-render report.md and figures from a run's results.json")
    r.add_argument("run_dir")
    r.set_defaults(func=_report)
