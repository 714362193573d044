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
import errno
import json
import os
import re
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
        assert lines == [f"error: {target}: No space left on device"], err
        assert "Traceback" not in err
        assert earlier.read_bytes() == kept
        assert sorted(p.name for p in tiny_disk.iterdir()) == ["earlier.jsonl"]  # no partial or temp file

    # A resumable log on a full disk fails cleanly too, keeping every record it had.
    from lookahead_tuning.io import JsonlLog

    log_path = tiny_disk / "log.jsonl"
    log = JsonlLog(log_path)
    with pytest.raises(UserError, match="No space left on device"):  # naming the log
        for i in range(10_000):
            log.append({"id": str(i), "text": "x" * 200})
    with contextlib.suppress(OSError):  # flushing the failed record's buffer fails the same way
        log.close()
    reopened = JsonlLog(log_path)  # drops the record cut short by the full disk, keeps all before it
    done = reopened.done_ids()
    assert len(done) > 10 and done == {str(i) for i in range(len(done))}
    assert all(json.loads(line)["id"] for line in log_path.read_bytes().splitlines() if line)


# --------------------------------------------------------------------------- write failures: one line naming the output

WRITE_ERRNOS = [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT]


def _failing_open(real_open, code: int):
    """``open`` whose files fail their first write the way a full (read-only, forbidden, over-quota)
    disk does: an OSError with the errno and no file name, as Python's file objects raise it."""

    class Failing:
        def __init__(self, fh):
            self._fh = fh

        def write(self, data):
            raise OSError(code, os.strerror(code))

        def __getattr__(self, name):
            return getattr(self._fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

    def fake(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return Failing(fh) if any(c in mode for c in "wa") else fh

    return fake


@pytest.mark.parametrize("code", WRITE_ERRNOS)
@pytest.mark.parametrize("writer", ["jsonl", "json", "csv", "parquet", "hf", "text", "log"])
def test_every_record_writer_turns_a_failed_write_into_one_line_naming_the_output(tmp_path, monkeypatch, code,
                                                                                  writer):
    """Before, the OSError of a file object's write carried no file name: `error: No space left on device`
    without the output, or the name of a hidden temporary; safetensors and torch did not even raise an
    OSError. Now every writer names its output, and leaves the earlier output as it was."""
    import builtins

    import datasets
    import pyarrow.parquet as pq

    from lookahead_tuning import io as lio

    target = tmp_path / {"jsonl": "out.jsonl", "json": "out.json", "csv": "out.csv", "parquet": "out.parquet",
                         "hf": "out_folder", "text": "report.md", "log": "gen.jsonl"}[writer]
    if writer == "hf":
        lio.write_records(target, iter([{"earlier": "yes"}]))
    elif writer == "log":
        target.write_text('{"id": "0", "completion": "earlier"}\n')
    else:
        (lio.atomic_write_text if writer == "text" else lio.write_records)(
            target, *(["earlier"] if writer == "text" else [iter([{"earlier": "yes"}])]))
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(lio, "open", _failing_open(builtins.open, code), raising=False)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail)
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", fail)
    with pytest.raises(UserError) as caught:
        if writer == "text":
            lio.atomic_write_text(target, "new text")
        elif writer == "log":
            lio.JsonlLog(target).append({"id": "1", "completion": "x"})
        else:
            lio.write_records(target, iter([{"prompt": "p", "completion": "c"}]))
    assert caught.value.render() == f"{target}: {os.strerror(code)}"
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing half-written


def _error_lines(stderr: str) -> list[str]:
    """stderr without transformers' "Writing model shards" bar, which checkpoints show even with --quiet."""
    return [line for line in stderr.splitlines() if line.strip() and not re.search(r"\d+%\|", line)]


def _train_args(tmp_path, tiny_model_dir, run, *extra: str) -> list[str]:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Add {i} and 1.", "completion": f"{i} + 1 = {i + 1}."}) + "\n"
                            for i in range(4)))
    return ["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(run), "--max-steps", "1",
            "--batch-size", "2", "--max-length", "64", "--quiet", "--bf16", "off", *extra]


