"""Fault injection: SIGKILL in the middle of each long-running command, and a full disk.

What each test shows:

- preview: a kill mid-write leaves OUTPUT exactly as it was (at most a hidden ``.OUTPUT.<pid>.*.tmp``
  file remains), and the rerun writes the complete file and removes that leftover;
- generate / eval safety: a kill after some batches, then a rerun, gives every id exactly once, and the
  answers finished before the kill are kept, not recomputed;
- train: the SIGKILL-and-resume test with identical weights lives in ``tests/test_train_procs.py``
  (``test_sigkill_then_resume_gives_the_uninterrupted_weights``); here only what it does not cover: a
  checkpoint cut short by a kill is never resumed from, and an unfinished run is never overwritten;
- run: ``tests/test_experiment_runner.py`` interrupts a grid with an exception; here a real SIGKILL of
  ``lookahead-tuning run`` mid-grid, and a rerun that does only the unfinished cells;
- a full disk (a 64 KiB tmpfs, mounted only when the tests run as root): a clean one-line error, the
  earlier output intact, no temporary file left.

Commands under a kill run in a subprocess with a small wrapper that slows the hot loop down, so the kill
lands mid-work deterministically instead of racing a fast tiny model.
"""

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

from lookahead_tuning.errors import UserError

SENTINEL = b'{"sentinel": "the previous output"}\n'

