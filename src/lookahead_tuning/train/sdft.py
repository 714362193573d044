"""SDFT (Yang et al. 2024): the seed model rewrites every gold answer in its own words before SFT.

Training on the seed's own phrasing moves its distribution less than training on foreign text.
A rewrite must keep the answer: for GSM8K-style answers (ending ``#### N``) a rewrite whose final
number differs from N, or that has no number, falls back to the gold answer, and kept rewrites are
made to end with ``#### N`` so utility scoring reads them like gold answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.answers import MARKER, final_number
from ..errors import UserError

REWRITES_FILE = "sdft_rewrites.jsonl"

REWRITE_INSTRUCTION = (
    "Below is a question and a reference answer. Write the answer again in your own words. "
    "Keep every step of the reasoning and the same final result."
)
GSM8K_SUFFIX = " Finish with a last line of the form '#### N', where N is the final number."

def gold_final_number(answer: str) -> str | None:
    """N of a GSM8K-style answer ending ``#### N`` (None for other answers)."""
    return final_number(answer)


def rewrite_final_number(text: str) -> str | None:
    """The number a rewrite ends on: after ``####`` when present, else the last number in the text."""
    return final_number(text, fallback_last=True)


def rewrite_prompt(instruction: str, gold: str) -> str:
    """The user turn that asks the seed to rewrite ``gold`` (our own wording)."""
    gsm = gold_final_number(gold) is not None
    return (f"{REWRITE_INSTRUCTION}{GSM8K_SUFFIX if gsm else ''}\n\n"
            f"Question:\n{instruction}\n\nReference answer:\n{gold}")


def accept_rewrite(gold: str, rewrite: str) -> str | None:
    """The rewrite to train on, or None when it must fall back to the gold answer."""
    rewrite = rewrite.strip()
    if not rewrite:
        return None
    target = gold_final_number(gold)
    if target is None:
        return rewrite
    if rewrite_final_number(rewrite) != target:
        return None
    body = rewrite.split(MARKER, 1)[0].rstrip()
    return f"{body}\n#### {target}"


def rewrite_examples(model, tokenizer, examples: list[dict[str, Any]], run_dir: Path, *,
                     batch_size: int = 16, max_new_tokens: int | None = None, system_prompt: str | None = None,
                     template: str = "auto", progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Replace each example's completion by the seed's rewrite; return ``(examples, stats)``.

    Generations go to ``run_dir/sdft_rewrites.jsonl`` as they finish (the engine's resumable
    ``out_path``), so a rerun or a resumed run reuses them and only generates what is missing.
    """
    from ..chat import control_token_in
    from ..generate.engine import generate

    items = []
    for i, ex in enumerate(examples):
        instruction = ex["prompt"][-1]["content"]
        items.append({"id": str(i), "prompt": rewrite_prompt(instruction, ex["completion"]), "prefill": None,
                      "gold": ex["completion"]})
    if max_new_tokens is None:
        longest = max(len(tokenizer(ex["completion"], add_special_tokens=False)["input_ids"]) for ex in examples)
        max_new_tokens = int(longest * 1.5) + 16
    results = generate(model, tokenizer, items, out_path=str(run_dir / REWRITES_FILE), batch_size=batch_size,
                       max_new_tokens=max_new_tokens, do_sample=False, template=template,
                       system_prompt=system_prompt, progress=progress)
    if len(results) != len(examples):
        raise UserError(f"{run_dir / REWRITES_FILE}: holds {len(results)} rewrites for {len(examples)} rows; "
                        "delete it to regenerate")
    out, kept = [], 0
    for ex, result in zip(examples, results, strict=True):
        if result.get("gold") != ex["completion"]:
            raise UserError(f"{run_dir / REWRITES_FILE}: rewrites belong to other data; delete it to regenerate")
        accepted = accept_rewrite(ex["completion"], result.get("completion") or "")
        if accepted is not None and control_token_in(tokenizer, accepted):
            accepted = None  # a rewrite spelling a special token would be refused in training: keep the gold
        kept += accepted is not None
        out.append({**ex, "completion": accepted if accepted is not None else ex["completion"]})
    stats = {"rows": len(examples), "kept": kept, "share_kept": kept / len(examples),
             "max_new_tokens": max_new_tokens}
    return out, stats
