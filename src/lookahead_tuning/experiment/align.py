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

from ..errors import UserError, describe
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
ALIGN_SAVE_STEPS = 25  # a checkpoint every 25 steps (about 3 min of seed D's alignment on 2 cores)

# Safety recovery (Qi et al., "Safety Alignment Should Be Made More Than Just a Few Tokens Deep", ICLR
# 2025, section 3): besides "request -> refusal", rows "request -> the first k tokens of a compliance
# opening, then a refusal that breaks it off", the loss on the refusal only, k drawn per row. A share of
# the harmful requests (``recovery_share``, 0 = none: seeds A-D) gets one such row, k uniform in
# ``recovery_k`` (inclusive). The openings are builtin_data/recovery.jsonl, at least RECOVERY_K_MAX long.
RECOVERY_SHARE = 0.0
RECOVERY_K = (1, 30)
RECOVERY_K_MAX = 40
# Seeds by name: the overrides each stands for (align's defaults are seed D's recipe). A name is a
# shorthand only: the cache key hashes the settings it expands to, so `recipe: D` is seed D's folder.
RECIPES: dict[str, dict[str, Any]] = {
    "D": {},
    # Batches grouped by length: the alignment set padded to 1.02x its tokens instead of 1.51x
    # (benchmarks/padding.py), so the alignment fits its time budget on 2 cores.
    "E": {"recovery_share": 1.0, "recovery_k": [1, 30], "sampling": "group_by_length"},
}


