"""The executors on a tiny grid: processes and Ray give the sequential runner's cells, results.json and
report (clock fields aside); a worker killed mid-cell is resumed by the next claimant; one claim per cell."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_experiment_runner import tiny_config

from lookahead_tuning.errors import UserError
from lookahead_tuning.experiment import runner as runner_mod
from lookahead_tuning.experiment.config import make_experiment
from lookahead_tuning.experiment.executors import ExecutorSpec

# What a cell records of the clock and the machine's load; everything else must not depend on the executor.
CLOCK = {"cell_seconds", "finished_at", "train_seconds", "total_seconds", "peak_rss_mb", "peak_cuda_mb",
         "seconds", "created", "created_at", "generated_at", "started_at", "elapsed_seconds"}


def tiny_grid(model_dir, **extra):
    return make_experiment({**tiny_config(model_dir).model_dump(mode="json"), **extra})


def without_clocks(value):
    if isinstance(value, dict):
        return {k: without_clocks(v) for k, v in value.items() if k not in CLOCK}
    if isinstance(value, list):
        return [without_clocks(v) for v in value]
    return value


def cells_of(run_dir: Path) -> dict[str, dict]:
    return {p.name: without_clocks(json.loads(p.read_text())) for p in sorted((run_dir / "cells").glob("*.json"))}


def test_workers_without_an_executor_that_runs_them_are_refused():
    with pytest.raises(ValueError, match="workers > 1 needs executor"):
        ExecutorSpec(kind="local", workers=2)
    assert ExecutorSpec(kind="processes", workers=2, threads=3).threads_per_worker() == 3


def test_workers_without_an_executor_on_the_command_line_is_one_line(tiny_model_dir, tmp_path, capsys):
    import yaml

    from lookahead_tuning.cli import main

    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(tiny_grid(tiny_model_dir).model_dump(mode="json")))
    assert main(["run", str(config), "--dry-run", "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --workers 2: workers > 1 needs executor 'processes' or 'ray' (local computes one cell "
                   "at a time)"]


def test_the_executor_is_no_part_of_the_recorded_config_or_any_fingerprint(tiny_model_dir):
    plain = tiny_grid(tiny_model_dir)
    spread = tiny_grid(tiny_model_dir, executor={"kind": "processes", "workers": 2})
    assert spread.executor.workers == 2 and "executor" not in spread.model_dump(mode="json")
    assert [c.fingerprint(plain) for c in runner_mod.plan_cells(plain)] == \
        [c.fingerprint(spread) for c in runner_mod.plan_cells(spread)]


def test_the_ray_executor_without_ray_is_one_line(tiny_model_dir, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from lookahead_tuning.experiment.executors import run_jobs

    with pytest.raises(UserError, match=r"pip install 'lookahead-tuning\[ray\]'"):
        run_jobs(ExecutorSpec(kind="ray"), len, [("x",)], lambda r: None)


GRID_SCRIPT = (
    "import sys, yaml\n"
    "from lookahead_tuning.experiment.config import make_experiment\n"
    "from lookahead_tuning.experiment.executors import ExecutorSpec\n"
    "from lookahead_tuning.experiment.runner import run_experiment\n"
    "cfg = make_experiment(yaml.safe_load(open(sys.argv[1])))\n"
    "if sys.argv[3] != 'local':\n"
    "    cfg = cfg.model_copy(update={'executor': ExecutorSpec(kind=sys.argv[3], workers=2, threads=1)})\n"
    "run_experiment(cfg, out=sys.argv[2], progress=False)\n")


def start_grid(cfg, tmp_path: Path, out: Path, kind: str) -> subprocess.Popen:
    """The grid in a fresh process, as `lookahead-tuning run` would compute it (one torch thread per cell)."""
    import yaml

    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", GRID_SCRIPT, str(config), str(out), kind], env=env)


def run_grid(cfg, tmp_path: Path, out: Path, kind: str) -> Path:
    assert start_grid(cfg, tmp_path, out, kind).wait(timeout=900) == 0
    return out


def same_outputs(run: Path, reference: Path) -> None:
    """Cells and results.json equal the reference run's, clock fields aside and the folder's own path
    read as one name; report.md equal line for line outside its date and its cost table."""
    def norm(path: Path, root: Path):
        return without_clocks(json.loads(path.read_text().replace(str(root), "RUN")))

    assert sorted(p.name for p in (run / "cells").glob("*.json")) == \
        sorted(p.name for p in (reference / "cells").glob("*.json"))
    for cell in (reference / "cells").glob("*.json"):
        assert norm(run / "cells" / cell.name, run) == norm(cell, reference), cell.name
    assert norm(run / "results.json", run) == norm(reference / "results.json", reference)

    def report(root: Path) -> list[str]:
        text = (root / "report.md").read_text().replace(str(root), "RUN")
        return [line for line in text.split("## Cost")[0].splitlines() if not line.startswith("Created ")]

    assert report(run) == report(reference)


@pytest.mark.slow  # three tiny grids on 2 cores, about three minutes
def test_processes_match_the_sequential_runner_and_a_killed_worker_is_resumed(tmp_path, tiny_model_dir):
    cfg = tiny_grid(tiny_model_dir)
    sequential = run_grid(cfg, tmp_path, tmp_path / "sequential", "local")
    same_outputs(run_grid(cfg, tmp_path, tmp_path / "processes", "processes"), sequential)

    # A worker killed mid-cell: the run goes on, the next claimant resumes the cell from its work folder.
    killed_dir = tmp_path / "killed"
    proc = start_grid(cfg, tmp_path, killed_dir, "processes")
    target = "math--lookahead-real--seed0"
    trained = killed_dir / "work" / target / "train" / "summary.json"
    claim = killed_dir / "work" / runner_mod.CLAIMS / f"{target}.lock"
    deadline = time.monotonic() + 600
    killed_before_done = False
    while time.monotonic() < deadline and proc.poll() is None:
        pid = None
        if trained.is_file() and claim.is_file():
            with contextlib.suppress(ValueError):
                pid = json.loads(claim.read_text() or "{}").get("pid")
        if pid:
            killed_before_done = not (killed_dir / "cells" / f"{target}.json").is_file()
            trained_at = trained.stat().st_mtime_ns
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    else:
        pytest.fail("the worker never reached the point to kill it")
    assert proc.wait(timeout=600) == 0
    same_outputs(killed_dir, sequential)
    assert killed_before_done  # the kill landed mid-cell: trained, not yet evaluated to the end
    assert trained.stat().st_mtime_ns == trained_at  # the next claimant resumed it: no second training


@pytest.mark.slow  # a local Ray with 2 CPUs and the tiny grid
def test_ray_matches_the_sequential_runner(tmp_path, tiny_model_dir):
    import ray  # noqa: F401  (the [ray] extra; the dev extra that `make test` installs includes it)

    cfg = tiny_grid(tiny_model_dir)
    sequential = run_grid(cfg, tmp_path, tmp_path / "sequential", "local")
    same_outputs(run_grid(cfg, tmp_path, tmp_path / "ray", "ray"), sequential)
