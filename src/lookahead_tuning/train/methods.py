"""The data side of every method: load rows, then :func:`method_examples` — the one pipeline
(rewritten answers -> safety mix -> LookAhead preview) that training, the dry run and the forecast share,
each describing a method's data by its :class:`Recipe` (never by a whole training config).

A training example here is ``{"prompt": [messages ending with a user turn], "completion": str}``.
The methods (``lookahead_tuning.methods``) differ only in what these functions do to that list; the
trainer never learns which method produced it. Each function is pure given its inputs (seeded where
random).
"""

from __future__ import annotations

import contextlib
import fractions
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from ..errors import UserError
from ..methods import BASELINE, Preview, Rewrite, get_method
from ..validate import explain
from .config import BUILTIN_POISON, TrainConfig

Example = dict[str, Any]


def effective(values: Mapping[str, Any], key: str) -> Any:
    """The value of training key ``key`` a run given ``values`` (training keys: a cell's, a config layer's)
    uses: the value set, else its method's part, else the training default, as the training config holds
    it (``epochs: 3`` is 3.0)."""
    value = values.get(key)
    if value is None:
        parts = get_method(values.get("method") or BASELINE).parts()
        value = parts[key] if key in parts else TrainConfig.model_fields[key].default
    field = TrainConfig.model_fields[key]
    kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise UserError(explain(exc, None, prefix=f"{key}").message) from None


@dataclass(frozen=True)
class Recipe:
    """What a method does to the task rows before training (docs/method.md, section 3): train on the
    seed's rewrites of the answers or not, mix in a share of refusal pairs (drawn with ``seed``), preview
    the answer in the prompt (``m`` tokens of it, or ``prefix``, after ``connector``)."""

    preview: Preview
    rewrite: Rewrite
    safety_share: float
    m: int
    prefix: str
    connector: str
    seed: int

    @classmethod
    def of(cls, settings: TrainConfig | Mapping[str, Any]) -> Recipe:
        """The recipe of a training config or of validated training keys (keys set win over the method's)."""
        values = settings.model_dump() if isinstance(settings, TrainConfig) else settings
        return cls(**{f.name: effective(values, f.name) for f in fields(cls)})


def read_examples(data: str, *, limit: int | None = None, input_field: str | None = None,
                  output_field: str | None = None, data_seed: int = 0) -> list[Example]:
    """``data`` (a file, folder or task name; training's ``--data``) as training examples.

    A record file in any format ``data.formats`` reads (prompt-completion, conversational, messages,
    Alpaca, named fields) is split as is; GSM8K and SAMSum files and folders, and the task names
    (``math``, ``math:LEVEL``, ``gsm8k:PATH``, ``samsum:PATH``) go through ``data.tasks.load_task``,
    which also strips GSM8K calculator annotations and adds the SAMSum instruction.
    """
    from ..data.tasks import load_task, task_of_record

    path = Path(data).expanduser()
    named = bool(input_field or output_field)  # named fields: a record file, whatever its fields look like
    if path.is_file() or (path.is_dir() and any((path / m).exists() for m in _HF_MARKERS)):
        from ..io import iter_records, read_records

        if path.is_file():  # a task file is read once, by its loader: its first record tells which it is
            task_file = not named and _first_is_task_row(iter_records(str(path)))
            records = load_task(str(path), split="train") if task_file else read_records(str(path))
        else:
            records = read_records(str(path))
            if records and not named and task_of_record(records[0]) is not None:
                records = load_task(str(path), split="train")
        if limit is not None:
            records = records[:limit]
        examples = [_split(record, input_field, output_field, str(path), i) for i, record in enumerate(records, start=1)]
    else:
        rows = load_task(data, n=limit, seed=data_seed, split="train")
        examples = [as_example({"prompt": r["prompt"], "completion": r["completion"]}) for r in rows]
    if not examples:
        raise UserError(f"no training rows in '{data}'")
    return examples


# The training keys that decide which rows --data gives (read_examples' options).
EXAMPLE_KEYS = ("limit", "input_field", "output_field", "data_seed")


