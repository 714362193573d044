"""Outputs: who made a folder (ownership), resuming only under the same settings, one process per output.

docs/reliability.md, "Outputs: ownership, resume, locks". The lock tests start a real second process
holding the lock (``_Holder``) and run the command against it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lookahead_tuning.cli import main
from lookahead_tuning.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    {"prompt": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
     "completion": f"Tom has {a} + {b} = {a + b} apples.\n#### {a + b}"}
    for a, b in [(2, 3), (4, 1), (7, 5), (3, 3)]
]
ANSWERS = [{"id": "a", "completion": "I cannot help with that."}, {"id": "b", "completion": "Sure, here is how."}]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    # Locks live in the project cache: each test its own, shared with the processes it starts.
    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def data_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


@pytest.fixture()
def answers(tmp_path) -> Path:
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ANSWERS), encoding="utf-8")
    return path


def _cfg(model, data, out, **kw) -> dict:
    return {"model": str(model), "data": str(data), "out": str(out), "batch_size": 4, "max_steps": 2,
            "max_length": 128, "lr": 1e-3, "quiet": True, "log_every": 1, **kw}


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _one_line(capfd) -> str:
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --------------------------------------------------------------------------- class 2: ownership


def test_train_refuses_a_folder_holding_another_model_and_overwrite_replaces_it(tiny_model_dir, data_file,
                                                                                 tmp_path, capfd):
    other = shutil.copytree(tiny_model_dir, tmp_path / "other-model")
    (other / "model-00002-of-00002.safetensors").write_bytes(b"a shard of the other model")
    before = _tree(other)
    argv = ["train", "--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(other), "--max-steps",
            "1", "--batch-size", "4", "--max-length", "128", "--quiet"]
    assert main(argv) == 2
    line = _one_line(capfd)
    assert "holds a model" in line and "--overwrite" in line and str(other) in line
    assert _tree(other) == before  # weights and config untouched

    assert main([*argv, "--overwrite"]) == 0
    assert (other / "summary.json").is_file() and not (other / "model-00002-of-00002.safetensors").exists()
    assert yaml.safe_load((other / "config.yaml").read_text())["model"] == str(tiny_model_dir)
    assert "overwrite" not in yaml.safe_load((other / "config.yaml").read_text())  # an invocation's, not the run's


def test_train_refuses_an_unrelated_folder_with_files(tiny_model_dir, data_file, tmp_path):
    from lookahead_tuning.train.api import train

    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="files lookahead-tuning did not write"):
        train(_cfg(tiny_model_dir, data_file, out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_eval_refuses_another_commands_folder(tiny_model_dir, answers, tmp_path, capfd):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    before = _tree(model)
    assert main(["eval", "safety", "--generations", str(answers), "--out", str(model)]) == 2
    assert "holds a model" in _one_line(capfd)
    assert _tree(model) == before
    judged = tmp_path / "judged"
    assert main(["eval", "safety", "--generations", str(answers), "--out", str(judged)]) == 0
    capfd.readouterr()
    assert main(["eval", "safety", "--generations", str(answers), "--out", str(judged)]) == 0  # its own: fine
    capfd.readouterr()
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "1", "completion": "#### 4", "ground_truth": "#### 4"}) + "\n")
    before = _tree(judged)
    assert main(["eval", "utility", "--task", "gsm8k", "--predictions", str(preds), "--out", str(judged)]) == 2
    assert "holds the output of `lookahead-tuning eval safety`" in _one_line(capfd)
    assert _tree(judged) == before


def test_run_and_study_summary_refuse_a_folder_they_did_not_make(tiny_model_dir, tmp_path, capfd):
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({"name": "own", "model": {"seed": str(tiny_model_dir)}, "tasks": ["math"],
                                      "methods": ["vanilla"]}))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.json").write_text("{}")
    before = _tree(foreign)
    assert main(["run", str(config), "--out", str(foreign), "--quiet"]) == 2
    assert "files lookahead-tuning did not write" in _one_line(capfd)
    assert main(["study-summary", str(ROOT / "tests" / "golden" / "tiny6" / "cells"), "--out", str(foreign)]) == 2
    assert "--overwrite" in _one_line(capfd)
    assert _tree(foreign) == before


# --------------------------------------------------------------------------- class 3: resume


def test_resume_under_other_settings_names_the_first_differing_key(tiny_model_dir, data_file, tmp_path):
    from lookahead_tuning.train.api import train

    out = tmp_path / "run"
    summary = train(_cfg(tiny_model_dir, data_file, out, save_steps=1))
    assert train(_cfg(tiny_model_dir, data_file, out, save_steps=1, resume=True)) == summary
    # a finished run: another lr (and method) is not answered with the old summary
    with pytest.raises(UserError, match=r"other settings \(method: 'vanilla' in this folder, 'lookahead-real' now"):
        train(_cfg(tiny_model_dir, data_file, out, resume=True, lr=5e-4, method="lookahead-real"))
    with pytest.raises(UserError, match=r"lr: 0\.001 in this folder, 0\.0005 now") as err:
        train(_cfg(tiny_model_dir, data_file, out, resume=True, lr=5e-4))
    assert err.value.path == str(out / "config.yaml")
    # bookkeeping keys decide no number: another log interval, quiet or save limit still resumes
    assert train(_cfg(tiny_model_dir, data_file, out, save_steps=3, log_every=5, resume=True)) == summary

    # an unfinished run (checkpoints, no summary) is not continued under other settings either
    (out / "summary.json").unlink()
    assert any((out / "checkpoints").iterdir())
    config_before = (out / "config.yaml").read_bytes()
    with pytest.raises(UserError, match="its checkpoints would be reused"):
        train(_cfg(tiny_model_dir, data_file, out, resume=True, seed=7))
    assert (out / "config.yaml").read_bytes() == config_before  # the label still says what trained it


def test_a_folder_from_before_a_key_existed_is_compared_with_its_legacy_value(tiny_model_dir, data_file, tmp_path):
    from lookahead_tuning.train.api import train

    out = tmp_path / "old"
    summary = train(_cfg(tiny_model_dir, data_file, out, sampling="random"))
    stored = yaml.safe_load((out / "config.yaml").read_text())
    del stored["sampling"], stored["reference_precision"]  # as a run of an older version wrote it
    (out / "config.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    with pytest.raises(UserError, match="sampling: 'random' in this folder, 'group_by_length' now"):
        train(_cfg(tiny_model_dir, data_file, out, resume=True))
    assert train(_cfg(tiny_model_dir, data_file, out, resume=True, sampling="random")) == summary


def test_settings_difference_fills_legacy_values():
    from lookahead_tuning.train.config import make_config, settings_difference

    old = {"model": "m", "data": "d", "out": "o", "method": "constrained-sft"}  # no reference_precision: fp32
    wanted = make_config({**old, "out": "elsewhere", "quiet": True, "sampling": "random"}).resolved()
    assert settings_difference(old, wanted.model_copy(update={"reference_precision": "fp32"}), source="c") is None
    assert settings_difference(old, wanted, source="c").startswith("reference_precision: 'fp32' in this folder")
    lora = make_config({**old, "lora": True, "sampling": "random"}).resolved()  # no frozen copy: not compared
    assert settings_difference({**old, "lora": True}, lora, source="c") is None


# --------------------------------------------------------------------------- class 4: one process per output


HOLDER = """
import sys, time
from lookahead_tuning.provenance import output_lock
with output_lock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


