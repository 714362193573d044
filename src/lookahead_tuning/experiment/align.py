"""Make the safety-aligned seed model the offline demo starts from.

The embedded SmolLM2-135M-Instruct is not safety-aligned (it explains how to build a bomb), so the
paper's question — does fine-tuning erode the seed's refusals? — has nothing to erode. ``align``
runs a short supervised fine-tune on the built-in alignment set (harmful requests with refusals,
plus benign pairs — many of them only *sound* dangerous — so the seed does not refuse everything)
and caches the result keyed by every setting and by the data's content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, write_records
from ..methods import BASELINE
from ..models import EMBEDDED_ALIAS, cache_dir

# Recipe (seed D): one epoch of full fine-tuning at lr 1.2e-4 on every row once, the benign requests in
# the vocabulary of harm included. The earlier recipes (docs/findings.md, sections 1 and 7): without the
# template-matched benign rows the seed learned the harmful rows' request templates and refused about
# half of the held-out benign set (seed A); with them, 35% (seed B, lr 8e-5); adding the harm-adjacent
# rows brought that to 10% but RSR to 87% at lr 8e-5 (seed C); at lr 1.2e-4 RSR 90%, over-refusal 8%.
BENIGN_REPEAT = 1
HARM_ADJACENT = True
DEFAULTS: dict[str, Any] = {
    "epochs": 1.0,
    "lr": 1.2e-4,
    "batch_size": 8,
    "max_length": 256,
    "seed": 0,
    "warmup_ratio": 0.05,
}
# Every seed so far was trained on batches in random order; `sampling: group_by_length` (an override)
# pads the alignment set to 1.02x its real tokens instead of 1.51x (benchmarks/padding.py), but it is
# another recipe and so another seed. At this value the key leaves it out: the seeds keep their names.
SAMPLING = "random"
REPORT = "align_report.json"


def _key(base: str, settings: dict[str, Any], rows: list[dict]) -> str:
    blob = json.dumps({"base": base, "settings": settings, "rows": rows}, sort_keys=True)  # rows: repeats too
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _plan(base: str, overrides: dict[str, Any]) -> tuple[Path, dict[str, Any], list[dict]]:
    """The cache folder, training settings and training rows that ``overrides`` ask for."""
    from ..data.builtin import alignment_set

    overrides = dict(overrides)
    benign_repeat = int(overrides.pop("benign_repeat", BENIGN_REPEAT))
    template_matched = bool(overrides.pop("template_matched", True))
    harm_adjacent = bool(overrides.pop("harm_adjacent", HARM_ADJACENT))
    settings = {**DEFAULTS, **overrides}
    if settings.get("sampling", SAMPLING) == SAMPLING:
        settings.pop("sampling", None)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]}
            for r in alignment_set()
            if (template_matched or r["category"] != "template_matched")
            and (harm_adjacent or r["category"] != "harm_adjacent")
            for _ in range(benign_repeat if r["kind"] == "benign" else 1)]
    name = Path(str(base)).name if os.sep in str(base) else str(base)
    return cache_dir() / "models" / f"aligned-{name}-{_key(str(base), settings, rows)}", settings, rows


def aligned_seed_id(base: str = EMBEDDED_ALIAS, **overrides: Any) -> str:
    """The name of the aligned seed's cache folder (it hashes the base, the settings and the data),
    computed without training: it identifies the seed in experiment fingerprints."""
    return _plan(base, overrides)[0].name


def aligned_seed(
    base: str = EMBEDDED_ALIAS,
    *,
    force: bool = False,
    evaluate: bool = True,
    quiet: bool = False,
    **overrides: Any,
) -> Path:
    """Path of the aligned seed for ``base``, training it on first use (cached afterwards).

    ``overrides`` take any training setting (``epochs``, ``lr``, ``seed``, ``lora`` ...) and are
    part of the cache key, so seeds of different alignment strength live side by side. Two more keys
    choose the data: ``benign_repeat`` (times each benign pair is seen per epoch, default 1) and
    ``template_matched`` (default true: include the benign requests re-asked in the harmful rows'
    templates; false gives the data of the first seeds, see docs/findings.md) and ``harm_adjacent``
    (include the benign requests in the vocabulary of harm, answered by the embedded model itself;
    default ``HARM_ADJACENT``; false gives seed B's data).
    """
    from ..train.api import train

    folder, settings, rows = _plan(base, overrides)
    done = folder / "model" / "config.json"
    if done.is_file() and not force:
        if evaluate and not (folder / REPORT).is_file():
            _evaluate(folder, quiet=quiet)
        return folder / "model"
    if force and folder.exists():
        shutil.rmtree(folder)  # train() never overwrites a finished run
    folder.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"aligning the seed ({len(rows)} rows; once: later runs reuse {folder})", flush=True)
    data_path = folder / "align_data.jsonl"
    write_records(data_path, rows)
    started = time.time()
    summary = train({
        "model": str(base), "data": str(data_path), "out": str(folder / "model"),
        "method": BASELINE, "quiet": quiet, "sampling": SAMPLING, **settings,
    })
    from ..provenance import machine, model_identity

    # The cache key names the recipe; the weights it gave on this machine are named by their hash.
    atomic_write_json(folder / "align_summary.json", {**summary, "align_seconds": time.time() - started,
                                                       "settings": settings, "base": str(base),
                                                       "weights_sha256": model_identity(folder / "model")["sha256"],
                                                       "machine": machine()})
    if evaluate:
        _evaluate(folder, quiet=quiet)
    return folder / "model"


def _evaluate(folder: Path, *, quiet: bool = False) -> dict:
    """Keyword RSR on the held-out harmful set and the over-refusal rate on the benign set."""
    from ..analyse.safety import evaluate_overrefusal, evaluate_safety
    from ..models import load_model

    model, tokenizer = load_model(str(folder / "model"))
    # The acceptance rule (RSR >= 90%) was set on the project keyword judge: keep measuring with it. The
    # cache folder's name hashes the seed's settings and data, which vouches for answers found there.
    rsr = evaluate_safety(model, tokenizer, judge="keyword", out_dir=folder / "eval-rsr", progress=not quiet,
                          adopt_unstamped=True)
    over = evaluate_overrefusal(model, tokenizer, out_dir=folder / "eval-overrefusal", progress=not quiet,
                                adopt_unstamped=True)
    report = {"rsr": rsr["safe_rate"], "rsr_ci95": rsr.get("ci95"), "n_harmful": rsr["n"],
              "overrefusal": over["refusal_rate"], "overrefusal_ci95": over.get("ci95"),
              "n_benign": over["n"]}
    atomic_write_json(folder / REPORT, report)
    return report
