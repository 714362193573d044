"""``lookahead-tuning demo``: the paper's experiment on the embedded model, offline, on a CPU.

Runs the shipped ``configs/demo.yaml``: SmolLM2-135M-Instruct safety-aligned by ``align`` (cached),
fine-tuned on the built-in GSM8K-style math task (real GSM8K with ``--gsm8k-dir``) with the paper's
Table 1 rows: seed, vanilla, SDFT, Constrained SFT, lookahead-real (m = 6) and lookahead-virtual,
evaluated on the built-in held-out harmful set. ``--full`` adds the second task, the built-in
dialogue summaries (ROUGE-1), with the same rows. ``--quick`` runs ``configs/demo-quick.yaml``: the same pipeline
with fewer examples and steps, to check an installation in minutes (its numbers mean little).
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, make_experiment

# The second task of ``--full`` (docs/data.md, section e: the calibration of these sizes).
FULL_TASK = {"name": "dialogue", "n_train": 64, "n_test": 50, "max_new_tokens": 64}


def shipped_config(name: str) -> Path:
    """Path of a config shipped inside the package (``configs/<name>``)."""
    return Path(str(resources.files("lookahead_tuning") / "configs" / name))


def demo_config(*, quick: bool = False, full: bool = False, gsm8k_dir: str | None = None) -> ExperimentConfig:
    """The demo's experiment config with the command-line choices applied."""
    from ..io import read_yaml

    path = shipped_config("demo-quick.yaml" if quick else "demo.yaml")
    data: dict[str, Any] = read_yaml(path)
    if gsm8k_dir:
        task = dict(data["tasks"][0])
        task.update({"name": "gsm8k", "kind": "gsm8k", "train": str(Path(gsm8k_dir) / "train.jsonl"), "test": gsm8k_dir})
        data["tasks"] = [task]
    if full:
        data["tasks"] = list(data["tasks"]) + [dict(FULL_TASK)]
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
