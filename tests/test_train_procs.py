"""Training across processes: SIGKILL + --resume gives the uninterrupted weights; 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROWS = [{"prompt": f"What is {a} plus {b}?", "completion": f"{a} + {b} = {a + b}.\n#### {a + b}"}
        for a, b in [(2, 3), (4, 1), (7, 5), (3, 3), (6, 2), (1, 8), (9, 4), (5, 5)]]

# Runs the real CLI with every optimizer step slowed down, so the test can kill it mid-run.
SLOW_CLI = """
import sys, time
from lookahead_tuning.train import trainer as T
step = T.AnswerLossTrainer.training_step
def slow(self, *a, **k):
    time.sleep(0.2)
    return step(self, *a, **k)
T.AnswerLossTrainer.training_step = slow
from lookahead_tuning.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture()
def data_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def _argv(model: Path, data: Path, out: Path) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--out", str(out), "--method", "vanilla",
            "--batch-size", "2", "--max-steps", "8", "--save-steps", "2", "--save-total-limit", "10",
            "--lr", "1e-3", "--max-length", "64", "--seed", "7", "--quiet", "--bf16", "off"]


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tiny_model_dir, data_file, tmp_path):
    full = tmp_path / "full"
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *_argv(tiny_model_dir, data_file, killed)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = killed / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 240
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.is_file(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no checkpoint"
    time.sleep(0.6)  # a step or two past the checkpoint
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists() and not (killed / "model.safetensors").exists()

    resumed = subprocess.run([sys.executable, "-m", "lookahead_tuning", *_argv(tiny_model_dir, data_file, killed),
                              "--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from"] is not None and summary["steps"] == 8
    steps = [json.loads(line)["step"] for line in (killed / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # lines past the checkpoint were dropped, none repeated

    whole = subprocess.run([sys.executable, "-m", "lookahead_tuning", *_argv(tiny_model_dir, data_file, full)],
                           env=_env(), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key
    assert any(not torch.equal(a[k], start[k]) for k in a)  # training did move the weights


def test_two_process_ddp_run(tiny_model_dir, data_file, tmp_path):
    """Two CPU processes (gloo) through torchrun: ``accelerate launch --cpu`` needs mpirun for more than one
    process, torchrun does not, and Trainer/accelerate read the same environment from either."""
    from lookahead_tuning.models import load_model

    out = tmp_path / "ddp"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
            "-m", "lookahead_tuning", "train", "--model", str(tiny_model_dir), "--data", str(data_file),
            "--out", str(out), "--method", "constrained-sft", "--batch-size", "2", "--epochs", "3", "--lr", "3e-3",
            "--max-length", "64", "--quiet", "--bf16", "off", "--warmup-ratio", "0"]
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    # 8 rows / (2 per device x 2 processes) = 2 steps per epoch
    assert summary["steps"] == 6
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) < sum(losses[:2])
    model, _ = load_model(str(out))
    assert sum(p.numel() for p in model.parameters()) > 0