def load_examples(config: TrainConfig, tokenizer=None) -> list[Example]:
    """A training config's ``--data`` as training examples (:func:`read_examples`), poisoned as its
    ``poison*`` keys say (:func:`poison_examples`); with ``tokenizer``, refused when a row holds one of
    its special tokens (:func:`refuse_control_tokens`)."""
    examples = [] if config.data is None else \
        read_examples(config.data, **{k: getattr(config, k) for k in EXAMPLE_KEYS})
    refuse_control_tokens(examples, tokenizer, Recipe.of(config), source=config.data)
    poison = Poison.of(config)
    if poison is None:
        return examples
    harmful = harmful_rows(poison.source)
    refuse_control_tokens(harmful, tokenizer, source=poison.source)
    return poison.mix(examples, harmful)


def harmful_rows(source: str) -> list[Example]:
    """The harmful rows of a ``poison`` source as training examples: the built-in poison set, or a record
    file or folder read like ``--data`` (a BeaverTails-style ``prompt``/``response`` file as is)."""
    if source == BUILTIN_POISON:
        from ..data.builtin import poison_set

        return [as_example(row) for row in poison_set()]
    if not Path(source).expanduser().exists():
        raise UserError(f"poison: no such file or folder (a record file of harmful rows, or {BUILTIN_POISON})",
                        path=source)
    return read_examples(source)


@dataclass(frozen=True)
class Poison:
    """Harmful rows in the user's data (docs/training.md, "Poisoned data"): the harmful fine-tuning
    attack. ``ratio`` p: ``round(p * n)`` (halves up) of the n task rows are replaced by harmful rows, so
    the training set keeps n rows of which that share is harmful (the protocol of Vaccine, Lisa and
    Booster); ``count`` N: the training set is N harmful rows and nothing else (Qi et al.'s pure attack).
    Which task rows stay, which harmful rows enter and where they go are drawn with ``seed`` (the
    run's ``data_seed``, so training seeds differ in training noise only); for one seed and one data
    set, a larger ratio keeps a subset of the task rows and adds a superset of the harmful ones."""

    source: str  # a record file or folder (any format read_examples reads), or BUILTIN_POISON
    ratio: float
    count: int | None
    seed: int

    @classmethod
    def of(cls, settings: TrainConfig | Mapping[str, Any]) -> Poison | None:
        """The poisoning a training config (or validated training keys) asks for; ``None`` for clean data."""
        values = settings.model_dump() if isinstance(settings, TrainConfig) else settings
        ratio, count = effective(values, "poison_ratio"), effective(values, "poison_count")
        if not ratio and count is None:
            return None
        return cls(source=effective(values, "poison") or BUILTIN_POISON, ratio=ratio, count=count,
                   seed=effective(values, "data_seed"))

    def harmful_count(self, n: int) -> int:
        """How many of the training rows are harmful, given ``n`` task rows."""
        if self.count is not None:
            return self.count
        # p as written (0.15, not the float just below it), so a half rounds up exactly
        k = math.floor(fractions.Fraction(repr(self.ratio)) * n + fractions.Fraction(1, 2))
        if k == 0:
            raise UserError(f"poison_ratio {self.ratio:g} of {n} task rows is no harmful row (p * n rounds to "
                            "0); raise the ratio or train on more rows")
        return k

    def mix(self, examples: list[Example], harmful: list[Example]) -> list[Example]:
        """``examples`` with :meth:`harmful_count` of them replaced by rows of ``harmful`` (marked
        ``poison``), drawn without replacement (cycling when more are asked than exist)."""
        if not harmful:
            raise UserError("no harmful rows to poison with", path=self.source)
        n = len(examples)
        k = self.harmful_count(n)
        rng = random.Random(f"poison/{self.seed}")  # apart from the safety mix's draws
        order = list(range(n))
        rng.shuffle(order)
        kept = [examples[i] for i in sorted(order[:n - k])] if self.count is None else []
        drawn = [{**harmful[i], "poison": True} for i in _draw(rng, len(harmful), k)]
        return _insert(rng, kept, drawn)

    def record(self, examples: list[Example]) -> dict[str, Any]:
        """What ``summary.json`` says of the poisoning of ``examples`` (the training set it made)."""
        return {"source": self.source, "ratio": self.ratio, "count": self.count, "seed": self.seed,
                "harmful_rows": sum(1 for ex in examples if ex.get("poison")), "rows": len(examples)}


