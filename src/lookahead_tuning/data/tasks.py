"""The fine-tuning tasks, one registry: what each is, how its rows are read, how its utility is measured.

A task has a *kind* (``math``, ``dialogue``, ``gsm8k``, ``samsum``): how its rows are made (a built-in
generator, or a file read by a loader of ``data.loaders``), the record fields that tell one of its files
apart, the metric its utility is scored by (a name in ``analyse.utility.METRICS``, which also scores it),
its answer budget and the task of the paper's Table 1 it stands in for. Every reader of a task's kind (the
experiment config, training's loader, the utility evaluation, ``results.json``, the report, the dry run)
asks this registry, so adding a task is one :class:`Task` entry here plus its own loader (and its metric,
when none of the registered ones scores it).

Rows are ``{"id", "prompt", "completion", "ground_truth"}``; train and test rows never overlap.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io import iter_located_records
from . import dialoguegen, mathgen
from .loaders import gsm8k_final, load_gsm8k, load_samsum
from .splits import SPLITS

SAMSUM_PROMPT = "Summarize this dialogue:\n"
# Rows a built-in generator makes for training when ``n`` is not given ...
BUILTIN_TRAIN_N = 1000
# ... and test rows a built-in task is evaluated on without a limit (a few minutes on 2 CPU cores).
BUILTIN_TEST_N = 200

# (argument after "KIND:", n or None, seed, split) -> rows. A built-in task's argument is its option
# (math's level); a file task's is the path, and it returns every row (load_task draws n of them).
Rows = Callable[[str, int | None, int, str], list[dict]]


@dataclass(frozen=True)
class Task:
    """One kind of fine-tuning task (see the module's docstring)."""

    kind: str
    about: str
    rows: Rows
    metric: str  # the utility metric, a name in analyse.utility.METRICS ("accuracy", "rouge1_f1")
    max_new_tokens: int  # the utility evaluation's answer budget unless a config or flag sets one
    builtin: bool = False  # generated offline: needs no train or test file
    fields: tuple[str, ...] = ()  # a record holding these fields is a row of this task's files
    paper_task: str | None = None  # the task of the paper's Table 1 it stands in for
    usage: str = ""  # how the task is named where a data source is expected ("gsm8k:PATH")


def _math_rows(level: str, n: int | None, seed: int, split: str) -> list[dict]:
    problems = mathgen.generate_problems(n, seed=seed, level=level or "default", split=split)
    return [{"id": f"math-{split}-{i}", "prompt": p["question"], "completion": p["answer"],
             "ground_truth": gsm8k_final(p["answer"])} for i, p in enumerate(problems)]


def _dialogue_rows(arg: str, n: int | None, seed: int, split: str) -> list[dict]:
    if arg:
        raise UserError(f"task 'dialogue' is the built-in generator and takes no argument, got 'dialogue:{arg}'")
    chats = dialoguegen.generate_dialogues(n, seed=seed, split=split)
    return [{"id": f"dialogue-{split}-{i}", "prompt": SAMSUM_PROMPT + c["dialogue"], "completion": c["summary"],
             "ground_truth": c["summary"]} for i, c in enumerate(chats)]


def _gsm8k_rows(path: str, n: int | None, seed: int, split: str) -> list[dict]:
    return [{"id": r["id"], "prompt": r["question"], "completion": r["answer"],
             "ground_truth": gsm8k_final(r["answer"])} for r in load_gsm8k(path, split=split)]


def _samsum_rows(path: str, n: int | None, seed: int, split: str) -> list[dict]:
    return [{"id": r["id"], "prompt": SAMSUM_PROMPT + r["dialogue"], "completion": r["summary"],
             "ground_truth": r["summary"]} for r in load_samsum(path, split=split)]


TASKS: dict[str, Task] = {t.kind: t for t in (
    Task("math", "the built-in GSM8K-style problem generator", _math_rows, "accuracy", 160, builtin=True,
         paper_task="gsm8k", usage="math, math:LEVEL"),
    Task("dialogue", "the built-in SAMSum-style dialogue generator", _dialogue_rows, "rouge1_f1", 64,
         builtin=True, paper_task="samsum", usage="dialogue"),
    Task("gsm8k", "GSM8K files (question, answer ending '#### N')", _gsm8k_rows, "accuracy", 256,
         fields=("question", "answer"), paper_task="gsm8k", usage="gsm8k:PATH"),
    Task("samsum", "SAMSum files (id, dialogue, summary)", _samsum_rows, "rouge1_f1", 128,
         fields=("dialogue", "summary"), paper_task="samsum", usage="samsum:PATH"),
)}


def task_kinds() -> tuple[str, ...]:
    """The registered kinds, in the registry's order (read at call time: a test may register one)."""
    return tuple(TASKS)


def get_task(kind: str) -> Task:
    """The registered task ``kind``, or a one-line error listing the kinds."""
    try:
        return TASKS[kind]
    except KeyError:
        raise UserError(f"unknown task '{kind}'; expected one of {', '.join(TASKS)}") from None


def task_of_record(record: dict) -> Task | None:
    """The file task whose rows look like ``record`` (by its fields), or ``None``."""
    keys = set(record)
    return next((t for t in TASKS.values() if t.fields and set(t.fields) <= keys), None)


def _detect_file_task(path: Path) -> Task:
    """The file task of a file's (or folder's) first record, told from its fields."""
    probe = path
    if path.is_dir():
        files = sorted(path.glob("*.jsonl")) + sorted(path.glob("*.json"))
        if not files:
            raise UserError("folder has no .json/.jsonl data files", path=str(path))
        probe = files[0]
    first = next(iter(iter_located_records(probe)), None)
    if first is None:
        raise UserError("file has no records", path=str(probe))
    task = task_of_record(first[1])
    if task is None:
        expected = " or ".join(f"{'/'.join(t.fields)} ({t.kind})" for t in TASKS.values() if t.fields)
        raise UserError(f"cannot tell the task from the fields; expected {expected}, found "
                        f"{', '.join(sorted(first[1]))}; write TASK:PATH", path=str(probe))
    return task


def _sample(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    """``n`` rows drawn with ``seed`` (kept in file order), or all rows."""
    if n is None or n >= len(rows):
        return rows
    if n < 0:
        raise UserError(f"number of rows must be >= 0, got {n}")
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def load_task(name_or_path: str | os.PathLike, *, n: int | None = None, seed: int = 0,
              split: str = "train") -> list[dict]:
    """Rows ``{"id", "prompt", "completion", "ground_truth"}`` of a fine-tuning task.

    ``name_or_path`` is a built-in task (``math``, ``math:LEVEL``, ``dialogue``: ``n`` generated rows,
    default :data:`BUILTIN_TRAIN_N`), ``KIND:PATH`` for a file task (``gsm8k:PATH``, ``samsum:PATH``: a
    file or a folder with split files), or a bare PATH whose task is told from its fields. A file task's
    ``n`` rows are drawn with ``seed``; all rows when ``n`` is None.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    spec = str(name_or_path)
    kind, _, arg = spec.partition(":")
    task = TASKS.get(kind)
    if task is not None and task.builtin:
        return task.rows(arg, BUILTIN_TRAIN_N if n is None else n, seed, split)
    if task is not None and not arg:
        raise UserError(f"task '{kind}' needs its data: write {kind}:PATH (a file or a folder with split files)")
    if task is None:
        arg = spec
    path = Path(arg)
    if not path.exists():
        usages = ", ".join(t.usage for t in TASKS.values() if t.usage)
        raise UserError(f"no such file or folder (tasks: {usages})", path=arg)
    task = task or _detect_file_task(path)
    return _sample(task.rows(arg, None, seed, split), n, seed)
