"""Byte for byte: the cells of a tiny six-row run (every Table 1 method, over-refusal, forecast) made
before the architecture refactor give the same results.json, results.csv and report.md after it.

The fixture in tests/golden/tiny6/ is that run's output (``RUN_DIR`` stands for its folder); only the
clock and the installed versions are pinned to the fixture's, since they are what a rerun may change.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny6"


def test_results_and_report_from_the_same_cells_are_byte_identical(tmp_path, monkeypatch):
    import lookahead_tuning.experiment.results as results_mod
    from lookahead_tuning.experiment.config import load_experiment
    from lookahead_tuning.experiment.plan import plan_cells

    before = json.loads((GOLDEN / "results.json").read_text())
    monkeypatch.setattr(results_mod.time, "strftime", lambda fmt: before["created"])
    monkeypatch.setattr(results_mod, "versions", lambda: before["environment"])
    cfg = load_experiment(GOLDEN / "config.yaml")
    cells = plan_cells(cfg)
    stored = {c.cell_id: json.loads((GOLDEN / "cells" / f"{c.cell_id}.json").read_text()) for c in cells}
    for cell in cells:  # the cells still belong to the config that made them
        assert stored[cell.cell_id]["fingerprint"] == cell.fingerprint(cfg)
    run_dir = tmp_path / "run"
    results_mod.write_outputs(run_dir, cfg, cells, stored, forecasts=before["forecast"],
                              links={n: e["model"] for n, e in before["models"].items()},
                              command=shlex.split(before["commands"]["ran"]), config_text=before["config"])
    for name in ("results.json", "results.csv", "report.md"):
        got = (run_dir / name).read_text().replace(str(run_dir), "RUN_DIR")
        assert got == (GOLDEN / name).read_text(), name