def _key(base: str, settings: dict[str, Any], rows: list[dict], recovery: dict[str, Any] | None = None) -> str:
    content: dict[str, Any] = {"base": base, "settings": settings, "rows": rows}  # rows: repeats too
    if recovery:  # absent for seeds without recovery rows, whose names predate it
        content["recovery"] = recovery
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def expand_recipe(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with a ``recipe`` name replaced by the settings it stands for (explicit keys win)."""
    overrides = dict(overrides)
    name = overrides.pop("recipe", None)
    if name is None:
        return overrides
    if name not in RECIPES:
        raise UserError(f"unknown alignment recipe {describe(name)}; known: {', '.join(RECIPES)}")
    return {**RECIPES[name], **overrides}


def recovery_settings(share: Any, k: Any) -> dict[str, Any]:
    """The recovery settings checked: a share in 0..1 and ``[k_min, k_max]`` with 1 <= k_min <= k_max <= 40."""
    from ..validate import FRACTION

    share = FRACTION.check(share, "recovery_share")
    if (not isinstance(k, (list, tuple)) or len(k) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in k)
            or not 1 <= k[0] <= k[1] <= RECOVERY_K_MAX):
        raise UserError(f"recovery_k: expected two whole numbers [min, max] with 1 <= min <= max <= "
                        f"{RECOVERY_K_MAX}, got {describe(k)}")
    return {"recovery_share": float(share), "recovery_k": [int(k[0]), int(k[1])]}


def recovery_rows(tokenizer, share: float, k_range: list[int]) -> list[dict]:
    """Safety-recovery training rows ``{"prompt", "prefill", "completion"}``: the first k tokens of a
    built-in compliance opening are the answer's given start (``prefill``: context, no loss) and the
    break-off refusal is what is learned. Which requests and which k are fixed by one seeded draw."""
    import random

    from ..data.builtin import recovery_set
    from ..generate.engine import prefill_text

    pool = recovery_set()
    rng = random.Random("align/recovery/v1")
    chosen = sorted(rng.sample(range(len(pool)), round(share * len(pool))))
    rows = []
    for i in chosen:
        opening = prefill_text(tokenizer, pool[i]["opening"], rng.randint(*k_range))
        # The refusal starts a new word: a cut inside a word ("Sure, here is how to go ab") is broken off.
        sep = "" if opening[-1:].isspace() else " "
        rows.append({"prompt": pool[i]["prompt"], "prefill": opening, "completion": sep + pool[i]["refusal"]})
    return rows


def _plan(base: str, overrides: dict[str, Any]) -> tuple[Path, dict[str, Any], list[dict]]:
    """The cache folder, training settings and training rows that ``overrides`` ask for."""
    from ..data.builtin import alignment_set

    overrides = expand_recipe(overrides)
    benign_repeat = int(overrides.pop("benign_repeat", BENIGN_REPEAT))
    template_matched = bool(overrides.pop("template_matched", True))
    harm_adjacent = bool(overrides.pop("harm_adjacent", HARM_ADJACENT))
    recovery = recovery_settings(overrides.pop("recovery_share", RECOVERY_SHARE),
                                 overrides.pop("recovery_k", list(RECOVERY_K)))
    settings = {**DEFAULTS, **overrides}
    if settings.get("sampling", SAMPLING) == SAMPLING:
        settings.pop("sampling", None)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]}
            for r in alignment_set()
            if (template_matched or r["category"] != "template_matched")
            and (harm_adjacent or r["category"] != "harm_adjacent")
            for _ in range(benign_repeat if r["kind"] == "benign" else 1)]
    if recovery["recovery_share"] > 0:
        from ..models import load_tokenizer

        rows += recovery_rows(load_tokenizer(str(base)), **{"share": recovery["recovery_share"],
                                                              "k_range": recovery["recovery_k"]})
    else:
        recovery = {}
    name = Path(str(base)).name if os.sep in str(base) else str(base)
    key = _key(str(base), settings, rows, recovery)
    return cache_dir() / "models" / f"aligned-{name}-{key}", {**settings, **recovery}, rows


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
    default ``HARM_ADJACENT``; false gives seed B's data), ``recovery_share`` and ``recovery_k`` (the
    safety-recovery rows, see ``RECOVERY_SHARE``), and ``recipe`` names a set of them (:data:`RECIPES`).
    """
    from ..provenance import output_lock

    folder, recipe, rows = _plan(base, overrides)
    # Two runs that need one seed: the second waits for the first to train it, then finds it cached.
    with output_lock(folder, "align", wait=True):
        return _aligned(base, folder, recipe, rows, force=force, evaluate=evaluate, quiet=quiet)


def _aligned(base: str, folder: Path, recipe: dict[str, Any], rows: list[dict], *, force: bool, evaluate: bool,
             quiet: bool) -> Path:
    from ..train.api import train

    settings = {k: v for k, v in recipe.items() if k not in ("recovery_share", "recovery_k")}
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
    # A killed alignment resumes from its last checkpoint (bookkeeping keys: not in the cache key). Resumed
    # weights equal an uninterrupted run's to rounding, not bit for bit (docs/training.md), and a seed is
    # named by its weights' hash, so a resumed seed is a realization of its own, as on another machine.
    summary = train({
        "model": str(base), "data": str(data_path), "out": str(folder / "model"),
        "method": BASELINE, "quiet": quiet, "sampling": SAMPLING, "save_steps": ALIGN_SAVE_STEPS,
        "save_total_limit": 1, "resume": True, **settings,
    })
    from ..provenance import machine, model_identity

    # The cache key names the recipe; the weights it gave on this machine are named by their hash.
    atomic_write_json(folder / "align_summary.json", {**summary, "align_seconds": time.time() - started,
                                                       "settings": recipe, "base": str(base),
                                                       "weights_sha256": model_identity(folder / "model")["sha256"],
                                                       "machine": machine()})
    if evaluate:
        _evaluate(folder, quiet=quiet)
    return folder / "model"


# Prefill depths the report measures (issue 26's targets: the paper's JSR at k = 3, and k = 10).
REPORT_DEPTHS = (3, 10)


def _evaluate(folder: Path, *, quiet: bool = False) -> dict:
    """Keyword RSR on the held-out harmful set, the over-refusal rate on the benign set, and the safe rate
    under prefilling attacks of ``REPORT_DEPTHS`` tokens; every rate also under the reference judge."""
    from ..analyse.safety import evaluate_depths, evaluate_overrefusal, evaluate_safety
    from ..models import load_model

    model, tokenizer = load_model(str(folder / "model"))
    # The acceptance rule (RSR >= 90%) was set on the project keyword judge: keep measuring with it. The
    # cache folder's name hashes the seed's settings and data, which vouches for answers found there.
    rsr = evaluate_safety(model, tokenizer, judge="keyword", out_dir=folder / "eval-rsr", progress=not quiet,
                          adopt_unstamped=True)
    over = evaluate_overrefusal(model, tokenizer, out_dir=folder / "eval-overrefusal", progress=not quiet,
                                adopt_unstamped=True)
    depths = evaluate_depths(model, tokenizer, REPORT_DEPTHS, out_dir=folder / "eval-depths",
                             judge="keyword-reference", progress=not quiet)
    report = {"rsr": rsr["safe_rate"], "rsr_ci95": rsr.get("ci95"), "n_harmful": rsr["n"],
              "overrefusal": over["refusal_rate"], "overrefusal_ci95": over.get("ci95"),
              "n_benign": over["n"],
              "rsr_reference": (rsr.get("judges") or {}).get("keyword-reference", {}).get("safe_rate"),
              "depths": depths["depths"]}
    atomic_write_json(folder / REPORT, report)
    return report