class _Holder:
    """A second process holding the lock of ``path`` (as ``lookahead-tuning COMMAND``) for ``seconds``."""

    def __init__(self, path: Path, command: str, seconds: float = 60):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), command, str(seconds)],
                                     stdout=subprocess.PIPE, text=True, env={**os.environ})
        assert self.proc.stdout.readline().strip() == "locked"

    def __enter__(self) -> _Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def _cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookahead_tuning", *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_generate_on_a_file_another_process_writes_is_refused(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "1", "instruction": "hi"}) + "\n")
    out = tmp_path / "answers.jsonl"
    with _Holder(out, "generate") as holder:
        done = _cli("generate", "--prompts", str(prompts), "--out", str(out))  # refused before the model loads
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {out}: is in use by pid {holder.proc.pid}, lookahead-tuning generate, since "), lines
    assert lines[0].endswith("; wait for it to finish, or pass --wait to wait for it")
    assert not out.exists()


def test_a_second_run_on_one_folder_and_rejudge_during_a_run_are_refused(tmp_path, capfd):
    run_dir = tmp_path / "run"
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "model": {"seed": str(tmp_path / "seed")}, "tasks": ["math"],
                                      "methods": ["vanilla"]}))
    with _Holder(run_dir, "run") as holder:
        assert main(["run", str(config), "--out", str(run_dir), "--quiet"]) == 2
        line = _one_line(capfd)
        assert f"in use by pid {holder.proc.pid}, lookahead-tuning run" in line
        assert main(["rejudge", str(run_dir), "--judge", "keyword"]) == 2  # rejudge takes the run's lock
        assert f"in use by pid {holder.proc.pid}, lookahead-tuning run" in _one_line(capfd)
        assert main(["report", str(run_dir)]) == 2  # and so does report, which rewrites report.md
        assert f"in use by pid {holder.proc.pid}, lookahead-tuning run" in _one_line(capfd)
    assert not run_dir.exists()
    # a rejudge holding a run's cells_dir stops a run writing them
    shared = tmp_path / "shared-cells"
    config.write_text(yaml.safe_dump({"name": "x", "model": {"seed": str(tmp_path / "seed")}, "tasks": ["math"],
                                      "methods": ["vanilla"], "cells_dir": str(shared)}))
    with _Holder(shared, "rejudge"):
        assert main(["run", str(config), "--out", str(tmp_path / "run2"), "--quiet"]) == 2
        assert "lookahead-tuning rejudge" in _one_line(capfd)


