"""Train/test splits fixed by the text itself, and drawing distinct generated examples of one split.

A row's split is a hash of its text (or id), never of a seed, so the built-in generators' test items
never occur in their training data whatever the seeds, and SAMSum's unsplit file splits the same way on
every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from ..errors import UserError

SPLITS = ("train", "test")
TEST_FRACTION = 5  # one item in TEST_FRACTION belongs to the test split
T = TypeVar("T")


def hash_split(text: str) -> str:
    """``"test"`` for one text in :data:`TEST_FRACTION` (by a hash of its UTF-8 bytes), else ``"train"``."""
    digest = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)
    return "test" if digest % TEST_FRACTION == 0 else "train"


def distinct_of_split(n: int, split: str, draw: Callable[[], tuple[str, Callable[[], T]]], what: str) -> list[T]:
    """``n`` items from ``draw() -> (key, make)`` whose keys are new and belong to ``split``, in the order
    drawn (so a longer list starts with the shorter one); ``make()`` builds (and checks) an item only once
    its key is kept. A one-line error when the draws run out of new keys."""
    out: list[T] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise UserError(f"cannot make {n} distinct {what}; ask for fewer")
        key, make = draw()
        if key in seen or hash_split(key) != split:
            continue
        seen.add(key)
        out.append(make())
    return out
