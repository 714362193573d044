"""Loaders for the real data formats, by path, and :func:`load_task` for training/eval rows.

Formats (see docs/data.md):

- HEx-PHI: JSON lines ``{"instruction", "category"}`` (``id`` optional);
- harmful answers: one chat list per line ``[{"role": "user", ...}, {"role": "assistant", ...}]``
  (or ``{"messages": [...]}``, or one JSON array of such lists);
- GSM8K: JSON lines ``{"question", "answer"}``, the answer ending ``#### N``; a folder holds
  ``train.jsonl`` and ``test.jsonl``;
- SAMSum: a JSON array of ``{"id", "dialogue", "summary"}``; a folder holds ``train.json`` /
  ``test.json`` (when only ``test.json`` exists it is split 80/20 by a hash of each id, so the two
  splits never overlap).

Every problem with a file is a :class:`UserError` naming the file and the line or row.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import iter_located_records
from . import dialoguegen, mathgen
from .splits import SPLITS
from .splits import hash_split as split_of_text

TASKS = ("math", "dialogue", "gsm8k", "samsum")
SAMSUM_PROMPT = "Summarize this dialogue:\n"
# Default number of generated math problems when ``n`` is not given.
MATH_DEFAULT_N = 1000

_CALC = re.compile(r"<<[^<>]*>>")


def _text_field(loc, rec: dict, key: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        found = ", ".join(sorted(rec)) or "none"
        raise loc.error(f"expected a non-empty string '{key}' (keys found: {found})")
    return value


def _check_unique_ids(rows: list[dict], path: str) -> None:
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            raise UserError(f"duplicate id '{row['id']}'", path=path)
        seen.add(row["id"])


def load_hexphi(path: str | os.PathLike) -> list[dict]:
    """HEx-PHI-style prompts as ``{"id", "instruction", "category"}`` (ids are strings).

    A row without ``id`` gets its 0-based row number (as `generate` numbers rows); without ``category``, ``"uncategorized"``.
    """
    rows = []
    for loc, rec in iter_located_records(path):
        category = rec.get("category", "uncategorized")
        if not isinstance(category, str):
            raise loc.error(f"'category' must be a string, found {type(category).__name__}")
        rows.append({"id": str(rec.get("id", loc.row - 1)), "instruction": _text_field(loc, rec, "instruction"),
                     "category": category})
    if not rows:
        raise UserError("no prompts in file", path=str(path))
    _check_unique_ids(rows, str(path))
    return rows


def _chat_list(value: Any, where: str, path: str, line: int | None) -> list[dict]:
    if isinstance(value, dict) and "messages" in value:
        value = value["messages"]
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: expected a chat list [{{\"role\", \"content\"}}, ...]", path=path, line=line)
    for msg in value:
        if not (isinstance(msg, dict) and isinstance(msg.get("role"), str) and isinstance(msg.get("content"), str)):
            raise UserError(f"{where}: every message needs string 'role' and 'content'", path=path, line=line)
    if value[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in value):
        raise UserError(f"{where}: a harmful answer needs a user turn and ends with an assistant turn",
                        path=path, line=line)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def load_harmful_answers(path: str | os.PathLike) -> list[list[dict]]:
    """Harmful-answer chat lists (the prefilling attack's source), one per prompt, in file order."""
    from ..io import BadJSON, iter_json_lines, parse_json, read_utf8

    p = str(path)
    data, _ = read_utf8(p)
    # One JSON array of chat lists ...
    try:
        whole = parse_json(data)
    except BadJSON:
        whole = None
    if isinstance(whole, list) and whole and all(isinstance(v, list | dict) and not _is_message(v) for v in whole):
        chats = [_chat_list(v, f"item {i}", p, None) for i, v in enumerate(whole, 1)]
    else:  # ... or one chat list per line (lines end at \n only: U+2028 inside a string is text).
        chats = [_chat_list(value, f"row {n}", p, lineno)
                 for n, (lineno, value) in enumerate(iter_json_lines(p, data.split(b"\n")), 1)]
    if not chats:
        raise UserError("no harmful answers in file", path=p)
    return chats


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and "role" in value


def strip_calculator(answer: str) -> str:
    """GSM8K answer without the ``<<48/2=24>>`` calculator annotations."""
    return _CALC.sub("", answer)


def gsm8k_final(answer: str) -> str:
    """The number after ``####`` (commas removed)."""
    return answer.rsplit("####", 1)[-1].strip().replace(",", "")


def _split_file(path: Path, split: str, suffix: str) -> Path:
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    found = path / f"{split}{suffix}"
    if not found.is_file():
        raise UserError(f"folder has no {found.name}", path=str(path))
    return found


def load_gsm8k(path: str | os.PathLike, *, split: str = "test", keep_calculator: bool = False) -> list[dict]:
    """GSM8K rows ``{"id", "question", "answer"}``; a folder reads ``{split}.jsonl``.

    Calculator annotations ``<<a*b=c>>`` are removed unless ``keep_calculator``: the model should
    learn the arithmetic in plain text, as it must write it at inference.
    """
    p = Path(path)
    if p.is_dir():
        p = _split_file(p, split, ".jsonl")
    rows = []
    for loc, rec in iter_located_records(p):
        question, answer = _text_field(loc, rec, "question"), _text_field(loc, rec, "answer")
        if "####" not in answer:
            raise loc.error("the 'answer' has no '#### N' final answer")
        if not keep_calculator:
            answer = strip_calculator(answer)
        rows.append({"id": str(rec.get("id", f"{p.stem}-{loc.row}")), "question": question, "answer": answer})
    if not rows:
        raise UserError("no problems in file", path=str(p))
    return rows


def load_samsum(path: str | os.PathLike, *, split: str = "test") -> list[dict]:
    """SAMSum rows ``{"id", "dialogue", "summary"}`` (dialogue line breaks normalised to ``\\n``).

    A folder reads ``{split}.json``; if it has ``test.json`` but no ``train.json``, the test file is
    split 80/20 (train/test) by a hash of each id, so a folder always gives disjoint splits.
    """
    p = Path(path)
    hash_split = None
    if p.is_dir():
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
        if not (p / "train.json").is_file() and (p / "test.json").is_file():
            hash_split = split
            p = p / "test.json"
        else:
            p = _split_file(p, split, ".json")
    rows = []
    for loc, rec in iter_located_records(p):
        if "id" not in rec:
            raise loc.error(f"expected an 'id' (keys found: {', '.join(sorted(rec))})")
        dialogue, summary = _text_field(loc, rec, "dialogue"), _text_field(loc, rec, "summary")
        row = {"id": str(rec["id"]), "dialogue": dialogue.replace("\r\n", "\n"), "summary": summary}
        if hash_split is None or split_of_text(row["id"]) == hash_split:
            rows.append(row)
    if not rows:
        raise UserError("no dialogues in file", path=str(p))
    _check_unique_ids(rows, str(p))
    return rows


def _sample(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    """``n`` rows drawn with ``seed`` (kept in file order), or all rows."""
    if n is None or n >= len(rows):
        return rows
    if n < 0:
        raise UserError(f"number of rows must be >= 0, got {n}")
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def _gsm8k_rows(path: str, split: str) -> list[dict]:
    return [{"id": r["id"], "prompt": r["question"], "completion": r["answer"],
             "ground_truth": gsm8k_final(r["answer"])} for r in load_gsm8k(path, split=split)]


def _samsum_rows(path: str, split: str) -> list[dict]:
    return [{"id": r["id"], "prompt": SAMSUM_PROMPT + r["dialogue"], "completion": r["summary"],
             "ground_truth": r["summary"]} for r in load_samsum(path, split=split)]


def _detect_file_task(path: Path) -> str:
    """``gsm8k`` or ``samsum`` from the fields of a file's (or folder's) first record."""
    probe = path
    if path.is_dir():
        files = sorted(path.glob("*.jsonl")) + sorted(path.glob("*.json"))
        if not files:
            raise UserError("folder has no .json/.jsonl data files", path=str(path))
        probe = files[0]
    first = next(iter(iter_located_records(probe)), None)
    if first is None:
        raise UserError("file has no records", path=str(probe))
    keys = set(first[1])
    if {"question", "answer"} <= keys:
        return "gsm8k"
    if {"dialogue", "summary"} <= keys:
        return "samsum"
    raise UserError("cannot tell the task from the fields; expected question/answer (gsm8k) or dialogue/"
                    f"summary (samsum), found {', '.join(sorted(keys))}; write TASK:PATH", path=str(probe))


def load_task(name_or_path: str | os.PathLike, *, n: int | None = None, seed: int = 0,
              split: str = "train") -> list[dict]:
    """Rows ``{"id", "prompt", "completion", "ground_truth"}`` of a fine-tuning task.

    ``name_or_path`` is ``math`` or ``math:LEVEL`` (the built-in generator; ``n`` problems, default
    :data:`MATH_DEFAULT_N`), ``dialogue`` (the built-in SAMSum-style chats, ``n`` likewise), ``gsm8k:PATH`` or ``samsum:PATH`` (a file or a folder with split files),
    or a bare PATH whose task is told from its fields. ``n`` rows are drawn with ``seed``; all rows
    when ``n`` is None. Train and test rows never overlap (math: :func:`mathgen.split_of`, dialogue:
    :func:`dialoguegen.split_of`).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    spec = str(name_or_path)
    task, _, arg = spec.partition(":")
    if task == "math":
        level = arg or "default"
        problems = mathgen.generate_problems(MATH_DEFAULT_N if n is None else n, seed=seed, level=level, split=split)
        return [{"id": f"math-{split}-{i}", "prompt": p["question"], "completion": p["answer"],
                 "ground_truth": gsm8k_final(p["answer"])} for i, p in enumerate(problems)]
    if task == "dialogue":
        if arg:
            raise UserError(f"task 'dialogue' is the built-in generator and takes no argument, got '{spec}'")
        chats = dialoguegen.generate_dialogues(MATH_DEFAULT_N if n is None else n, seed=seed, split=split)
        return [{"id": f"dialogue-{split}-{i}", "prompt": SAMSUM_PROMPT + c["dialogue"], "completion": c["summary"],
                 "ground_truth": c["summary"]} for i, c in enumerate(chats)]
    if task in ("gsm8k", "samsum") and not arg:
        raise UserError(f"task '{task}' needs its data: write {task}:PATH (a file or a folder with split files)")
    if task not in ("gsm8k", "samsum"):
        arg, task = spec, ""
    path = Path(arg)
    if not path.exists():
        raise UserError("no such file or folder (tasks: math, math:LEVEL, gsm8k:PATH, samsum:PATH)", path=arg)
    task = task or _detect_file_task(path)
    rows = _gsm8k_rows(arg, split) if task == "gsm8k" else _samsum_rows(arg, split)
    return _sample(rows, n, seed)
