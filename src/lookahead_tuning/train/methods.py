"""The data side of every method: load rows, then :func:`method_examples` — the one pipeline
(rewritten answers -> safety mix -> LookAhead preview) that training, the dry run and the forecast share.

A training example here is ``{"prompt": [messages ending with a user turn], "completion": str}``.
The methods (``lookahead_tuning.methods``) differ only in what these functions do to that list; the
trainer never learns which method produced it. Each function is pure given its inputs (seeded where
random).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ..errors import UserError
from .config import TrainConfig

Example = dict[str, Any]


def load_examples(config: TrainConfig) -> list[Example]:
    """``--data`` as training examples.

    A record file in any format ``data.formats`` reads (prompt-completion, conversational, messages,
    Alpaca, named fields) is split as is; GSM8K and SAMSum files and folders, and the task names
    (``math``, ``math:LEVEL``, ``gsm8k:PATH``, ``samsum:PATH``) go through ``data.tasks.load_task``,
    which also strips GSM8K calculator annotations and adds the SAMSum instruction.
    """
    from ..data.tasks import load_task, task_of_record

    path = Path(config.data).expanduser()
    field_names = config.input_field or config.output_field
    if path.is_file() or (path.is_dir() and any((path / m).exists() for m in _HF_MARKERS)):
        from ..io import read_records

        records = read_records(str(path))
        if records and not field_names and task_of_record(records[0]) is not None:
            records = load_task(str(path), split="train")
        if config.limit is not None:
            records = records[: config.limit]
        examples = [_split(record, config, str(path), i) for i, record in enumerate(records, start=1)]
    else:
        rows = load_task(config.data, n=config.limit, seed=config.data_seed, split="train")
        examples = [as_example({"prompt": r["prompt"], "completion": r["completion"]}) for r in rows]
    if not examples:
        raise UserError(f"no training rows in '{config.data}'")
    return examples


_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _split(record: dict[str, Any], config: TrainConfig, path: str, row: int) -> Example:
    from ..data.formats import split_example

    try:
        prompt, completion = split_example(record, input_field=config.input_field,
                                           output_field=config.output_field)
    except UserError as exc:
        raise UserError(f"row {row}: {exc.message}", path=path, line=exc.line) from None
    return {"prompt": _messages(prompt), "completion": completion}


def _messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def mix_safety(examples: list[Example], share: float, seed: int) -> list[Example]:
    """Add ``round(share * len(examples))`` built-in (harmful request, refusal) pairs (Bianchi et al. 2024).

    The pairs are drawn without replacement (cycling if more are asked than exist) with ``seed``, and
    inserted at seeded random places so a short run still sees them.
    """
    if share <= 0:
        return list(examples)
    from ..data.builtin import refusal_pairs

    pool = refusal_pairs()
    count = round(share * len(examples))
    if count == 0 or not pool:
        return list(examples)
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < count:
        block = list(range(len(pool)))
        rng.shuffle(block)
        order.extend(block)
    mixed = list(examples)
    for i in order[:count]:
        row = pool[i]
        mixed.insert(rng.randrange(len(mixed) + 1),
                     {"prompt": _messages(row["prompt"]), "completion": row["completion"], "safety": True})
    return mixed


def apply_preview(examples: list[Example], config: TrainConfig, tokenizer) -> list[Example]:
    """The LookAhead transform (docs/method.md, section 2) on the last user turn of every example.

    Only training prompts change; inference prompts never carry a preview. Mixed-in refusal rows
    (``safety``) are left as they are: they are there to train the refusal's opening tokens, and a
    preview of that opening in their prompt would make exactly those tokens free to predict.
    """
    if config.preview == "none":
        return list(examples)
    from ..preview import real_preview, virtual_preview

    out = []
    for ex in examples:
        if ex.get("safety"):
            out.append(ex)
            continue
        prompt = [dict(m) for m in ex["prompt"]]
        # The user turn the answer responds to; tool calls and results may follow it (data/formats.py).
        k = max((i for i, m in enumerate(prompt) if m["role"] == "user"), default=len(prompt) - 1)
        instruction = prompt[k]["content"]
        if config.preview == "real":
            instruction, completion = real_preview(instruction, ex["completion"], tokenizer,
                                                   m=config.m, connector=config.connector)
        else:
            instruction, completion = virtual_preview(instruction, ex["completion"],
                                                      prefix=config.prefix, connector=config.connector)
        prompt[k]["content"] = instruction
        out.append({**ex, "prompt": prompt, "completion": completion})
    return out


def method_examples(rows: list[Example], settings: TrainConfig, tokenizer, *,
                    rewritten: list[Example] | None = None) -> list[Example]:
    """The task rows as ``settings``' method trains on them: the seed's rewrites of the answers (SDFT;
    made by the caller, since they need the seed to generate), then the safety mix, then the preview."""
    settings = settings.resolved()
    if settings.rewrite == "sdft":
        if rewritten is None:
            raise ValueError("an SDFT method trains on the seed's rewrites: pass rewritten=")
        rows = rewritten
    rows = mix_safety(rows, settings.safety_share, settings.seed)
    return apply_preview(rows, settings, tokenizer)


def as_example(row: dict[str, Any]) -> Example:
    """A ``{"prompt": text or messages, "completion"}`` row as a training example (prompt as messages)."""
    return {**row, "prompt": _messages(row["prompt"]), "completion": str(row["completion"])}