def test_a_full_disk_while_the_weights_are_saved_is_one_line_and_resumable(tmp_path, tiny_model_dir, monkeypatch,
                                                                          capfd):
    """safetensors reports a full disk as its own SafetensorError ("unexpected SafetensorError", exit 1,
    before); now it is `error: RUN: No space left on device`, exit 2, with no staging folder or model file
    left in the run folder, and the checkpoint written before lets `--resume` finish once there is room."""
    import transformers.modeling_utils as modeling
    from safetensors import SafetensorError

    from lookahead_tuning.cli import main

    run = tmp_path / "run"
    real_save = modeling.safe_save_file
    calls = []

    def full_disk_at_the_end(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if ".final-model" in str(filename):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(modeling, "safe_save_file", full_disk_at_the_end)
    capfd.readouterr()
    assert main(_train_args(tmp_path, tiny_model_dir, run, "--save-steps", "1")) == 2
    err = _error_lines(capfd.readouterr().err)
    assert err == [f"error: {run}: No space left on device"], err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "train_log.jsonl"]
    assert (run / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    monkeypatch.setattr(modeling, "safe_save_file", real_save)
    assert main(_train_args(tmp_path, tiny_model_dir, run, "--save-steps", "1", "--resume")) == 0
    assert (run / "model.safetensors").is_file() and (run / "summary.json").is_file()


@pytest.mark.parametrize("failure, reason", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), os.strerror(errno.ENOSPC)),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
     "the write failed ([enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534)"),
])
def test_a_failed_checkpoint_is_one_line_naming_it_and_removed(tmp_path, tiny_model_dir, monkeypatch, capfd, failure,
                                                               reason):
    """torch.save (the optimizer state) failing inside a checkpoint: an OSError without a file name or
    torch's own RuntimeError (its zip writer drops the errno). The half-written checkpoint is removed, so
    no resume can find it, and, as nothing else was saved, so is the new run folder."""
    import torch

    from lookahead_tuning.cli import main

    run = tmp_path / "run"

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", fail)
    capfd.readouterr()
    assert main(_train_args(tmp_path, tiny_model_dir, run, "--save-steps", "1")) == 2
    err = _error_lines(capfd.readouterr().err)
    assert err == [f"error: {run / 'checkpoints' / 'checkpoint-1'}: {reason}"], err
    assert not run.exists()


@pytest.fixture()
def read_only_dir(tmp_path):
    """A folder nothing can be written into: a read-only tmpfs as root (which ignores permissions),
    a folder without write permission otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_folder_is_one_line_naming_the_output(tmp_path, read_only_dir, tiny_model_dir, capfd):
    """preview used to name the hidden temporary it could not create (`.out.jsonl.123.abc.tmp`)."""
    from lookahead_tuning.cli import main

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "Say yes.", "completion": "Yes."}) + "\n")
    reason = os.strerror(errno.EROFS if os.geteuid() == 0 else errno.EACCES)
    runs = {
        read_only_dir / "out.jsonl": ["preview", str(data), str(read_only_dir / "out.jsonl"), "--mode", "virtual",
                                      "--quiet"],
        read_only_dir / "gen.jsonl": ["generate", "--model", str(tiny_model_dir), "--prompts", str(data), "--out",
                                      str(read_only_dir / "gen.jsonl"), "--max-new-tokens", "2", "--quiet"],
        read_only_dir / "run": _train_args(tmp_path, tiny_model_dir, read_only_dir / "run"),
    }
    for target, argv in runs.items():
        capfd.readouterr()
        assert main(argv) == 2, target
        err = _error_lines(capfd.readouterr().err)
        assert len(err) == 1 and err[0].endswith(f": {reason}"), err
        named = Path(err[0].removeprefix("error: ").removesuffix(f": {reason}"))
        # the output itself, or (generate) the provenance file it writes first: never a hidden temporary
        assert named == target or (named.parent == read_only_dir and not named.name.startswith(".")), err
    assert list(read_only_dir.iterdir()) == []
