"""Task utility: GSM8K-style accuracy and SAMSum ROUGE-1 F1 (METHOD.md section 3).

GSM8K accuracy is the share of completions whose number after ``####`` equals the reference's.
Models that never learned the ``####`` convention score 0 on it, which is the paper's definition;
the last number in the completion is reported as a *separate* figure (``fallback_accuracy``) so a
reader can tell "can't do the maths" from "doesn't use the answer format".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import UserError
from .stats import wilson_interval

TASKS = ("gsm8k", "math", "samsum", "dialogue")
# Tasks scored by ROUGE-1 F1 (summaries); the others by accuracy after ####.
ROUGE_TASKS = ("samsum", "dialogue")
# Generous budgets: a truncated chain of thought loses its "#### N" line.
# Built-in math test problems evaluated when no --limit is given (a few minutes on 2 CPU cores).
MATH_EVAL_N = 200
DEFAULT_MAX_NEW_TOKENS = {"gsm8k": 256, "math": 160, "samsum": 128, "dialogue": 64}

_NUMBER = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?")


def normalise_number(text: str) -> str | None:
    """Canonical form of a numeric answer: no ``$``, commas or spaces, no trailing ``.0``.

    ``"$1,234.50"`` -> ``"1234.5"``, ``"7.0"`` -> ``"7"``, ``"-3"`` -> ``"-3"``. ``None`` when
    the text holds no number.
    """
    match = _NUMBER.search(text or "")
    if not match:
        return None
    raw = match.group(0).replace("$", "").replace(",", "").replace(" ", "")
    value = Decimal(raw).normalize()  # drops trailing zeros: 7.0 -> 7, 2.50 -> 2.5
    text_value = format(value, "f")
    return "0" if text_value in ("-0", "0") else text_value


def extract_hash_answer(text: str) -> str | None:
    """The normalised number after the first ``####`` (GSM8K's answer marker), or ``None``."""
    if not text or "####" not in text:
        return None
    return normalise_number(text.split("####", 1)[1])


def extract_last_number(text: str) -> str | None:
    """The normalised last number anywhere in ``text`` (the fallback figure only)."""
    found = _NUMBER.findall(text or "")
    return normalise_number(found[-1]) if found else None


def gsm8k_scores(completions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Accuracy by the ``####`` answer (headline) and by the last number (fallback), with Wilson CIs.

    ``references`` are the gold answers (full GSM8K answers ending ``#### N``, or bare numbers).
    """
    if len(completions) != len(references):
        raise ValueError("completions and references differ in length")
    n = len(completions)
    strict = fallback = no_marker = 0
    for comp, ref in zip(completions, references, strict=True):
        gold = extract_hash_answer(ref) if "####" in (ref or "") else normalise_number(ref)
        pred = extract_hash_answer(comp)
        if pred is None:
            no_marker += 1
        strict += int(pred is not None and pred == gold)
        last = extract_last_number(comp)
        fallback += int(last is not None and last == gold)
    return {
        "metric": "accuracy",
        "score": strict / n if n else None,
        "accuracy": strict / n if n else None,
        "correct": strict,
        "ci95": list(wilson_interval(strict, n)),
        "fallback_accuracy": fallback / n if n else None,
        "fallback_correct": fallback,
        "fallback_ci95": list(wilson_interval(fallback, n)),
        "missing_marker": no_marker,
        "n": n,
    }


def rouge1_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Mean ROUGE-1 F1 with Porter stemming (``rouge-score``), as in the paper's SAMSum results."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    values = [scorer.score(ref, pred)["rouge1"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
    n = len(values)
    out: dict[str, Any] = {"metric": "rouge1_f1", "score": sum(values) / n if n else None, "n": n}
    if n > 1:
        from .stats import mean_ci

        out["ci95"] = mean_ci(values)["ci95"]
    out["per_example"] = values
    return out


def _task_rows(task: str, data: str | None, limit: int | None) -> list[dict]:
    """Test rows ``{"id", "prompt", "reference"}``, with the same prompt wording training uses
    (``data.loaders.load_task``): a model fine-tuned on a task is evaluated in its own format."""
    from ..data.loaders import load_task

    if task in ("math", "dialogue"):  # built-in generators: --data may name a math level (math:hard)
        rows = load_task(data or task, n=limit or MATH_EVAL_N, split="test")
    elif data is None:
        raise UserError(f"--task {task} needs --data FILE (e.g. the {task} test split)")
    else:
        rows = load_task(f"{task}:{data}", split="test")
    # The full gold answer (GSM8K: worked solution ending "#### N"), as the reference scripts expect.
    out = [{"id": str(r["id"]), "prompt": r["prompt"], "reference": r["completion"]} for r in rows]
    return out[:limit] if limit else out


def evaluate_utility(
    model,
    tokenizer,
    task: str,
    *,
    data: str | None = None,
    out_dir: str | Path,
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    system_prompt: str | None = None,
    progress: bool = True,
    backend: str = "hf",
) -> dict[str, Any]:
    """Generate greedy answers for a task's test rows and score them; returns ``metrics.json``.

    Writes ``generations.jsonl`` (resumable, engine format), ``predictions.jsonl`` in the reference
    format (``ground_truth``, ``completion``) and ``metrics.json`` under ``out_dir``.
    """
    from ..generate.engine import generate, generation_settings
    from ..io import atomic_write_json, write_records

    if task not in TASKS:
        raise UserError(f"unknown task '{task}'; expected one of {', '.join(TASKS)}")
    rows = _task_rows(task, data, limit)
    if not rows:
        raise UserError("no test rows to evaluate", path=data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_new = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]
    items = [{"id": r["id"], "prompt": r["prompt"], "prefill": None, "reference": r["reference"]} for r in rows]
    results = generate(model, tokenizer, items, out_path=out / "generations.jsonl", batch_size=batch_size,
                       max_new_tokens=max_new, system_prompt=system_prompt, progress=progress, backend=backend)
    completions = [r["completion"] for r in results]
    references = [r["reference"] for r in results]
    if task in ROUGE_TASKS:
        metrics = rouge1_scores(completions, references)
        per_example = metrics.pop("per_example")
    else:
        metrics = gsm8k_scores(completions, references)
        per_example = [None] * len(results)
    write_records(out / "predictions.jsonl", [
        {"id": r["id"], "ground_truth": r["reference"], "completion": r["completion"],
         **({"rouge1_f1": s} if s is not None else {})}
        for r, s in zip(results, per_example, strict=True)
    ])
    metrics.update({"task": task, "data": str(data) if data else None, "max_new_tokens": max_new,
                    "system_prompt": system_prompt,
                    "generation": generation_settings(model, backend=backend, max_new_tokens=max_new,
                                                      system_prompt=system_prompt)})
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
