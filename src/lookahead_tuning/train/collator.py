"""Tokenize examples with the chat formatting shared with inference, and pad them into batches.

No packing: one example per row, so attention never crosses examples and the answer positions
(the quantity LookAhead is about) keep their meaning.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..chat import encode_example
from ..errors import UserError
from .losses import IGNORE


def tokenize_examples(examples: list[dict[str, Any]], tokenizer, *, max_length: int,
                      system_prompt: str | None = None, template: str = "auto") -> list[dict[str, list[int]]]:
    """``chat.encode_example`` for each example (loss on the answer and end-of-turn only).

    Examples whose prompt alone fills ``max_length`` keep no answer token and are dropped with a
    warning; if none is left that is an error the user must fix (raise ``--max-length``).
    """
    rows, dropped = [], 0
    for ex in examples:
        enc = encode_example(tokenizer, ex["prompt"], ex["completion"], system_prompt=system_prompt,
                             template=template, max_length=max_length, prefill=ex.get("prefill"))
        if sum(1 for t in enc["labels"][1:] if t != IGNORE) == 0:
            dropped += 1
            continue
        rows.append(enc)
    if not rows:
        raise UserError(f"every example's prompt fills max_length={max_length}; raise --max-length")
    if dropped:
        warnings.warn(f"{dropped} of {len(examples)} examples have no answer token within max_length={max_length}"
                      " and were dropped", stacklevel=2)
    return rows


class PadCollator:
    """Right-pad ``input_ids`` (pad id), ``labels`` (-100) and ``attention_mask`` (0) to the longest row."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows], dtype=torch.long)

        return {"input_ids": pad("input_ids", self.pad_token_id), "labels": pad("labels", IGNORE),
                "attention_mask": pad("attention_mask", 0)}


def count_tokens(rows: list[dict[str, list[int]]]) -> dict[str, int]:
    """Answer (labelled) and total tokens of one pass over ``rows``."""
    answer = sum(sum(1 for t in r["labels"] if t != IGNORE) for r in rows)
    return {"answer": answer, "total": sum(len(r["input_ids"]) for r in rows)}
