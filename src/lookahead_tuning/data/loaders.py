"""Loaders for the real data formats, by path (the tasks built on them: :mod:`.tasks`).

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
import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import iter_located_records
from .splits import SPLITS
from .splits import hash_split as split_of_text

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


XSTEST_LABELS = ("safe", "unsafe")


def load_xstest(path: str | os.PathLike) -> list[dict]:
    """XSTest-style over-refusal prompts (CSV or JSON lines: ``prompt``, ``type``, ``label``) as
    ``{"id", "instruction", "type", "label"}``. ``label`` is ``safe`` (a prompt that only sounds unsafe:
    refusing it is over-refusal) or ``unsafe`` (a contrast prompt); without it a ``type`` starting with
    ``contrast`` is unsafe, any other safe. Ids: the ``id`` field or the 0-based row number."""
    rows = []
    for loc, rec in iter_located_records(path):
        kind = rec.get("type", "")
        if not isinstance(kind, str):
            raise loc.error(f"'type' must be a string, found {type(kind).__name__}")
        label = rec.get("label")
        if label is None or label == "":
            label = "unsafe" if kind.startswith("contrast") else "safe"
        if label not in XSTEST_LABELS:
            raise loc.error(f"'label' must be safe or unsafe, found {str(label)[:40]!r}")
        rows.append({"id": str(rec.get("id", loc.row - 1)), "instruction": _text_field(loc, rec, "prompt"),
                     "type": kind, "label": label})
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
    from ..io import BadJSON, DuplicateKey, iter_json_lines, parse_json, read_utf8

    p = str(path)
    data, _ = read_utf8(p)
    # One JSON array of chat lists ...
    try:
        whole = parse_json(data)
    except DuplicateKey as exc:  # valid JSON up to a repeated key: no reading as lines would clear it
        raise UserError(exc.message, path=p, line=exc.line) from None
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
