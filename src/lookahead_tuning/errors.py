"""Errors a user can act on. The CLI prints them as one line and exits with code 2.

Every message is rendered as **one line of bounded length**: a file name holding a newline, a value
pasted from a 10 MB line or a library's multi-line text must not turn the error into a wall of
output (an alias-bomb YAML value once printed a 158 MB line). :func:`shorten` and :func:`describe`
put user values into messages; :meth:`UserError.render` escapes line breaks and caps the length.
"""

from __future__ import annotations

import unicodedata
from typing import Any

# A few hundred characters: the file, the line, the key, what was expected and what was found.
MAX_MESSAGE = 360
MAX_PATH = 160
ELLIPSIS = "…"

# Characters after which a terminal (or str.splitlines) starts a new line, and other control
# characters that could move the cursor; tabs are kept.
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\x0b": "\\v", "\x0c": "\\f", "\x85": "\\x85", "\u2028": "\\u2028",
            "\u2029": "\\u2029"}


def one_line(text: str) -> str:
    """``text`` with every line break and control character written as an escape (``\\n``)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch != "\t" and unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def shorten(text: str, limit: int = 80) -> str:
    """``text`` on one line, cut in the middle with an ellipsis when longer than ``limit``.

    The middle goes because the ends say the most: a path's file name, a value's type and its end.
    """
    text = one_line(text)
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 3
    tail = limit - 1 - head
    return f"{text[:head]}{ELLIPSIS}{text[-tail:] if tail else ''}"


def describe(value: Any, limit: int = 60) -> str:
    """A short, safe ``repr`` of a user value for an error message (never raises, never huge).

    Integers too long for ``repr`` (Python refuses more than 4,300 digits) are described by size.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, (list, dict, tuple, set)) and len(value) > 20:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # a huge int nested in a container, a self-referencing list
        text = f"a {type(value).__name__}"
    return shorten(text, limit)


class UserError(Exception):
    """Bad input: a file, a line or a key the user must fix.

    Rendered as ``FILE:LINE: message`` (or ``FILE: message``, or just ``message``), always on one
    line of at most a few hundred characters.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        super().__init__(self.render())

    def render(self) -> str:
        from .redact import scrub

        where = ""
        if self.path is not None:
            path = shorten(str(self.path), MAX_PATH)
            where = f"{path}:{self.line}: " if self.line is not None else f"{path}: "
        return scrub(f"{where}{shorten(str(self.message), MAX_MESSAGE)}")
