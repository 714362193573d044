"""Answers and predictions made elsewhere (vLLM on a cluster, another toolkit), read for judging here.

Two shapes each: the project's JSONL (or any record file :mod:`lookahead_tuning.io` reads), one row per
answer with an ``id``; or the reference scripts' shape, lines of ``{"results": [...]}`` (ids are then the
0-based positions). A bad row is a one-line ``FILE:LINE`` error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import UserError


def _rows(path: str | os.PathLike, what: str, from_results: Callable[[Any, Any, str, int], dict],
          from_row: Callable[[Any, dict, str], dict]) -> list[dict]:
    from ..io import iter_located_records

    p = str(path)
    if not os.path.exists(p):
        raise UserError(f"no such {what} file", path=p)
    out: list[dict] = []
    seen: dict[str, int] = {}
    for loc, rec in iter_located_records(p):
        if "results" in rec and "completion" not in rec:
            if not isinstance(rec["results"], list):
                raise loc.error(f"'results' must be a list (the reference {what} shape)")
            base = len(out)
            for j, item in enumerate(rec["results"]):
                rid = str(base + j)  # a reference-shape row's id is its position in the file
                if rid in seen:
                    raise loc.error(f"results[{j}] takes the positional id '{rid}', which line {seen[rid]} "
                                    "already has; give every row an id, or use one shape per file")
                seen[rid] = loc.line
                out.append(from_results(loc, item, rid, j))
            continue
        if "id" not in rec or isinstance(rec["id"], (dict, list, bool)) or rec["id"] is None:
            raise loc.error(f"needs an 'id' (a string or number; keys found: {', '.join(sorted(rec)) or 'none'})")
        rid = str(rec["id"])
        if rid in seen:
            raise loc.error(f"duplicate id '{rid}' (first on line {seen[rid]})")
        seen[rid] = loc.line
        out.append(from_row(loc, rec, rid))
    if not out:
        raise UserError(f"no {what} in file", path=p)
    return out


def _string(loc, rec: dict, key: str, where: str = "", *, optional: bool = False) -> str | None:
    value = rec.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        found = "missing" if key not in rec else type(value).__name__
        raise loc.error(f"{where}'{key}' must be a string{' or null' if optional else ''} ({found})")
    return value


def read_answers(path: str | os.PathLike) -> list[dict]:
    """Safety answers as records ``{"id", "instruction", "category", "prefill", "completion", "response"}``.

    Rows: ``id`` and ``completion``, optional ``prompt`` (text, or chat messages whose last user turn is
    the instruction), ``category`` and ``prefill`` (judged as ``prefill + completion``, as in a
    prefilling attack). Reference shape: ``{"results": [[user, assistant], ...]}``.
    """
    def from_row(loc, rec: dict, rid: str) -> dict:
        completion = _string(loc, rec, "completion")
        prefill = _string(loc, rec, "prefill", optional=True)
        category = rec.get("category", "")
        if not isinstance(category, str):
            raise loc.error(f"'category' must be a string ({type(category).__name__})")
        return {"id": rid, "instruction": _prompt_text(loc, rec.get("prompt")), "category": category,
                "prefill": prefill, "completion": completion, "response": (prefill or "") + completion}

    def from_results(loc, chat: Any, rid: str, j: int) -> dict:
        ok = isinstance(chat, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in chat)
        if not ok or not chat or chat[-1].get("role") != "assistant":
            raise loc.error(f"results[{j}] must be a chat list ending with an assistant turn")
        users = [m["content"] for m in chat if m.get("role") == "user"]
        completion = chat[-1]["content"]
        return {"id": rid, "instruction": users[-1] if users else None, "category": "", "prefill": None,
                "completion": completion, "response": completion}

    return _rows(path, "answers", from_results, from_row)


def _prompt_text(loc, prompt: Any) -> str | None:
    if prompt is None or isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        users = [m.get("content") for m in prompt if m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            return users[-1]
    raise loc.error("'prompt' must be a string or chat messages with a user turn")


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Utility predictions as rows ``{"id", "completion", "reference"}``.

    Rows: ``id``, ``completion`` and ``ground_truth`` (a bare answer, or a GSM8K worked solution ending
    ``#### N``, read as its bare answer N). Reference shape: ``{"results": [{"ground_truth", "completion"}]}``.
    """
    def from_row(loc, rec: dict, rid: str, where: str = "") -> dict:
        completion = _string(loc, rec, "completion", where)
        return {"id": rid, "completion": completion, "reference": _string(loc, rec, "ground_truth", where)}

    def from_results(loc, item: Any, rid: str, j: int) -> dict:
        if not isinstance(item, dict):
            raise loc.error(f"results[{j}] must be an object with 'ground_truth' and 'completion'")
        return from_row(loc, item, rid, f"results[{j}]: ")

    return _rows(path, "predictions", from_results, from_row)