# Slows the named function down and runs the CLI; the function is patched in its module so the
# CLI's own import of it sees the slow version.
SLOW = r"""
import importlib, sys, time
module_name, attr, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
module = importlib.import_module(module_name)
original = getattr(module, attr)
def slow(*args, **kwargs):
    time.sleep(delay)
    return original(*args, **kwargs)
setattr(module, attr, slow)
if module_name == "lookahead_tuning.preview.cli":  # small chunks, so the write is spread over time
    chunks = module._chunks
    module._chunks = lambda path, fmt, size: chunks(path, fmt, 4)
from lookahead_tuning.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LOOKAHEAD_TUNING_DEBUG"}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start_slow(module: str, attr: str, delay: float, argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW, module, attr, str(delay), *argv], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if it finished or never got there."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before the kill point:\n"
                        f"{proc.stderr.read().decode()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the kill point was never reached")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- preview


def test_sigkill_during_preview_leaves_the_output_untouched(tmp_path, tiny_model_dir):
    from lookahead_tuning.cli import main
    from lookahead_tuning.io import read_records

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "completion": f"{i} + {i} = {2 * i}."})
                           + "\n" for i in range(40)), encoding="utf-8")
    out = tmp_path / "out" / "previewed.jsonl"
    out.parent.mkdir()
    out.write_bytes(SENTINEL)
    argv = ["preview", str(src), str(out), "--mode", "real", "--tokenizer", str(tiny_model_dir), "--quiet"]
    proc = _start_slow("lookahead_tuning.preview.cli", "preview_rows", 0.3, argv, tmp_path)

    def temp_file_written() -> bool:  # the atomic write has started: the temporary sibling exists
        return any(p.name.startswith(".previewed.jsonl.") for p in out.parent.iterdir())

    _kill_when(proc, temp_file_written)
    time.sleep(0.1)
    assert out.read_bytes() == SENTINEL
    leftovers = [p.name for p in out.parent.iterdir() if p != out]
    assert all(name.startswith(f".previewed.jsonl.{proc.pid}.") and name.endswith(".tmp")
               for name in leftovers), leftovers

    assert main(argv) == 0
    rows = read_records(out)
    assert len(rows) == 40 and all(" The answer begins with: " in r["prompt"] for r in rows)
    assert [p.name for p in out.parent.iterdir()] == ["previewed.jsonl"]  # the dead writer's leftover is gone


# --------------------------------------------------------------------------- generation and evaluation


def test_sigkill_during_generation_then_resume(tmp_path, tiny_model_dir):
    from lookahead_tuning.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "instruction": f"Count to {i}."}) + "\n"
                               for i in range(12)), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    argv = ["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out),
            "--batch-size", "2", "--max-new-tokens", "3", "--quiet"]
    proc = _start_slow("lookahead_tuning.generate.engine", "_generate_batch", 0.5, argv, tmp_path)
    _kill_when(proc, lambda: out.is_file() and len(out.read_bytes().splitlines()) >= 4)
    before = {r["id"]: r for r in _lines(out)}
    assert 4 <= len(before) < 12, "the kill did not land mid-run"

    assert main(argv) == 0
    after = _lines(out)
    ids = [r["id"] for r in after]
    assert sorted(ids) == sorted(f"p{i}" for i in range(12))  # nothing lost
    assert len(ids) == len(set(ids))  # nothing twice
    for rid, record in before.items():  # finished answers were kept, not redone
        assert next(r for r in after if r["id"] == rid) == record


def test_sigkill_during_safety_eval_then_resume(tmp_path, tiny_model_dir):
    from lookahead_tuning.cli import main

    out = tmp_path / "rsr"
    argv = ["eval", "safety", "--model", str(tiny_model_dir), "--limit", "10", "--batch-size", "2",
            "--max-new-tokens", "3", "--out", str(out), "--quiet"]
    log = out / "completions.jsonl"
    proc = _start_slow("lookahead_tuning.generate.engine", "_generate_batch", 0.5, argv, tmp_path)
    _kill_when(proc, lambda: log.is_file() and len(log.read_bytes().splitlines()) >= 4)
    assert not (out / "metrics.json").exists()
    before = {r["id"]: r for r in _lines(log)}

    assert main(argv) == 0
    records = _lines(log)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 10
    for rid, record in before.items():
        assert next(r for r in records if r["id"] == rid) == record
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] + metrics.get("excluded", 0) == 10
    generations = _lines(out / "generations.jsonl")
    assert sorted(r["id"] for r in generations) == sorted(ids)


def test_truncated_log_line_from_a_kill_is_redone_once(tmp_path):
    """The byte-level picture of a kill mid-append: the cut line is dropped, the rest kept."""
    from lookahead_tuning.io import JsonlLog

    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"id": "a", "x": 1}\n{"id": "b", "x": 2}\n{"id": "c", "x"')
    log = JsonlLog(path)
    assert log.done_ids() == {"a", "b"}
    log.append({"id": "c", "x": 3})
    log.close()
    assert [r["id"] for r in _lines(path)] == ["a", "b", "c"]


# --------------------------------------------------------------------------- training


def test_a_checkpoint_cut_short_is_not_resumed_from(tmp_path):
    """Trainer writes trainer_state.json last; a kill inside a checkpoint leaves one without a valid state,
    and resuming must fall back to the previous, complete checkpoint."""
    from lookahead_tuning.train.api import CHECKPOINTS, last_checkpoint

    run = tmp_path / "run"
    good = run / CHECKPOINTS / "checkpoint-2"
    cut = run / CHECKPOINTS / "checkpoint-4"
    empty = run / CHECKPOINTS / "checkpoint-6"
    for folder in (good, cut, empty):
        folder.mkdir(parents=True)
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (cut / "trainer_state.json").write_text('{"global_step": 4, "log_hist')
    assert last_checkpoint(run) == good


def test_an_unfinished_run_is_not_overwritten_without_resume(tmp_path, tiny_model_dir):
    from lookahead_tuning.train.api import CHECKPOINTS, train

    run = tmp_path / "run"
    (run / CHECKPOINTS / "checkpoint-2").mkdir(parents=True)
    (run / CHECKPOINTS / "checkpoint-2" / "trainer_state.json").write_text("{}")
    with pytest.raises(UserError, match="--resume"):
        train({"model": str(tiny_model_dir), "data": "math", "out": str(run), "limit": 2})
    assert (run / CHECKPOINTS / "checkpoint-2" / "trainer_state.json").read_text() == "{}"


# --------------------------------------------------------------------------- the experiment grid


GRID = """\
name: faults
model: {model}
tasks:
  - name: math
    n_train: 4
    n_test: 2
    max_new_tokens: 2
