"""Determinism on CPU: the same seed gives the same transformed data (byte hash), the same training loss
curve and weights, and the same metrics; a different seed changes what it should (so the checks can fail)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

# Keys whose values are clocks or machine state, not results.
VOLATILE = ("seconds", "time", "_at", "peak_rss", "run_dir", "out_dir", "path")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stable(obj):
    """``obj`` without wall-clock and path fields, for comparing two runs' JSON."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if not any(t in k for t in VOLATILE)}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("det") / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {a} times {b}?",
                                        "completion": f"{a} times {b} is {a * b}, so the answer is {a * b}."}) + "\n"
                            for a, b in [(2, 3), (4, 5), (6, 7), (8, 9), (3, 3), (5, 2), (7, 1), (9, 9)]),
                    encoding="utf-8")
    return path


def test_preview_output_is_byte_identical(rows_file, tiny_model_dir, tmp_path):
    from lookahead_tuning.cli import main

    hashes = {}
    for mode in ("real", "virtual"):
        for run in (1, 2):
            out = tmp_path / f"{mode}-{run}.jsonl"
            assert main(["preview", str(rows_file), str(out), "--mode", mode, "--tokenizer", str(tiny_model_dir),
                         "--quiet"]) == 0
            hashes[mode, run] = _sha(out)
    assert hashes["real", 1] == hashes["real", 2]
    assert hashes["virtual", 1] == hashes["virtual", 2]
    assert hashes["real", 1] != hashes["virtual", 1]


def test_method_data_is_a_function_of_the_seed(rows_file, tokenizer):
    """The whole data side of a method (task rows, seeded safety mix, preview) hashes the same per seed."""
    from lookahead_tuning.data.mathgen import generate_problems
    from lookahead_tuning.train.config import make_config
    from lookahead_tuning.train.methods import apply_preview, load_examples, mix_safety

    def digest(seed: int, data: str) -> str:
        cfg = make_config({"model": "m", "data": data, "out": "-", "method": "lookahead-real", "seed": seed,
                           "limit": 16}).resolved()
        examples = mix_safety(load_examples(cfg), 0.5, cfg.seed)
        examples = apply_preview(examples, cfg, tokenizer)
        return hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()

    assert digest(0, str(rows_file)) == digest(0, str(rows_file))
    assert digest(0, str(rows_file)) != digest(1, str(rows_file))  # the mix is seeded
    assert digest(3, "math") == digest(3, "math")
    assert digest(3, "math") != digest(4, "math")  # the generator is seeded
    assert generate_problems(20, seed=5) == generate_problems(20, seed=5)
    assert generate_problems(20, seed=5) != generate_problems(20, seed=6)


def _train(tiny_model_dir: Path, data: Path, out: Path, seed: int) -> tuple[list[float], dict]:
    from safetensors.torch import load_file

    from lookahead_tuning.train.api import train

    train({"model": str(tiny_model_dir), "data": str(data), "out": str(out), "method": "lookahead-real",
           "max_steps": 3, "batch_size": 2, "lr": 1e-3, "max_length": 64, "seed": seed, "quiet": True,
           "bf16": "off", "warmup_ratio": 0.0})
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    return losses, load_file(str(out / "model.safetensors"))


def test_training_loss_curve_and_weights_repeat(rows_file, tiny_model_dir, tmp_path):
    import torch

    losses_a, weights_a = _train(tiny_model_dir, rows_file, tmp_path / "a", seed=11)
    losses_b, weights_b = _train(tiny_model_dir, rows_file, tmp_path / "b", seed=11)
    losses_c, _ = _train(tiny_model_dir, rows_file, tmp_path / "c", seed=12)
    assert len(losses_a) == 3
    assert losses_a == losses_b  # exactly: same data order, same kernels, one CPU process
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    assert losses_c != losses_a  # another seed shuffles the rows differently


def test_metrics_repeat(tiny_model_dir, tmp_path):
    from lookahead_tuning.cli import main

    def run(name: str, *extra: str) -> dict:
        out = tmp_path / name
        assert main(["eval", "safety", "--model", str(tiny_model_dir), "--limit", "4", "--prefill",
                     "--max-new-tokens", "4", "--batch-size", "2", "--out", str(out), "--quiet", *extra]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        generations = (out / "generations.jsonl").read_text()
        return {"metrics": _stable(metrics), "generations": generations}

    first, second = run("one"), run("two")
    assert first["metrics"] == second["metrics"]
    assert first["generations"] == second["generations"]

    # Sampled generation is seeded too: the same seed repeats, another seed differs.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me a story.\nName three colours.\nWhat is 2 + 2?\n", encoding="utf-8")

    def sample(name: str, seed: int) -> list[str]:
        out = tmp_path / f"{name}.jsonl"
        assert main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out),
                     "--sample", "--temperature", "1.5", "--seed", str(seed), "--max-new-tokens", "6",
                     "--quiet"]) == 0
        return [json.loads(line)["completion"] for line in out.read_text().splitlines()]

    assert sample("s1", 1) == sample("s1-again", 1)
    assert sample("s1", 1) != sample("s2", 2)
