"""scripts/gpu_check.py: the parts a CPU can check (the loss comparison, the CPU reference, the report)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loss_comparison_uses_bf16_tolerances():
    check = _module()
    ref = [2.0, 1.8, 1.6, 1.5]
    assert check.compare_losses(ref, [2.03, 1.88, 1.55, 1.45])["ok"]  # 1.5%, then <= 5%
    assert not check.compare_losses(ref, [2.05, 1.8, 1.6, 1.5])["ok"]  # 2.5% at the first step
    assert not check.compare_losses(ref, [2.0, 1.8, 1.6, 1.3])["ok"]  # 13% later
    assert not check.compare_losses(ref, [2.0, 1.8])["ok"]  # a run that stopped early


@pytest.mark.slow  # two tiny trainings in subprocesses
def test_cpu_only_run_writes_the_report_with_gpu_parts_skipped(tiny_model_dir, tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--cpu-only", "--model",
                           str(tiny_model_dir)], capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                               "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    checks = report["checks"]
    for kind in ("full", "lora"):
        ref = checks[f"cpu_reference_{kind}"]
        assert ref["status"] == "ok" and len(ref["losses"]) == 4 and all(x > 0 for x in ref["losses"])
        assert checks[f"cuda_bf16_{kind}"] == {"status": "skipped", "reason": "--cpu-only"}
    assert checks["deepspeed_zero2"]["status"] == checks["vllm_inprocess"]["status"] == "skipped"
    assert report["ok"] is True and report["steps"] == 4


def test_prepared_folder_becomes_a_seeded_model(tmp_path, tokenizer, tiny_model_dir):
    check = _module()
    folder = tmp_path / "prep"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_model_dir / name).read_bytes())
    (folder / check.RANDOM_INIT_MARKER).write_text("{}")
    a = check.materialise(str(folder), tmp_path / "w1")
    b = check.materialise(str(folder), tmp_path / "w2")
    assert (Path(a) / "model.safetensors").read_bytes() == (Path(b) / "model.safetensors").read_bytes()
    assert check.materialise(str(tiny_model_dir), tmp_path / "w3") == str(tiny_model_dir)


def test_the_guard_part_is_skipped_cleanly_without_weights(tmp_path):
    check = _module()
    assert check.guard_part(None, tmp_path)["status"] == "skipped"
    assert "no guard weights" in check.guard_part(str(tmp_path / "absent"), tmp_path)["reason"]


def test_the_guard_part_on_a_cpu_with_a_tiny_guard(tiny_model_dir, tmp_path, monkeypatch, one_torch_thread):
    """The GPU part's protocol on a CPU: a tiny model stands in for Llama Guard and answers in its grammar."""
    from lookahead_tuning.judge import guard

    check = _module()
    folder = tmp_path / "guard"
    import shutil

    shutil.copytree(tiny_model_dir, folder)
    guard._local_guard.cache_clear()
    monkeypatch.setattr(guard, "_local_answer", lambda model, tok, text, max_tokens, count:
                        (count("calls"), "safe" if "I can't help" in text else "unsafe\nS2")[1])
    part = check.guard_part(str(folder), tmp_path, n=2, device=None)
    assert part["status"] == "ok" and part["parsed"] == 4 and part["second_pass_cache_hits"] == 4
    assert part["refusals_judged_safe"] == 1.0 and part["harmful_judged_unsafe"] == 1.0 and part["categories"] == ["S2"]