methods: [vanilla]
train: {{epochs: 1, batch_size: 4, max_length: 96, warmup_ratio: 0.0, lr: 1.0e-3, bf16: "off"}}
eval: {{limit: 2, max_new_tokens: 2, batch_size: 2, forecast: false, utility: false, kl_positions: 2}}
"""


def test_sigkill_during_a_grid_resumes_at_the_cell(tmp_path, tiny_model_dir, monkeypatch):
    from lookahead_tuning.cli import main
    from lookahead_tuning.experiment import runner

    config = tmp_path / "grid.yaml"
    config.write_text(GRID.format(model=tiny_model_dir), encoding="utf-8")
    out = tmp_path / "grid"
    argv = ["run", str(config), "--out", str(out), "--quiet"]
    # Slow the trained cell's training down; the seed cell (evaluation only) finishes first.
    proc = _start_slow("lookahead_tuning.train.api", "prepare_data", 3.0, argv, tmp_path)
    seed_cell = out / "cells" / "math--seed.json"
    vanilla_work = out / "work" / "math--vanilla--seed0" / "train" / "config.yaml"
    _kill_when(proc, lambda: seed_cell.is_file() and vanilla_work.is_file())
    seed_written = seed_cell.stat().st_mtime_ns
    assert not (out / "cells" / "math--vanilla--seed0.json").exists()
    assert [p.name for p in (out / "cells").iterdir()] == ["math--seed.json"]  # no partial cell file

    calls: list[str] = []
    real_run_cell = runner.run_cell

    def counting(ctx, cell, **kwargs):
        calls.append(cell.cell_id)
        return real_run_cell(ctx, cell, **kwargs)

    monkeypatch.setattr(runner, "run_cell", counting)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    assert calls == ["math--vanilla--seed0"]  # the finished seed cell was not redone
    assert seed_cell.stat().st_mtime_ns == seed_written
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"seed", "vanilla"}


def test_a_corrupt_cell_file_is_a_clear_error(tmp_path, tiny_model_dir):
    from lookahead_tuning.experiment import runner
    from lookahead_tuning.experiment.config import load_experiment

    config = tmp_path / "grid.yaml"
    config.write_text(GRID.format(model=tiny_model_dir), encoding="utf-8")
    cfg = load_experiment(config)
    ctx = runner.RunContext(cfg=cfg, out=tmp_path, cells_dir=tmp_path / "cells")
    cell = runner.plan_cells(cfg)[0]
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / f"{cell.cell_id}.json").write_text('{"version": 1, "fingerp')
    with pytest.raises(UserError, match="corrupt cell result"):
        runner.load_cell(ctx, cell)


# --------------------------------------------------------------------------- a full disk


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs; needs root (mount), skipped otherwise."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_gives_a_clean_error_and_keeps_earlier_outputs(tmp_path, tiny_disk, capfd):
    from lookahead_tuning.cli import main

    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"prompt": "Say yes.", "completion": "Yes."}) + "\n", encoding="utf-8")
    big = tmp_path / "big.jsonl"  # ~400 KB of output: far more than the disk holds
    big.write_text("".join(json.dumps({"prompt": f"Question {i}: " + "why " * 40, "completion": "Because."}) + "\n"
                           for i in range(2000)), encoding="utf-8")
    earlier = tiny_disk / "earlier.jsonl"
    assert main(["preview", str(small), str(earlier), "--mode", "virtual", "--quiet"]) == 0
    kept = earlier.read_bytes()
    capfd.readouterr()

    for target in (tiny_disk / "new.jsonl", earlier):  # a new output, and replacing the earlier one
        rc = main(["preview", str(big), str(target), "--mode", "virtual", "--quiet"])
        err = capfd.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2, err
        assert len(lines) == 1 and lines[0].startswith("error: ") and "No space left on device" in lines[0], err
        assert "Traceback" not in err
        assert earlier.read_bytes() == kept
        assert sorted(p.name for p in tiny_disk.iterdir()) == ["earlier.jsonl"]  # no partial or temp file

    # A resumable log on a full disk fails cleanly too, keeping every record it had.
    from lookahead_tuning.io import JsonlLog

    log_path = tiny_disk / "log.jsonl"
    log = JsonlLog(log_path)
    with pytest.raises(OSError):
        for i in range(10_000):
            log.append({"id": str(i), "text": "x" * 200})
    with contextlib.suppress(OSError):  # flushing the failed record's buffer fails the same way
        log.close()
    reopened = JsonlLog(log_path)  # drops the record cut short by the full disk, keeps all before it
    done = reopened.done_ids()
    assert len(done) > 10 and done == {str(i) for i in range(len(done))}
    assert all(json.loads(line)["id"] for line in log_path.read_bytes().splitlines() if line)
