"""The preview over many rows: lists of records (the CLI's streaming path) and ``datasets.Dataset``.

Every row is handled in three steps, for any format of :mod:`lookahead_tuning.data.formats`:
find the (instruction, answer) slots, compute the previews of all answers of a batch in one batched
tokenizer call, and write the rewritten texts back into a copy of the row. The format is resolved once,
from the first row (or given explicitly), and every row must fit it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..chat import control_finder, control_token_in, control_token_message
from ..data.formats import (
    ExampleError,
    Path,
    Slot,
    get_text,
    preview_slots,
    resolve_fields,
    resolve_format,
    set_texts,
)
from ..errors import UserError
from ..io import Location
from ..methods import PREVIEWS
from .transform import DEFAULT_CONNECTOR, DEFAULT_M, DEFAULT_PREFIX, _check, first_answer_tokens_batch

MODES = tuple(p for p in PREVIEWS if p != "none")  # the previews there are to apply


@dataclass
class PreviewConfig:
    """One preview setting, shared by the library, the CLI and the benchmark."""

    mode: str
    tokenizer: Any = None
    m: int = DEFAULT_M
    prefix: str = DEFAULT_PREFIX
    connector: str = DEFAULT_CONNECTOR
    fmt: str = "auto"
    input_field: str | None = None
    output_field: str | None = None
    all_turns: bool = False
    align: str = "token"
    skip_invalid: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"unknown preview mode '{self.mode}'; expected real or virtual")
        _check(self.m, self.align)
        if self.mode == "real" and self.tokenizer is None:
            raise UserError("the real preview needs a tokenizer (--tokenizer)")
        for flag, value in (("--connector", self.connector), ("--prefix", self.prefix)):
            token = control_token_in(self.tokenizer, value)
            if token:
                raise UserError(control_token_message(token, flag))


@dataclass
class PreviewStats:
    """What a run did, for the summary line. Token counts are per previewed answer."""

    rows: int = 0
    skipped: int = 0
    previews: int = 0
    preview_tokens: int = 0
    shorter_than_m: int = 0
    skip_reasons: list[str] = field(default_factory=list)

    def skip(self, error: UserError) -> None:
        self.skipped += 1
        if len(self.skip_reasons) < 5:
            self.skip_reasons.append(error.render())


def _locate(locations: Sequence[Location | None] | None, k: int) -> Location | None:
    return locations[k] if locations is not None else None


def _fail(error: ExampleError, loc: Location | None, k: int) -> UserError:
    if loc is not None:
        return loc.error(error.message)
    return UserError(f"row {k + 1}: {error.message}")


def preview_rows(
    rows: Sequence[Mapping[str, Any]],
    config: PreviewConfig,
    *,
    locations: Sequence[Location | None] | None = None,
    stats: PreviewStats | None = None,
) -> list[dict]:
    """Apply ``config`` to a batch of rows and return the rewritten rows (inputs are not modified).

    Invalid rows (missing or non-string fields, empty answers) raise :class:`UserError` naming the row
    (its file and line when ``locations`` are given), or are dropped and counted in ``stats`` when
    ``config.skip_invalid`` is set. ``config.fmt`` is resolved on the first row and kept for the rest.
    """
    stats = stats if stats is not None else PreviewStats()
    if rows and config.fmt == "auto":
        try:
            config.fmt = resolve_format(rows[0], "auto", config.input_field, config.output_field)
        except ExampleError as exc:
            raise _fail(exc, _locate(locations, 0), 0) from None
    if rows and config.fmt == "fields" and not (config.input_field and config.output_field):
        try:  # pin the detected pair, so a later row missing one names that field
            config.input_field, config.output_field = resolve_fields(rows[0], config.input_field, config.output_field)
        except ExampleError as exc:
            raise _fail(exc, _locate(locations, 0), 0) from None
    flat = _flat_pair(rows[0], config) if rows else None

    kept: list[tuple[Mapping[str, Any], list[Slot] | None]] = []  # None: the flat pair
    instructions: list[str] = []
    answers: list[str] = []
    control_token = control_finder(config.tokenizer)  # always None without a tokenizer
    for k, row in enumerate(rows):
        if flat is not None:  # hot path for one pair of top-level string fields
            instruction, answer = row.get(flat[0]), row.get(flat[1])
            if (type(instruction) is str and type(answer) is str and answer and not answer.isspace()
                    and not control_token(instruction) and not control_token(answer)):
                kept.append((row, None))
                instructions.append(instruction)
                answers.append(answer)
                continue
        try:  # the general path; for a flat row that failed above it finds the precise error
            slots = preview_slots(row, config.fmt, input_field=config.input_field,
                                  output_field=config.output_field, all_turns=config.all_turns)
            texts = []
            for slot in slots:
                instruction, answer = get_text(row, slot.prompt), get_text(row, slot.answer)
                if not answer.strip():
                    raise ExampleError(f"empty answer in {_slot_name(slot.answer)}")
                for path, text in ((slot.prompt, instruction), (slot.answer, answer)):
                    token = control_token(text)
                    if token:
                        raise ExampleError(control_token_message(token, _slot_name(path)))
                texts.append((instruction, answer))
        except ExampleError as exc:
            err = _fail(exc, _locate(locations, k), k)
            if not config.skip_invalid:
                raise err from None
            stats.skip(err)
            continue
        kept.append((row, slots))
        instructions.extend(t[0] for t in texts)
        answers.extend(t[1] for t in texts)

    if config.mode == "real":
        previews, counts = first_answer_tokens_batch(answers, config.tokenizer, config.m, align=config.align)
        stats.preview_tokens += sum(counts)
        stats.shorter_than_m += sum(1 for c in counts if c < config.m)
        new_prompts = [f"{i}{config.connector}{p}" for i, p in zip(instructions, previews, strict=True)]
        new_answers = answers
    else:
        tail = config.connector + config.prefix
        new_prompts = [i + tail for i in instructions]
        new_answers = [config.prefix + a for a in answers]

    out = []
    j = 0
    for row, slots in kept:
        if slots is None:
            new = dict(row)
            new[flat[0]] = new_prompts[j]  # type: ignore[index]
            new[flat[1]] = new_answers[j]  # type: ignore[index]
            j += 1
        else:
            updates: dict[Path, str] = {}
            for slot in slots:
                updates[slot.prompt] = new_prompts[j]
                updates[slot.answer] = new_answers[j]
                j += 1
            new = set_texts(row, updates)
        out.append(new)
    stats.rows += len(out)
    stats.previews += len(answers)
    return out


def _flat_pair(first: Mapping[str, Any], config: PreviewConfig) -> tuple[str, str] | None:
    """The (instruction, answer) keys when every row keeps them at the top level, else None."""
    if config.fmt == "prompt-completion":
        return "prompt", "completion"
    if config.fmt == "fields":
        try:
            return resolve_fields(first, config.input_field, config.output_field)
        except ExampleError:
            return None  # the general path reports it with the row's location
    return None


def _slot_name(path: Path) -> str:
    return f"field '{path[0]}'" if len(path) == 1 else f"'{path[0]}' turn {int(path[1]) + 1}"


def preview_example(example: Mapping[str, Any], mode: str, **options: Any) -> dict:
    """The preview of one row of any supported format (options as :class:`PreviewConfig`)."""
    return preview_rows([example], PreviewConfig(mode=mode, **options))[0]


def preview_dataset(
    dataset: Any,
    mode: str,
    *,
    tokenizer: Any = None,
    m: int = DEFAULT_M,
    prefix: str = DEFAULT_PREFIX,
    connector: str = DEFAULT_CONNECTOR,
    fmt: str = "auto",
    input_field: str | None = None,
    output_field: str | None = None,
    all_turns: bool = False,
    align: str = "token",
    batch_size: int = 1000,
) -> Any:
    """Apply the preview to a ``datasets.Dataset`` with a batched ``map`` (one tokenizer call per batch).

    Columns other than the rewritten ones pass through; invalid rows raise :class:`UserError`.
    """
    config = PreviewConfig(mode=mode, tokenizer=tokenizer, m=m, prefix=prefix, connector=connector, fmt=fmt,
                           input_field=input_field, output_field=output_field, all_turns=all_turns, align=align)
    if len(dataset) and config.fmt == "auto":
        config.fmt = resolve_format(dataset[0], "auto", input_field, output_field)

    def apply(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        columns = list(batch)
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        new_rows = preview_rows(rows, config, locations=[Location(None, i + 1) for i in indices])
        return {c: [r[c] for r in new_rows] for c in columns}

    # The tokenizer is not picklable-stable, so caching by fingerprint would be wrong; keep it in memory.
    return dataset.map(apply, batched=True, batch_size=batch_size, with_indices=True,
                       load_from_cache_file=False, desc=f"{mode} preview")