def test_train_and_eval_are_refused_while_another_process_holds_their_output(tiny_model_dir, data_file, answers,
                                                                             tmp_path):
    from lookahead_tuning.train.api import train

    out = tmp_path / "run"
    with _Holder(out, "train") as holder:
        with pytest.raises(UserError, match=f"in use by pid {holder.proc.pid}, lookahead-tuning train") as err:
            train(_cfg(tiny_model_dir, data_file, out))
        assert err.value.path == str(out)
    assert not out.exists()
    judged = tmp_path / "judged"
    with _Holder(judged, "eval safety"):
        done = _cli("eval", "safety", "--generations", str(answers), "--out", str(judged))
    assert done.returncode == 2 and "lookahead-tuning eval safety" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not judged.exists()


def test_wait_waits_for_the_holder_and_a_killed_holder_frees_the_lock(answers, tmp_path):
    judged = tmp_path / "judged"
    holder = _Holder(judged, "eval safety", seconds=3)
    started = time.monotonic()
    done = _cli("eval", "safety", "--generations", str(answers), "--out", str(judged), "--wait")
    assert done.returncode == 0, done.stderr
    assert f"waiting for pid {holder.proc.pid}" in done.stderr
    assert time.monotonic() - started >= 2 and (judged / "metrics.json").is_file()
    holder.proc.wait(timeout=30)
    # SIGKILL: the kernel drops the lock with the process, nothing to clean up
    other = tmp_path / "judged2"
    with _Holder(other, "eval safety") as killed:
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(timeout=30)
        done = _cli("eval", "safety", "--generations", str(answers), "--out", str(other))
    assert done.returncode == 0, done.stderr


def test_the_lock_is_one_per_output_however_it_is_spelled(tmp_path):
    from lookahead_tuning.provenance import output_lock

    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with _Holder(tmp_path / "a", "run"):
        for spelling in (tmp_path / "a", f"{tmp_path}/./a/", tmp_path / "link"):
            with pytest.raises(UserError, match="in use by pid"), output_lock(spelling, "run"):
                pass
    with output_lock(tmp_path / "a", "run"), output_lock(tmp_path / "a", "run"):  # re-entrant in one process
        pass