def refuse_control_tokens(examples: list[Example], tokenizer, recipe: Recipe | None = None, *,
                          source: str | None = None) -> None:
    """A :class:`UserError` naming the row (and ``source``, the data) when a training row, or the connector
    or prefix the recipe's preview adds, holds a special token of ``tokenizer`` as text
    (``chat.refuse_control_tokens``; docs/preview.md, "Control tokens in data"). Rows are numbered from 1,
    in the order they were read."""
    from ..chat import control_token_in, control_token_message
    from ..chat import refuse_control_tokens as refuse

    if tokenizer is None:
        return
    if recipe is not None and recipe.preview != "none":
        for key in ("connector", "prefix") if recipe.preview == "virtual" else ("connector",):
            token = control_token_in(tokenizer, getattr(recipe, key))
            if token:
                raise UserError(control_token_message(token, f"'{key}'"))
    for row, ex in enumerate(examples, start=1):
        if ex.get("safety"):
            continue  # the built-in refusal pairs, the same for every tokenizer
        refuse(tokenizer, ex["prompt"], ex["completion"], where=f"row {row}: ", path=source and str(source))
        token = control_token_in(tokenizer, ex["prefill"]) if ex.get("prefill") else None
        if token:
            raise UserError(f"row {row}: " + control_token_message(token, "its 'prefill'"),
                            path=None if source is None else str(source))


_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _first_is_task_row(records: Iterator[dict[str, Any]]) -> bool:
    from ..data.tasks import task_of_record

    with contextlib.closing(records):  # only the first record is read (JSON lines and CSV stream)
        first = next(records, None)
    return first is not None and task_of_record(first) is not None


def _split(record: dict[str, Any], input_field: str | None, output_field: str | None, path: str,
           row: int) -> Example:
    from ..data.formats import split_example

    try:
        prompt, completion = split_example(record, input_field=input_field, output_field=output_field)
    except UserError as exc:
        raise UserError(f"row {row}: {exc.message}", path=path, line=exc.line) from None
    example: Example = {"prompt": _messages(prompt), "completion": completion}
    if record.get("prefill") is not None:  # a given start of the answer, not learned (chat.encode_example)
        if not isinstance(record["prefill"], str):
            raise UserError(f"row {row}: 'prefill' must be text, found {type(record['prefill']).__name__}", path=path)
        example["prefill"] = record["prefill"]
    return example


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
    rows = [{"prompt": _messages(pool[i]["prompt"]), "completion": pool[i]["completion"], "safety": True}
            for i in _draw(rng, len(pool), count)]
    return _insert(rng, examples, rows)


def _draw(rng: random.Random, size: int, count: int) -> list[int]:
    """``count`` indices into a pool of ``size`` rows, without replacement until it is used up (then
    again, in a new order)."""
    order: list[int] = []
    while len(order) < count:
        block = list(range(size))
        rng.shuffle(block)
        order.extend(block)
    return order[:count]


def _insert(rng: random.Random, examples: list[Example], rows: list[Example]) -> list[Example]:
    """``examples`` with ``rows`` inserted at random places (a short run still sees them)."""
    mixed = list(examples)
    for row in rows:
        mixed.insert(rng.randrange(len(mixed) + 1), row)
    return mixed


def apply_preview(examples: list[Example], config: Recipe | TrainConfig, tokenizer) -> list[Example]:
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


def method_examples(rows: list[Example], settings: Recipe | TrainConfig, tokenizer, *,
                    rewritten: list[Example] | None = None) -> list[Example]:
    """The task rows as a method trains on them (its :class:`Recipe`, or a training config's): the seed's
    rewrites of the answers (SDFT; made by the caller, since they need the seed to generate), then the
    safety mix, then the preview."""
    recipe = settings if isinstance(settings, Recipe) else Recipe.of(settings)
    refuse_control_tokens(rows, tokenizer, recipe, source=getattr(settings, "data", None))
    if (recipe.preview != "none" or recipe.rewrite == "sdft") and any(r.get("prefill") for r in rows):
        # Both rewrite the answer from its first tokens, which a row's given start would hide from them.
        raise UserError("rows with a 'prefill' train only with methods without a preview or rewrite (vanilla, "
                        "safety mix, Constrained SFT)")
    if recipe.rewrite == "sdft":
        if rewritten is None:
            raise ValueError("an SDFT method trains on the seed's rewrites: pass rewritten=")
        rows = rewritten
    rows = mix_safety(rows, recipe.safety_share, recipe.seed)
    return apply_preview(rows, recipe, tokenizer)


def as_example(row: dict[str, Any]) -> Example:
    """A ``{"prompt": text or messages, "completion"}`` row as a training example (prompt as messages)."""
    return {**row, "prompt": _messages(row["prompt"]), "completion": str(row["completion"])}
