"""The final number of a GSM8K-style answer (``... #### N``): the one parser the package uses.

Gold answers, model completions (the project's own scorer), SDFT rewrites and the math generator's
checks all read the answer here, so they can never disagree. The reference scorer of the official
evaluation scripts is deliberately a separate, literal string comparison
(:func:`lookahead_tuning.analyse.utility.reference_correct`); docs/evaluation.md lists how they differ.

The rule: the answer is the number on the first non-empty line after the **first** ``####``
(a model that keeps writing after its answer often invents a second question and a second
``####``), compared as a number: ``$``, thousands commas, ``**bold**``, a trailing ``.``, ``.0`` and
leading zeros do not matter. A number that is only the start of a longer numeric expression is **not**
an answer: ``7/2`` (fraction), ``26 1/2`` (mixed number), ``109-114`` or ``5 to 6`` (range), ``3:1``
(ratio), ``2 x 4`` or ``5 + 3`` (arithmetic), ``10 800`` (two numbers) all give ``None``, never 7, 26,
109, 5, 3, 2, 5 or 10.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MARKER = "####"

_NUMBER = r"\d[\d,]*(?:\.\d+)?|\.\d+"
_FIRST = re.compile(rf"(?P<neg>-[ \t]*)?\$?[ \t]*(?P<num>{_NUMBER})")
_ANY = re.compile(rf"(?P<neg>-)?\$?(?P<num>{_NUMBER})")
# What may not follow a number that stands for the whole answer (spaces and tabs only: a newline
# ends the answer line). Each alternative is a numeric expression the number is only part of.
_CONTINUES = re.compile(
    r"[ \t]*(?:[/:^]|[-\u2013\u2014\u2212]|to\b|[x\u00d7*+=])[ \t]*[$(]?[ \t]*\d"  # 7/2, 3:1, 109-114, 5 to 6
    r"|[ \t]+\d"                                                                # 26 1/2, 10 800
    r"|[ \t]*[\u00bc-\u00be\u2150-\u215e]"                                      # 26½
)


def _canonical(raw: str, negative: bool) -> str | None:
    """``"1,234.50"`` -> ``"1234.5"``; ``"007"`` -> ``"7"``; ``-0`` -> ``"0"``."""
    try:
        value = Decimal(raw.replace(",", "")).normalize()
    except InvalidOperation:
        return None
    text = format(-value if negative else value, "f")
    return "0" if text in ("-0", "0") else text


def lone_number(text: str | None) -> str | None:
    """The number that is the whole answer on the first non-empty line of ``text``, canonical; ``None``
    when that line holds no number or its first number is part of a longer expression (see above)."""
    line = next((ln for ln in (text or "").splitlines() if ln.strip()), "")
    match = _FIRST.search(line)
    if match is None or _CONTINUES.match(line, match.end()):
        return None
    return _canonical(match.group("num"), bool(match.group("neg")))


def last_number(text: str | None) -> str | None:
    """The last number anywhere in ``text``, canonical (for fallback figures only)."""
    found = list(_ANY.finditer(text or ""))
    if not found:
        return None
    return _canonical(found[-1].group("num"), bool(found[-1].group("neg")))


def final_number(text: str | None, *, fallback_last: bool = False) -> str | None:
    """The answer of a GSM8K-style text: the lone number after the first ``####``.

    Without a marker: ``None``, or with ``fallback_last`` the last number in the text. A bare gold
    answer (``"72"``, no marker) reads with :func:`lone_number`.
    """
    if text and MARKER in text:
        return lone_number(text.split(MARKER, 1)[1])
    return last_number(text) if fallback_last else None


def gold_number(reference: str | None) -> str | None:
    """The canonical answer of a gold reference: a worked solution ending ``#### N``, or a bare answer."""
    if reference and MARKER in reference:
        return final_number(reference)
    return lone_number(reference)
