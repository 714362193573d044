"""``lookahead-tuning demo``: the paper's experiment on the embedded model, offline, on a CPU.

Runs the shipped ``configs/demo.yaml``: SmolLM2-135M-Instruct safety-aligned by ``align`` (cached),
fine-tuned on the built-in GSM8K-style math task (real GSM8K with ``--gsm8k-dir``) with seed, vanilla,
lookahead-real (m = 6) and lookahead-virtual (``--full`` adds constrained-sft and sdft), evaluated on
the built-in held-out harmful set. ``--quick`` runs ``configs/demo-quick.yaml``: the same pipeline
with fewer examples and steps, to check an installation in minutes (its numbers mean little).
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, make_experiment

FULL_EXTRA = ("constrained-sft", "sdft")


def shipped_config(name: str) -> Path:
    """Path of a config shipped inside the package (``configs/<name>``)."""
    return Path(str(resources.files("lookahead_tuning") / "configs" / name))


def demo_config(*, quick: bool = False, full: bool = False, gsm8k_dir: str | None = None) -> ExperimentConfig:
    """The demo's experiment config with the command-line choices applied."""
    from ..io import read_yaml

    path = shipped_config("demo-quick.yaml" if quick else "demo.yaml")
    data: dict[str, Any] = read_yaml(path)
    if full:
        names = [m if isinstance(m, str) else m.get("name") for m in data["methods"]]
        data["methods"] = list(data["methods"]) + [m for m in FULL_EXTRA if m not in names]
    if gsm8k_dir:
        task = dict(data["tasks"][0])
        task.update({"name": "gsm8k", "kind": "gsm8k", "train": str(Path(gsm8k_dir) / "train.jsonl"), "test": gsm8k_dir})
        data["tasks"] = [task]
    return make_experiment(data, source=str(path))


def check_gsm8k_dir(gsm8k_dir: str) -> None:
    """``--gsm8k-dir`` must hold GSM8K's two files: checked before anything runs, ``--dry-run`` too
    (a plan for data that is not there is a plan that cannot run)."""
    from ..errors import UserError

    folder = Path(gsm8k_dir)
    missing = [name for name in ("train.jsonl", "test.jsonl") if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        what = "no such folder" if not folder.is_dir() else f"folder has no {missing[0]}"
        raise UserError(f"--gsm8k-dir: {what} (it needs GSM8K's train.jsonl and test.jsonl)", path=gsm8k_dir)


def default_out(quick: bool) -> Path:
    return Path("runs") / f"demo{'-quick' if quick else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
