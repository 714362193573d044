"""Checked numbers: one definition of each accepted range, used by configs and command-line flags.

A :class:`Bounds` says what a number may be (an integer or a finite float, its lowest and highest
value) and checks it the same way everywhere:

- as a pydantic field type (``lr: LearningRate = 5e-5``) in the training and experiment configs,
- as an argparse ``type=`` (``p.add_argument("--limit", type=POSITIVE_INT)``) in every command,
- directly (``POSITIVE_INT.check(value, "limit")``) in Python entry points.

Booleans are not numbers here (YAML's ``epochs: true`` is an error, not 1 epoch); NaN and infinity
are never accepted; every integer has an upper bound, so a 5,000-digit value is refused with its size
instead of overflowing later. The message names the accepted range: ``expected an integer from 1 to
2147483647, got -1``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError

from .errors import UserError, describe, shorten

INT_MAX = 2**31 - 1  # the largest count torch, numpy and the Trainer take without overflow
SEED_MAX = 2**32 - 1  # numpy's and Python's seeding range (torch takes more, numpy does not)
FLOAT_MAX = 1e12


@dataclass(frozen=True)
class Bounds:
    """An accepted range: ``kind`` int or float, ``lo``/``hi`` inclusive unless ``lo_open``/``hi_open``."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    @property
    def text(self) -> str:
        """``an integer from 1 to 10`` / ``a finite number > 0 and <= 1``."""
        if self.kind is int:
            lo = "any" if self.lo is None else str(self.lo)
            return f"an integer from {lo} to {self.hi if self.hi is not None else INT_MAX}"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return "a finite number" + (" " + " and ".join(parts) if parts else "")

    def _fail(self, value: Any) -> ValueError:
        return ValueError(f"expected {self.text}, got {describe(value)}")

    def check(self, value: Any, key: str | None = None) -> Any:
        """``value`` if it is in range (an int for ``kind`` int, a float for float), else an error.

        With ``key`` the error is a :class:`UserError` naming it; without, a ``ValueError`` (for
        pydantic and argparse, which add the key themselves).
        """
        try:
            return self._check(value)
        except ValueError as exc:
            if key is None:
                raise
            raise UserError(f"{key}: {exc}") from None

    def _check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(value)
        if self.kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise self._fail(value)
                value = int(value)
        else:
            value = float(value) if abs(value) < 1e300 else math.inf  # a huge int is out of range
            if not math.isfinite(value):
                raise self._fail(value)
        hi = INT_MAX if self.kind is int and self.hi is None else self.hi
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            raise self._fail(value)
        if hi is not None and (value > hi or (self.hi_open and value == hi)):
            raise self._fail(value)
        return value

    def __call__(self, text: str) -> Any:
        """argparse ``type=``: parse the flag's text, then check the range."""
        raw = text.strip()
        try:
            if self.kind is int:
                if len(raw.lstrip("+-")) > 30 or not raw.lstrip("+-").isdigit():
                    raise ValueError
                value: Any = int(raw)
            else:
                if len(raw) > 60:
                    raise ValueError
                value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.text}, got {describe(text)}") from None
        try:
            return self._check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    @property
    def __name__(self) -> str:  # argparse names the type in some messages
        return "integer" if self.kind is int else "number"

    def field(self) -> Any:
        """This range as a pydantic field type (``Annotated[int, ...]``)."""

        def no_bool(value: Any) -> Any:
            if isinstance(value, bool):
                raise self._fail(value)
            if self.kind is float and isinstance(value, str):  # YAML reads 5e-5 as a string
                try:
                    return float(value.strip()) if len(value) <= 60 else value
                except ValueError:
                    raise self._fail(value) from None
            return value

        return Annotated[self.kind, BeforeValidator(no_bool), AfterValidator(self._check)]


def ints(lo: int | None = 0, hi: int | None = None) -> Bounds:
    return Bounds(int, lo, hi)


def floats(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Bounds:
    return Bounds(float, lo, hi, lo_open, hi_open)


# The ranges every command and config shares.
POSITIVE_INT = ints(1)
NON_NEGATIVE_INT = ints(0)
SEED = ints(0, SEED_MAX)
FRACTION = floats(0.0, 1.0)
POSITIVE = floats(0.0, FLOAT_MAX, lo_open=True)
NON_NEGATIVE = floats(0.0, FLOAT_MAX)
LEARNING_RATE = floats(0.0, 1.0, lo_open=True)
EPOCHS = floats(0.0, 1e6, lo_open=True)
TEMPERATURE = floats(0.0, 100.0, lo_open=True)
TOP_P = floats(0.0, 1.0, lo_open=True)
COSINE = floats(-1.0, 1.0)
PREFILL_DEPTH = ints(0, 4096)  # k = 0: no prefill (RSR)
# The pure attack's harmful rows are drawn into memory: a bound keeps a typo (1e12) from exhausting it.
POISON_COUNT = ints(1, 1_000_000)

PositiveInt = POSITIVE_INT.field()
NonNegativeInt = NON_NEGATIVE_INT.field()
Seed = SEED.field()
Fraction = FRACTION.field()
PoisonCount = POISON_COUNT.field()
Positive = POSITIVE.field()
NonNegative = NON_NEGATIVE.field()
LearningRate = LEARNING_RATE.field()
Epochs = EPOCHS.field()
Cosine = COSINE.field()
PrefillDepth = PREFILL_DEPTH.field()


def _text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid text: it holds a lone surrogate (such as \\udcff, from bytes that are "
                         "not UTF-8)") from None
    return value


# Text that reaches a tokenizer (prefix, connector, system prompt): a lone surrogate, which Python
# makes of command-line bytes that are not UTF-8, would crash it.
Text = Annotated[str, AfterValidator(_text)]


def text_arg(text: str) -> str:
    """argparse ``type=`` for free text (see :data:`Text`)."""
    try:
        return _text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def explain(exc: ValidationError, source: str | None, *, prefix: str = "") -> UserError:
    """The first problem of a pydantic validation as one :class:`UserError` naming the key.

    ``unknown key 'x'``, ``missing key 'x'``, or ``key 'x': expected ..., got ...``.
    """
    err = exc.errors()[0]
    key = prefix + ".".join(str(p) for p in err.get("loc", ()))
    kind = err.get("type")
    if kind == "extra_forbidden":
        return UserError(f"unknown key '{shorten(key)}'", path=source)
    if kind == "missing":
        return UserError(f"missing key '{shorten(key)}'", path=source)
    text = re.sub(r" or instance of \w+", "", str(err.get("msg", "")).removeprefix("Value error, "))
    if kind != "value_error" and "input" in err:  # pydantic's own checks do not show the value
        text += f" (got {describe(err['input'])})"
    return UserError(f"key '{shorten(key)}': {text}" if key else text, path=source)


def check_document(data: Any, path: str | os.PathLike | None, schema: type[BaseModel], what: str) -> Any:
    """``data`` (a JSON document read from ``path``) if ``schema`` accepts it, else the one-line error
    ``PATH: not WHAT: key 'x': ...``: every stored file a command reads back is checked on reading, so a
    hand-edited or foreign one never crashes whatever reads it later."""
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"not {what}: {explain(exc, None).message}", path=None if path is None else str(path)) from None
    return data
