"""User text inside the documents the package writes (``report.md``, a study's ``summary.md``,
``forecast.md``, ``rejudged.md``) and inside figure text, shown as the text it is.

Names, prefixes, paths and machine strings come from configs, folders and hand-editable JSON, so any of
them may hold Markdown or HTML. Every writer passes them through one of these functions (the contract
is in docs/reliability.md, "User text in reports"):

- :func:`text`: inline text (a table cell, a heading, a sentence). It stays on one line, a ``|`` never
  ends a table cell, HTML is shown as characters, and no emphasis, code span, link or math opens.
- :func:`code`: a code span (a path or a hash the reader may copy).
- :func:`code_block`: a fenced block (a command line, a config) that no line of its text can close.
- :func:`figure_text`: a matplotlib title, label, tick or legend entry: never parsed as mathtext.

Ordinary names (``lookahead-real``, ``seedB-lr2e-4``, ``prefix='Let's solve this problem. '``) pass
unchanged, so reports of ordinary runs are the same bytes as before the escaping existed.
"""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that open something
# inline: code spans, emphasis, strikethrough, links and images, table cells, GitHub's math, headings.
# A "_" between two letters or digits can neither open nor close emphasis, so it stays as it is
# (``avx512_bf16``, ``my_run``).
_INLINE = re.compile(r"[\\`*~\[\]|$#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"})
# Everything Python's str.splitlines breaks at: any of them would end a table row or start a block.
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
# A list item or a heading's closing marker would only form at the start of a line: a leading
# "-", "+" or "1." is escaped so a bullet that starts with user text stays one bullet.
_BLOCK_START = re.compile(r"^(\s*)(\d{1,9}[.)]|[-+])(?=\s|$)")


def text(value: object) -> str:
    """``value`` as inline Markdown that renders as exactly its characters, on one line (line breaks
    become spaces)."""
    s = _INLINE.sub(r"\\\g<0>", _LINE_BREAK.sub(" ", str(value))).translate(_HTML)
    return _BLOCK_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], s)


def code(value: object) -> str:
    """``value`` as an inline code span in a paragraph (not a table: there a ``|`` would still split
    the cell): the fence is one backtick longer than any run of backticks inside, and line breaks
    become spaces, so a blank line cannot end the paragraph."""
    s = _LINE_BREAK.sub(" ", str(value)).replace("\0", "\ufffd") or " "  # "``" would be no code span
    fence = "`" * (_longest_backtick_run(s) + 1)
    # A reader strips one space from each end of a span that has one at both: pad so that it strips ours.
    edge = s[0] + s[-1]
    pad = " " if "`" in edge or (edge == "  " and s.strip(" ")) else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def code_block(value: object, info: str = "") -> list[str]:
    """``value`` as the lines of a fenced code block, fenced with more backticks than any line holds
    (at least three), so no line of the text can close it early."""
    s = re.sub(r"\r\n?", "\n", str(value)).replace("\0", "\ufffd")  # a last "\r" would join the fence's "\n"
    fence = "`" * max(3, _longest_backtick_run(s) + 1)
    return [fence + info, s, fence]


def figure_text(value: object) -> str:
    """``value`` for a matplotlib text: every ``$`` escaped, so an even number of them never switches
    the text to mathtext (which fails to draw on an unknown ``\\command``); matplotlib shows ``\\$``
    as ``$`` and every other backslash as itself."""
    return str(value).replace("$", "\\$")


def _longest_backtick_run(s: str) -> int:
    return max((len(run) for run in re.findall("`+", s)), default=0)
