"""Record files in and out: JSON, JSON lines, CSV, Parquet and Hugging Face ``save_to_disk`` folders.

Two promises every caller relies on:

- **Reading streams** where the format allows it (JSON lines, CSV, Parquet row groups), so memory stays
  flat however many rows a file has, and every problem is a :class:`UserError` that names the file and
  the line (``FILE:LINE: what is wrong``).
- **Writing is atomic**: records go to a temporary file beside the target and are renamed over it only
  when everything succeeded. A crash or a bad row half-way leaves an existing output untouched and no
  partial file behind.

JSON flavours: a file whose first non-blank character is ``[`` is read as one JSON array of objects
(whatever its extension; loaded whole), anything else as JSON lines (one object per line, streamed), so
a ``.json`` file holding JSON lines and a ``.jsonl`` file holding an array both work. A UTF-8 byte
order mark, CRLF line endings, blank lines and a missing final newline are accepted everywhere, and
JSON lines end at ``\n`` only (U+2028 inside a string is text, not a line break).

Hostile input cannot crash a reader: ``NaN``/``Infinity``, integers beyond Python's 4,300 digits,
nesting deeper than :data:`MAX_NESTING`, lone surrogate escapes, invalid UTF-8, CSV quotes never
closed (strict quoting), YAML with duplicate keys or aliases that expand beyond
:data:`MAX_ALIAS_VALUES` all become ``FILE:LINE:`` errors. The same readers serve the one-document
files (:func:`read_json`, :func:`read_yaml`). Output folders are made by :func:`output_folder`, which
removes what a failed command made, and :func:`refuse_overwrite` keeps an output off its inputs.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import itertools
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from .errors import UserError, describe, shorten
from .redact import scrub, scrub_bytes

try:  # orjson is 5-10x faster than the standard library on the hot path of big JSON-lines files.
    import orjson as _orjson
except ImportError:  # pragma: no cover - the standard library is the fallback
    _orjson = None

FORMATS = ("json", "jsonl", "csv", "parquet", "hf")
_EXTENSIONS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------- formats


def file_format(path: str | os.PathLike, fmt: str | None = None, *, write: bool = False) -> str:
    """The record format of ``path``: ``fmt`` when given, else from the extension or the folder.

    A folder is a Hugging Face ``save_to_disk`` dataset; so is an output path without an extension.
    """
    if fmt is not None:
        fmt = fmt.lower()
        if fmt in ("hf", "arrow", "dataset", "datasets"):
            return "hf"
        if fmt not in FORMATS:
            raise UserError(f"unknown record format '{fmt}'; expected one of {', '.join(FORMATS)}")
        return fmt
    p = Path(path)
    if p.is_dir():
        if write or any((p / marker).is_file() for marker in _HF_MARKERS):
            return "hf"
        raise UserError("folder is not a Hugging Face dataset saved with save_to_disk", path=str(p))
    suffix = p.suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if write and not suffix:
        return "hf"
    raise UserError(
        f"cannot tell the format from the extension '{suffix or '(none)'}'; expected .json, .jsonl, .csv, "
        ".parquet or a dataset folder, or name the format (--input-format/--output-format)",
        path=str(p),
    )


# --------------------------------------------------------------------------- reading


class Location(NamedTuple):
    """Where a record came from: 1-based ``row`` always, ``line`` for line-based formats.

    A named tuple, not a dataclass: one is made per row on the streaming hot path.
    """

    path: str | None
    row: int
    line: int | None = None

    def error(self, message: str) -> UserError:
        """A :class:`UserError` pointing at this record (``FILE:LINE: row N: ...``)."""
        return UserError(f"row {self.row}: {message}", path=self.path, line=self.line)


class BadJSON(ValueError):
    """A JSON text that is malformed or outside what the readers accept; ``line`` when known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


# Deeper nesting than any record format needs; deeper input is refused before a recursive walk (ours,
# pydantic's, a library's) can exhaust the stack. Readers check it only when a line holds more brackets.
MAX_NESTING = 100
# orjson turns integers wider than 64 bits into floats (an id 12345678901234567890123 would change);
# lines holding a run of 20+ digits are read by the standard library, which keeps them exact. Found by
# mapping every digit to "0" and searching for twenty of them: a regular expression took 20 µs a line.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 20


def _reject_constant(name: str) -> Any:
    raise BadJSON(f"invalid JSON: {name} is not a JSON number (write null or a string)")


def nesting_depth(obj: Any, limit: int = MAX_NESTING) -> int:
    """How deeply lists and dicts nest in ``obj`` (iteratively; stops counting past ``limit``)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _has_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


class DuplicateKey(BadJSON):
    """A JSON object that names one key twice (``json`` and orjson would keep the last value silently)."""


def parse_json(raw: bytes) -> Any:
    """One JSON text (bytes, UTF-8) with the readers' rules; problems raise :class:`BadJSON`.

    Refused, though Python's ``json`` would take them: ``NaN``/``Infinity`` (they would become null on
    the way out), integers of more than 4,300 digits, nesting deeper than :data:`MAX_NESTING`, escapes
    of lone surrogates (``"\ud800"``), which are not characters and crash tokenizers, and an object
    that names one key twice (:class:`DuplicateKey`): the last value would win unseen, so a doctored
    ``metrics.json`` could flip a gate while every tool that shows the file shows the first value.
    """
    if _orjson is not None and _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            obj = _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass  # let the standard library give the message (and accept what it accepts, e.g. big ints)
        else:
            if raw.count(b"[") + raw.count(b"{") > MAX_NESTING:
                _check_nesting(obj)
            if not _may_repeat_a_key(raw, obj):
                return obj
            # else the standard library below finds the repeated key, or clears the doubt
    text = raw.decode("utf-8")  # a UnicodeDecodeError is the caller's to place
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise BadJSON(f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except RecursionError:
        raise BadJSON(f"invalid JSON: nested more than {MAX_NESTING} levels deep") from None
    except DuplicateKey as exc:
        raise _locate_duplicate(text) or exc from None
    except BadJSON:
        raise
    except ValueError as exc:  # Python's limit on integer digits (4,300)
        raise BadJSON(f"invalid JSON: {str(exc).split(';')[0]}") from None
    _check_nesting(obj)
    if _has_surrogate(obj):
        raise BadJSON("invalid JSON: a string holds a lone surrogate escape (such as \\ud800), which is not "
                      "a character; fix the text or drop the row")
    return obj


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"invalid JSON: duplicate key {describe(key)} in one object; keep one")
            seen.add(key)
    return obj


_WHITESPACE = b" \t\r\n"


def _may_repeat_a_key(raw: bytes, obj: Any) -> bool:
    """False when ``raw`` (which orjson parsed as ``obj``) provably names no key twice in one object.

    orjson keeps the last of two equal keys without a word, so count instead. With JSON's whitespace
    and every escaped backslash removed, a quote is a string's delimiter unless a backslash precedes
    it, and a delimiter followed by ``:`` ends a key or opens a string starting with a colon. That
    count (:func:`_key_ends`) is at least the number of keys written in ``raw``; the parsed objects
    hold at most that many, and equal counts leave no room for a repeat. orjson writes ``obj`` back
    with the same escapes ``raw`` must use when it has no ``\\u`` escape, so then the two texts' counts
    are equal exactly when no key was dropped (and a text orjson itself wrote is simply equal to that);
    with ``\\u`` escapes the parsed keys are counted one by one. Doubt (a repeat, or a count the escapes
    blur) sends the text to the exact, slower parse.
    """
    if type(obj) is not dict and type(obj) is not list:
        return False
    packed = raw.translate(None, _WHITESPACE)
    if type(obj) is dict and packed.count(b'":') == len(obj):
        return False  # the usual flat record: every key end, and no more, is one of these
    again = _orjson.dumps(obj).translate(None, _WHITESPACE)
    if packed == again:
        return False  # the same structure, byte for byte, as what was parsed: no pair was dropped
    written, escapes = _key_ends(packed)
    if escapes:
        return written != _key_count(obj)
    return written != _key_ends(again)[0]


def _key_ends(packed: bytes) -> tuple[int, bool]:
    """``":`` after an unescaped quote in a JSON text without whitespace, and whether it holds a ``\\u``
    escape. Pairs of backslashes are escaped backslashes, removed left to right as JSON reads them (in
    valid JSON a run of backslashes before a removed space has even length, so none change parity)."""
    packed = packed.replace(b"\\\\", b"")
    return packed.count(b'":') - packed.count(b'\\":'), b"\\u" in packed


def _key_count(obj: Any) -> int:
    count = 0
    stack = [obj]  # only dicts and lists go on it: the strings of a row are most of its values
    while stack:
        node = stack.pop()
        if type(node) is dict:
            count += len(node)
            node = node.values()
        for child in node:
            if type(child) is dict or type(child) is list:
                stack.append(child)
    return count


# Tokens of a JSON text that has already parsed: strings, punctuation, and the other literals.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s"{}\[\]:,]+')


def _locate_duplicate(text: str) -> DuplicateKey | None:
    """The first repeated key of ``text`` in reading order, with both of its lines (a linear scan with
    no recursion; the text is valid JSON up to the repeat, the standard library parsed it that far)."""
    frames: list[dict[str, int] | None] = []  # per open bracket: the keys seen so far, None for arrays
    expect_key = False
    line, scanned = 1, 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token == "{":
            frames.append({})
            expect_key = True
        elif token == "[":
            frames.append(None)
            expect_key = False
        elif token in ("]", "}"):
            if frames:
                frames.pop()
            expect_key = False
        elif token == ",":
            expect_key = bool(frames) and frames[-1] is not None
        elif expect_key and token[0] == '"':
            expect_key = False
            line += text.count("\n", scanned, match.start())
            scanned = match.start()
            try:
                key = json.loads(token)
            except ValueError:
                return None
            seen = frames[-1]
            if key in seen:
                where = "in one object" if seen[key] == line else f"(first given on line {seen[key]})"
                return DuplicateKey(f"invalid JSON: duplicate key {describe(key)} {where}; keep one", line)
            seen[key] = line
        else:
            expect_key = False
    return None


def _check_nesting(obj: Any) -> None:
    if nesting_depth(obj) > MAX_NESTING:
        raise BadJSON(f"invalid JSON: nested more than {MAX_NESTING} levels deep")


def _decode_error(exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8 ({exc.reason} at byte {exc.start}); save the file as UTF-8"


def iter_json_lines(path: str, lines: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON-lines text.

    Lines end at ``\n`` only: U+2028 and the other characters :meth:`str.splitlines` breaks on are
    valid inside JSON strings.
    """
    lines = iter(lines)
    first = next(lines, b"")
    for lineno, raw in enumerate(itertools.chain((first.removeprefix(_BOM),), lines), start=1):
        if raw.isspace() or not raw:  # blank lines (also "\r\n") are allowed and skipped
            continue
        try:
            yield lineno, parse_json(raw)  # JSON allows the surrounding whitespace, so no strip() copy is needed
        except UnicodeDecodeError as exc:
            raise UserError(_decode_error(exc), path=path, line=lineno) from None
        except BadJSON as exc:
            raise UserError(exc.message, path=path, line=lineno) from None


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind_of(mode: int) -> str:
    return next((what for test, what in _NOT_REGULAR if test(mode)), "not a regular file")


def check_input(path: str | os.PathLike, *, folders: bool = False) -> bool:
    """Refuse, before anything opens it, an input that is not a regular file (or, with ``folders``, a
    folder); return whether it is a folder. A FIFO or a terminal would block the read forever and
    ``/dev/zero`` would fill memory; symlinks count as what they point to."""
    p = str(path)
    try:
        mode = os.stat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise UserError("no such file or folder" if folders else "no such file", path=p) from None
    except OSError as exc:  # a loop of symlinks, a missing permission, a name too long
        raise UserError(exc.strerror or type(exc).__name__, path=p) from None
    if stat.S_ISREG(mode):
        return False
    if stat.S_ISDIR(mode):
        if folders:
            return True
        raise UserError("is a folder; give a file", path=p)
    raise UserError(f"is {_kind_of(mode)}, not a regular file{' or a folder' if folders else ''}; a reader would "
                    "block on it or never finish", path=p)


def check_folder(folder: str | os.PathLike) -> None:
    """Refuse a folder (a model, a dataset) holding, at its top or one level down, an entry that is
    neither a regular file nor a folder (what :func:`check_input` refuses), before a library reads it.
    Broken symlinks are left to the library, which reports a file it needs and cannot open."""
    pending = [(str(folder), 1)]
    while pending:
        top, depth = pending.pop()
        try:
            entries = list(os.scandir(top))
        except OSError as exc:
            raise UserError(exc.strerror or type(exc).__name__, path=top) from None
        for entry in entries:
            try:
                mode = os.stat(entry.path).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if depth > 0 and not entry.is_symlink():
                    pending.append((entry.path, depth - 1))
            elif not stat.S_ISREG(mode):
                raise UserError(f"holds {shorten(entry.name, 80)!r}, which is {_kind_of(mode)}, not a regular "
                                "file; remove it (a reader would block on it or never finish)", path=str(folder))


def read_utf8(path: str | os.PathLike) -> tuple[bytes, str]:
    """A whole file as ``(bytes, text)`` without a byte order mark; invalid UTF-8 is an error with its line."""
    p = str(path)
    check_input(p)
    with open(p, "rb") as fh:
        data = fh.read().removeprefix(_BOM)
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(_decode_error(exc), path=p, line=data[: exc.start].count(b"\n") + 1) from None


def read_json(path: str | os.PathLike, what: str | None = None) -> Any:
    """One JSON document (UTF-8, BOM allowed) under the readers' rules; ``what`` (e.g. "a JSON object")
    names the value the caller expects, and anything else is an error naming the file."""
    p = str(path)
    data, _ = read_utf8(p)
    try:
        obj = parse_json(data)
    except BadJSON as exc:
        raise UserError(exc.message, path=p, line=exc.line) from None
    if what == "a JSON object" and not isinstance(obj, dict):
        raise UserError(f"expected a JSON object, found {_json_type(obj)}", path=p)
    return obj


def _json_type(obj: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(obj), "a number")


def _iter_jsonl(path: str, lines: Iterable[bytes]) -> Iterator[tuple[Location, dict]]:
    row = 0
    for lineno, obj in iter_json_lines(path, lines):
        if type(obj) is not dict:
            raise UserError(f"expected a JSON object, found {type(obj).__name__}", path=path, line=lineno)
        row += 1
        yield Location(path, row, lineno), obj


def _iter_json_array(path: str, data: bytes) -> Iterator[tuple[Location, dict]]:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(_decode_error(exc), path=path, line=line) from None
    try:
        obj = parse_json(data.removeprefix(_BOM))
    except BadJSON as exc:
        raise UserError(exc.message, path=path, line=exc.line) from None
    if not isinstance(obj, list):
        raise UserError("expected a JSON array of objects or JSON lines", path=path)
    for i, rec in enumerate(obj, start=1):
        if not isinstance(rec, dict):
            raise UserError(f"row {i}: expected a JSON object, found {type(rec).__name__}", path=path)
        yield Location(path, i), rec


def _iter_json(path: str) -> Iterator[tuple[Location, dict]]:
    with open(path, "rb") as fh:
        # Read up to the first significant byte to tell a JSON array from JSON lines.
        pending: list[bytes] = []
        for raw in fh:
            pending.append(raw)
            if (raw.removeprefix(_BOM) if len(pending) == 1 else raw).strip():
                break
        head = b"".join(pending).removeprefix(_BOM).lstrip()
        if head.startswith(b"["):
            yield from _iter_json_array(path, b"".join(pending) + fh.read())
        else:
            yield from _iter_jsonl(path, itertools.chain(pending, fh))


def _csv_lines(path: str, fh: IO[bytes], counter: list[int]) -> Iterator[str]:
    for raw in fh:
        counter[0] += 1
        if counter[0] == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(_decode_error(exc), path=path, line=counter[0]) from None


def _iter_csv(path: str) -> Iterator[tuple[Location, dict]]:
    # Dialogues and code answers easily exceed the csv module's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    counter = [0]
    with open(path, "rb") as fh:
        # strict: a quote that is never closed (or text after a closing quote) is an error, not a
        # field that silently swallows the rows after it up to the end of the file.
        reader = csv.reader(_csv_lines(path, fh, counter), strict=True)
        header: list[str] | None = None
        row = 0
        last_line = 0
        try:
            for cells in reader:
                start = last_line + 1
                last_line = reader.line_num
                if not cells:
                    continue
                if header is None:
                    header = [c.strip() for c in cells]
                    dupes = sorted({h for h in header if header.count(h) > 1})
                    if dupes or "" in header:
                        what = f"duplicate columns {', '.join(dupes)}" if dupes else "an empty column name"
                        raise UserError(f"CSV header has {what}", path=path, line=start)
                    continue
                if len(cells) != len(header):
                    raise UserError(
                        f"CSV row has {len(cells)} fields but the header has {len(header)}", path=path, line=start
                    )
                row += 1
                yield Location(path, row, start), dict(zip(header, cells, strict=True))
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise UserError("invalid CSV: a quoted field opened here is never closed (a missing '\"')",
                                path=path, line=last_line + 1) from None
            raise UserError(f"invalid CSV: {exc}", path=path, line=counter[0]) from None


def _arrow_problem(arrow_type: Any) -> tuple[Any, str] | None:
    """The part of an Arrow type whose values no record can hold, and what to do about it; ``None``
    when every value reads as text, a number, a boolean, null, a date or time, or lists and objects of
    those. A decimal read as Python's ``Decimal``, a duration as ``timedelta`` or bytes would be refused
    only when written, by a message naming the output; here they are refused where they are."""
    import pyarrow as pa
    import pyarrow.types as t

    pending = [arrow_type]
    while pending:
        kind = pending.pop()
        if isinstance(kind, pa.BaseExtensionType):
            pending.append(kind.storage_type)
        elif t.is_decimal(kind):
            return kind, "a decimal has no exact JSON number; cast the column to float64 (or string) first"
        elif t.is_duration(kind) or t.is_interval(kind):
            return kind, "a duration has no JSON value; cast the column to int64 (a count of units) or string"
        elif t.is_binary(kind) or t.is_large_binary(kind) or t.is_fixed_size_binary(kind) or t.is_binary_view(kind):
            return kind, "bytes are no text; decode the column to string (or drop it)"
        elif t.is_dictionary(kind):
            pending.append(kind.value_type)
        elif t.is_run_end_encoded(kind):
            pending.append(kind.value_type)
        elif t.is_map(kind):
            pending.extend((kind.key_type, kind.item_type))
        elif isinstance(kind, (pa.ListType, pa.LargeListType, pa.FixedSizeListType, pa.ListViewType,
                               pa.LargeListViewType)):
            pending.append(kind.value_type)
        elif isinstance(kind, (pa.StructType, pa.UnionType)):
            pending.extend(kind.field(i).type for i in range(kind.num_fields))
    return None


def check_arrow_schema(schema: Any, path: str) -> None:
    """Refuse a Parquet file or dataset folder with a column :func:`_arrow_problem` names, before a row
    is read: one line with the input, the column and its actual type."""
    for field in schema:
        problem = _arrow_problem(field.type)
        if problem is not None:
            part, advice = problem
            inner = "" if part is field.type or str(part) == str(field.type) else f" (holding {part})"
            raise UserError(f"column {describe(field.name)} has Arrow type {shorten(str(field.type), 80)}{inner}: "
                            f"{advice}", path=path)


def _iter_parquet(path: str) -> Iterator[tuple[Location, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read Parquet: {exc}", path=path) from None
    check_arrow_schema(pf.schema_arrow, path)
    try:
        row = 0
        for batch in pf.iter_batches(batch_size=4096):
            for rec in batch.to_pylist():
                row += 1
                yield Location(path, row), rec
    except (pa.ArrowException, OSError, ValueError, OverflowError) as exc:  # a date past year 9999, say
        raise UserError(f"cannot read Parquet: {shorten(str(exc), 200)}", path=path) from None


def _iter_hf(path: str) -> Iterator[tuple[Location, dict]]:
    import pyarrow as pa
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        ds = load_from_disk(path)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(f"cannot load the dataset folder: {exc}", path=path) from None
    except Exception as exc:  # noqa: BLE001 - damaged metadata files make datasets fail in any way
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"cannot load the dataset folder (its metadata files are damaged: {type(exc).__name__}: "
                        f"{shorten(detail, 120)})", path=path) from None
    if isinstance(ds, DatasetDict):
        if len(ds) != 1:
            raise UserError(
                f"dataset folder has splits {', '.join(ds)}; point at one split's folder", path=path
            )
        ds = next(iter(ds.values()))
    if not isinstance(ds, Dataset):
        raise UserError(f"is not a dataset folder datasets can read rows from ({type(ds).__name__})", path=path)
    check_arrow_schema(ds.data.schema, path)
    row = 0
    try:
        for batch in ds.iter(batch_size=1000):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns), strict=True):
                row += 1
                yield Location(path, row), dict(zip(columns, values, strict=True))
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise UserError(f"cannot read the dataset folder: {shorten(str(exc), 200)}", path=path) from None


_READERS: dict[str, Callable[[str], Iterator[tuple[Location, dict]]]] = {
    "json": _iter_json,
    "jsonl": _iter_json,  # both sniff array vs lines, see the module docstring
    "csv": _iter_csv,
    "parquet": _iter_parquet,
    "hf": _iter_hf,
}


def iter_located_records(path: str | os.PathLike, fmt: str | None = None) -> Iterator[tuple[Location, dict]]:
    """Like :func:`iter_records` but each record comes with its :class:`Location` for error messages."""
    path = str(path)
    is_folder = check_input(path, folders=True)
    kind = file_format(path, fmt)
    if is_folder:
        check_folder(path)
    yield from _READERS[kind](path)


def iter_records(path: str | os.PathLike, fmt: str | None = None) -> Iterator[dict]:
    """Stream the records of a file (JSON lines, CSV and Parquet stream; JSON arrays load whole).

    CSV values are strings, as written. Errors are :class:`UserError` with the file and line.
    """
    for _, rec in iter_located_records(path, fmt):
        yield rec


def read_records(path: str | os.PathLike, fmt: str | None = None) -> list[dict]:
    """All records of a file as a list (see :func:`iter_records`)."""
    return list(iter_records(path, fmt))


# --------------------------------------------------------------------------- YAML

# Values an alias may repeat in total: a config repeats a block or two, an alias bomb (each level
# repeating the one before nine times) needs millions. Beyond it the file is refused, not expanded.
MAX_ALIAS_VALUES = 10_000


def _yaml_loader():
    """PyYAML's safe loader, stricter: duplicate keys, huge integers and lone surrogates are errors."""
    import yaml
    from yaml.constructor import ConstructorError

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # "<<: *base" then a key of its own overrides on purpose
                    key = self.construct_object(key_node, deep=True)
                    try:
                        if key in first:
                            raise ConstructorError(None, None, f"duplicate key {describe(key)} (first given on line "
                                                   f"{first[key] + 1}); keep one", key_node.start_mark)
                        first[key] = key_node.start_mark.line
                    except TypeError:
                        pass  # an unhashable key: the base constructor reports it
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node):
            try:
                return super().construct_yaml_int(node)
            except ValueError:
                raise ConstructorError(None, None, "an integer with more than 4,300 digits", node.start_mark) from None

        def construct_scalar(self, node):
            value = super().construct_scalar(node)
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise ConstructorError(None, None, "a lone surrogate escape (such as \\ud800) is not a character",
                                           node.start_mark) from None
            return value

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return StrictLoader


def _check_yaml_tree(root: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING` and aliases that expand beyond
    :data:`MAX_ALIAS_VALUES`, before anything is constructed (iteratively: no recursion to exhaust)."""
    import yaml
    from yaml.constructor import ConstructorError

    seen: set[int] = set()
    repeated = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            repeated += 1
            if repeated > MAX_ALIAS_VALUES:
                raise ConstructorError(None, None, f"aliases expand to more than {MAX_ALIAS_VALUES:,} values (an "
                                       "alias bomb?); write the values out", node.start_mark)
        seen.add(id(node))
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            if depth > MAX_NESTING:
                raise ConstructorError(None, None, f"nested more than {MAX_NESTING} levels deep", node.start_mark)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            stack.extend((child, depth + 1) for child in children)


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file's content (safe types only) under the readers' rules, every problem a ``FILE:LINE:``
    error: UTF-8 (a BOM is allowed), no duplicate keys, bounded alias expansion and nesting, no lone
    surrogates, no integer beyond Python's digit limit."""
    import yaml

    p = str(path)
    _, text = read_utf8(p)
    loader = None
    try:
        loader = _yaml_loader()(text)  # its reader refuses control characters at once
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_tree(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = None if mark is None else mark.line + 1
        if line is None and isinstance(getattr(exc, "position", None), int):  # a ReaderError
            line = text[: exc.position].count("\n") + 1
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"not valid YAML: {problem}", path=p, line=line) from None
    except RecursionError:
        raise UserError(f"not valid YAML: nested more than {MAX_NESTING} levels deep", path=p,
                        line=loader.get_mark().line + 1 if loader else None) from None
    finally:
        if loader is not None:
            loader.dispose()


# --------------------------------------------------------------------------- writing


_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust (safetensors) words an errno
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def write_failure(exc: BaseException, path: str | os.PathLike) -> str | None:
    """Why writing ``path`` failed, when ``exc`` (or what it was raised from) is a failed write: a full
    disk, a read-only or forbidden folder, a quota, also as safetensors and torch report them; ``None``
    for anything else."""
    if isinstance(exc, OSError):
        return exc.strerror or (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    for cause in (exc.__cause__, exc.__context__):  # a library's own error raised from the system's
        if isinstance(cause, OSError) and cause.errno in _WRITE_ERRNOS:
            return os.strerror(cause.errno)
    text = str(exc)
    if type(exc).__name__ == "SafetensorError" and "I/O error" in text:
        found = _OS_ERROR.search(text)
        return os.strerror(int(found[1])) if found else shorten(text.partition("I/O error")[2].strip(": "), 120)
    if isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in text or "unexpected pos" in text
                                          or "file write failed" in text):
        # torch's zip writer drops the errno; a file system with no room left is what it then usually means
        try:
            full = os.statvfs(path if os.path.isdir(path) else Path(path).parent).f_bavail == 0
        except OSError:
            full = False
        return os.strerror(errno.ENOSPC) if full else f"the write failed ({shorten(text.splitlines()[0], 100)})"
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failure to write ``path`` (see :func:`write_failure`) into the one-line :class:`UserError`
    naming it; what the failed write left is the caller's to remove. An ``OSError`` naming a file of
    its own is placed there, unless that is a temporary (their names start with a dot)."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        reason = write_failure(exc, path)
        if reason is None:
            raise
        named = getattr(exc, "filename", None)
        where = str(path) if named is None or _temporary(str(named), path) else str(named)
        raise UserError(reason, path=where) from exc


def _temporary(named: str, path: str | os.PathLike) -> bool:
    """Whether ``named`` is a temporary made for writing ``path``: beside it or inside it, under a name
    starting with a dot (the atomic writers' files, the training run's staging folder)."""
    target = Path(path)
    try:
        parts = Path(named).relative_to(target.parent).parts
    except ValueError:
        return False
    if parts[:1] == (target.name,):  # inside the target folder: look at its own entries
        parts = parts[1:]
    return any(part.startswith(".") for part in parts)


def _nonfinite(obj: Any) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_nonfinite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_nonfinite(v) for v in obj)
    return False


NONFINITE = ("record cannot be written as JSON: it holds NaN or infinity (a Parquet or Arrow column, say), "
             "which JSON has no value for; fill or drop them first")


def _dumps(rec: Any) -> bytes:
    if _orjson is not None:
        try:
            out = _orjson.dumps(rec)
        except TypeError:
            pass  # lone surrogates, huge ints, exotic types: the standard library handles them below
        else:
            if b"null" in out and _nonfinite(rec):  # orjson writes NaN and infinity as null, silently
                raise UserError(NONFINITE)
            return out
    try:
        return json.dumps(rec, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(rec, ensure_ascii=True, allow_nan=False).encode("ascii")
    except ValueError:
        raise UserError(NONFINITE) from None
    except TypeError as exc:
        raise UserError(f"record cannot be written as JSON: {exc}") from None


def _write_jsonl(fh: IO[bytes], records: Iterable[dict]) -> int:
    n = 0
    buf: list[bytes] = []
    for rec in records:
        buf.append(_dumps(rec))
        n += 1
        if len(buf) >= 4096:
            fh.write(scrub_bytes(b"\n".join(buf) + b"\n"))
            buf.clear()
    if buf:
        fh.write(scrub_bytes(b"\n".join(buf) + b"\n"))
    return n


def _write_json(fh: IO[bytes], records: Iterable[dict]) -> int:
    # One record per line inside the array: readable, diff-able, and still streamed.
    n = 0
    fh.write(b"[")
    for rec in records:
        fh.write((b"\n" if n == 0 else b",\n") + _dumps(rec))
        n += 1
    fh.write(b"\n]\n" if n else b"]\n")
    return n


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):  # str() would write "b'...'" as if it were text
        raise UserError("a field holds bytes, which CSV has no text for; decode it or write Parquet")
    if isinstance(value, (list, dict)):
        return _dumps(value).decode("utf-8")  # nested columns (messages) travel as JSON text
    return str(value)


def _one_schema(records: Iterable[dict], why: str) -> Iterator[dict]:
    """``records``, refusing one with a field the first record lacks: the tabular writers take their
    columns from the first record and would drop it silently."""
    columns: set[str] | None = None
    for n, rec in enumerate(records, start=1):
        if columns is None:
            columns = set(rec)
        extra = [k for k in rec if k not in columns]
        if extra:
            raise UserError(f"record {n} has fields the first record lacks ({', '.join(extra)}); {why}")
        yield rec


def _write_csv(fh: IO[bytes], records: Iterable[dict]) -> int:
    import io as _io

    text = _io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text, lineterminator="\n")
    header: list[str] | None = None
    n = 0
    for rec in _one_schema(records, "CSV needs one header"):
        if header is None:
            header = list(rec)
            writer.writerow(header)
        writer.writerow([_csv_cell(rec.get(k)) for k in header])
        n += 1
    text.flush()
    text.detach()
    return n


def _write_parquet(path: str, records: Iterable[dict]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    n = 0
    chunk: list[dict] = []

    def flush() -> None:
        nonlocal writer
        try:
            table = pa.Table.from_pylist(chunk, schema=writer.schema if writer else None)
        except (pa.ArrowException, TypeError) as exc:
            raise UserError(f"records {n - len(chunk) + 1}..{n} do not fit one Parquet schema: {exc}") from None
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        chunk.clear()

    try:
        for rec in _one_schema(records, "Parquet needs one schema"):  # Arrow would drop the extra fields
            chunk.append(rec)
            n += 1
            if len(chunk) >= 8192:
                flush()
        if chunk:
            flush()
        if writer is None:
            pq.write_table(pa.table({}), path)
    finally:
        if writer is not None:
            writer.close()
    return n


HF_DATASET_FILES = (("dataset_info.json", "state.json"), ("dataset_dict.json",))


def _check_replaceable(final: Path) -> None:
    """An existing folder is replaced whole only when it is what we would write there (a saved Hugging
    Face dataset) or empty: replacing any other folder would delete whatever it holds."""
    if not final.exists():
        return
    if not final.is_dir():
        raise UserError("exists and is not a folder", path=str(final))
    if any(all((final / name).is_file() for name in names) for names in HF_DATASET_FILES):
        return
    if any(final.iterdir()):
        raise UserError("is a folder that is not a saved Hugging Face dataset; writing the dataset there would "
                        "replace everything in it, so give a new folder (or a file name such as out.jsonl)",
                        path=str(final))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap a finished folder into place; an existing one is kept until the new one is there."""
    if final.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{_stem(final)}.old-", dir=final.parent))
        backup.rmdir()
        os.replace(final, backup)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(backup, final)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _mixed_column(rows: list[dict]) -> str:
    """``column 'x' (row 1: str, row 7: int)`` for the first column whose values differ in type."""
    first: dict[str, tuple[int, str]] = {}
    for i, row in enumerate(rows, start=1):
        for key, value in row.items():
            if value is None:
                continue
            kind = type(value).__name__
            if key not in first:
                first[key] = (i, kind)
            elif first[key][1] != kind:
                return f"column '{key}' (row {first[key][0]}: {first[key][1]}, row {i}: {kind})"
    return "a column whose values differ in structure"


def _write_hf(final: Path, records: Iterable[dict]) -> int:
    import pyarrow as pa
    from datasets import Dataset

    _check_replaceable(final)
    rows = list(records)  # datasets builds the Arrow table in memory; fine for HF-folder sizes
    try:
        ds = Dataset.from_list(rows) if rows else Dataset.from_dict({})
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise UserError(f"the rows do not fit one Arrow column type per field: {_mixed_column(rows)} "
                        f"({shorten(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 100)}); "
                        "make each field's values one type, or write JSON lines (.jsonl)", path=str(final)) from None
    _sweep_stale(final)
    from datasets.utils import logging as ds_logging

    tmp = None
    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()  # the caller shows its own progress
    try:
        with writing(final):
            tmp = Path(tempfile.mkdtemp(prefix=f".{_stem(final)}.{os.getpid()}.tmp-", dir=final.parent))
            follow_umask(tmp)  # mkdtemp makes it 0700; the finished dataset folder follows the umask
            ds.save_to_disk(str(tmp))
            _replace_dir(tmp, final)
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return len(rows)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's live process, or not a pid at all
    return True


def _stem(path: Path) -> str:
    """The start of a temporary sibling's name: ``path``'s name, cut so that the temporary's name (about
    25 bytes longer) stays within the 255 bytes a file system allows a name, for any valid ``path``."""
    return path.name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")


def _sweep_stale(path: Path) -> None:
    """Remove temporaries that an earlier writer of ``path`` left when it was killed (SIGKILL runs no
    cleanup). Their names carry the writer's pid; only those of processes no longer alive are removed,
    so a concurrent writer's temporary is never touched."""
    stale = re.compile(rf"^\.{re.escape(_stem(path))}\.(\d+)\.(?:[^/]*\.tmp|tmp-[^/]*)$")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        match = stale.match(sibling.name)
        if match and not _pid_alive(int(match[1])):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                try:
                    sibling.unlink()
                except OSError:
                    pass


def _atomic_file(path: Path, write: Callable[[str], Any]) -> Any:
    """Run ``write(tmp_path)`` on a temporary sibling of ``path`` and rename it into place on success.

    Folders made for ``path`` are removed again when the write fails (no empty folders left behind).
    """
    with new_parents(path):
        return _atomic_file_in_place(path, write)


def _atomic_file_in_place(path: Path, write: Callable[[str], Any]) -> Any:
    _refuse_special(path)
    _sweep_stale(path)
    tmp = None
    try:
        with writing(path):
            fd, tmp = tempfile.mkstemp(prefix=f".{_stem(path)}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            result = write(tmp)
            with open(tmp, "rb") as fh:  # make the content durable before the rename publishes it
                os.fsync(fh.fileno())
            if path.exists():
                try:
                    shutil.copymode(path, tmp)
                except OSError:
                    pass
            else:
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
            return result
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _refuse_special(path: Path) -> None:
    """An output that exists as a FIFO, a device or a socket would be replaced by a plain file (as root,
    ``/dev/null`` itself); refuse it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UserError(f"is {_kind_of(mode)}, not a regular file; give a file path for the output", path=str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions a plain ``open()`` / ``mkdir()`` would under the user's umask.

    Temporary files and folders (``mkstemp``, ``mkdtemp``, and libraries that write through them, such
    as safetensors) are private (0600/0700); once renamed into place they must not stay so.
    """
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_umask())


def write_records(path: str | os.PathLike, records: Iterable[dict], fmt: str | None = None) -> int:
    """Write records atomically and return how many were written.

    ``records`` may be a generator: it is consumed once, streaming into a temporary file in the target's
    folder that replaces ``path`` only at the end (``os.replace``). If the generator raises, the
    exception propagates, the temporary file is removed and an existing ``path`` is untouched.
    CSV takes its header from the first record; nested values are written as JSON text.
    """
    target = Path(path)
    try:
        return _write_records(target, records, fmt)
    except UserError as exc:
        if exc.path is not None:
            raise
        raise UserError(exc.message, path=str(target), line=exc.line) from None  # name the file being written


def _write_records(target: Path, records: Iterable[dict], fmt: str | None) -> int:
    kind = file_format(target, fmt, write=True)
    if kind == "hf":
        with new_parents(target):
            return _write_hf(target, records)
    if target.is_dir():
        raise UserError("is a folder; give a file name or --output-format hf", path=str(target))

    def write(tmp: str) -> int:
        if kind == "parquet":
            return _write_parquet(tmp, records)
        with open(tmp, "wb", buffering=1 << 20) as fh:
            if kind == "jsonl":
                return _write_jsonl(fh, records)
            if kind == "json":
                return _write_json(fh, records)
            return _write_csv(fh, records)

    return _atomic_file(target, write)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Any:
    """The one atomic writer: ``write(tmp)`` fills a temporary sibling of ``path``, which is made durable
    and renamed into place; a new file gets the permissions the umask gives (0644 under 022), an existing
    one keeps its own. A killed or failed write leaves neither half a file nor new empty folders."""
    return _atomic_file(Path(path), write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file (UTF-8) atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(scrub(text))

    _atomic_file(Path(path), write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document (indented, UTF-8, final newline) atomically."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


# --------------------------------------------------------------------------- output folders


def _missing_dirs(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            break
        missing.append(p)
    return missing[::-1]


def _remove_empty(dirs: Iterable[Path]) -> None:
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass


@contextlib.contextmanager
def new_parents(path: str | os.PathLike) -> Iterator[None]:
    """Make ``path``'s missing parent folders; if the block fails, remove those still empty."""
    made = _missing_dirs(Path(path).parent)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        _remove_empty(made)
        raise


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, *, durable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Make the output folder ``path`` for the block; if the block fails, leave the disk as it was.

    On failure everything the block added to the folder is removed, and the folder itself (and any
    parent made for it) when it was new, unless ``durable(path)`` says the folder already holds work
    a rerun resumes from (a checkpoint, a generation log); even then, empty folders made here go.
    So a check that fails after the folder was made leaves no half-made run behind.
    """
    folder = Path(path)
    made = _missing_dirs(folder)
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        keep = False
        try:
            keep = bool(durable and durable(folder))
        except OSError:
            pass
        if not keep:
            for name in set(os.listdir(folder)) - before if folder.is_dir() else ():
                entry = folder / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        _remove_empty(made)
        raise


def has_content(*paths: str | os.PathLike) -> bool:
    """True when any of ``paths`` is a non-empty file or a folder holding one (a ``durable`` test)."""
    for p in map(Path, paths):
        if p.is_file() and p.stat().st_size > 0:
            return True
        if p.is_dir() and any(f.is_file() and f.stat().st_size > 0 for f in p.rglob("*")):
            return True
    return False


def same_place(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file or folder: by inode when both exist (hard links,
    symlinks), else by the resolved path (``./x``, ``x/``, ``d/../x``)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies inside it (resolved paths; symlinks followed)."""
    try:
        inner, outer = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    except (OSError, RuntimeError):
        return False
    return inner == outer or outer in inner.parents


def refuse_overwrite(outputs: Iterable[tuple[str, str | os.PathLike | None]],
                     inputs: Iterable[tuple[str, str | os.PathLike | None]],
                     replaced: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> None:
    """Refuse to write an output that is one of the inputs (compared with :func:`same_place`).

    ``outputs`` and ``inputs`` are ``(what, path)`` pairs (``None`` paths are skipped); ``replaced`` are
    outputs written as a whole folder (an input anywhere inside one is refused too). Callers check
    before anything is created.
    """
    inputs = [(what, p) for what, p in inputs if p is not None and str(p) != ""]
    replaced = [(what, p) for what, p in replaced if p is not None and str(p) != ""]
    for out_what, out in [*outputs, *replaced]:
        if out is None:
            continue
        for in_what, inp in inputs:
            if same_place(out, inp):
                raise UserError(f"{out_what} is the same {'folder' if Path(inp).is_dir() else 'file'} as "
                                f"{in_what} ({shorten(str(inp), 80)}); writing it would destroy the input, so "
                                "choose another output path", path=str(out))
    for out_what, out in replaced:
        for in_what, inp in inputs:
            if within(inp, out):
                raise UserError(f"{out_what} is a folder written as a whole, and {in_what} "
                                f"({shorten(str(inp), 80)}) lies inside it; writing it would destroy the input, "
                                "so choose another output path", path=str(out))


# --------------------------------------------------------------------------- exclusive locks
# (the ownership and lock section: provenance.py chooses where each output's lock lives and what it
# records; this is only the primitive)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        holder = json.loads(raw.decode("utf-8")) if raw else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    """``pid 1234, lookahead-tuning run, since 2026-01-01T10:00:00`` (what a lock's file records)."""
    parts = [f"pid {holder['pid']}" if isinstance(holder.get("pid"), int) else "another process"]
    if isinstance(holder.get("command"), str):
        parts.append(shorten(holder["command"], 80))
    if isinstance(holder.get("since"), str):
        parts.append(f"since {shorten(holder['since'], 40)}")
    return ", ".join(parts)


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike, holder: dict[str, Any], *, target: str, wait: bool = False,
                   on_wait: Callable[[dict[str, Any]], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` for the block, recording ``holder`` in the file.

    The kernel drops the lock when its process ends however it ends (SIGKILL included), so a lock
    left by a dead process never blocks anyone and nothing needs cleaning up; the lock file itself is
    never deleted (deleting it would let a waiter and a newcomer lock two different files). Held by
    another process: a one-line :class:`UserError` on ``target`` naming the holder, or, with ``wait``,
    block until it is free (``on_wait`` is told who holds it first).
    """
    import fcntl

    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_holder(fd)
            if not wait:
                raise UserError(f"is in use by {describe_holder(other)}; wait for it to finish, or pass --wait "
                                "to wait for it", path=target) from None
            if on_wait is not None:
                on_wait(other)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- resumable log


class JsonlLog:
    """An append-only JSON-lines file of records keyed by ``"id"``, for work that must survive a kill.

    Each :meth:`append` is flushed and fsynced, so after a crash the file holds every finished record.
    A kill in the middle of a write leaves at most one truncated last line; it is dropped (and cut from
    the file) when the log is opened, so the rerun redoes exactly that record. A malformed line anywhere
    else is real corruption and raises :class:`UserError` with its line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: dict[str, dict] = {}
        self._fh: IO[bytes] | None = None
        if self.path.exists():
            check_input(self.path)
            with writing(self.path):  # a cut line is cut from the file, so opening can write
                self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as fh:
            data = fh.read()
        good_end = 0
        lines = data.split(b"\n")
        for lineno, raw in enumerate(lines, start=1):
            is_last = lineno == len(lines)
            end = good_end + len(raw) + (0 if is_last else 1)
            body = raw.removeprefix(_BOM) if lineno == 1 else raw
            if not body.strip():
                good_end = end
                continue
            problem = None
            try:
                rec = parse_json(body.strip())
            except (ValueError, UnicodeDecodeError) as exc:
                # Only the last line can be a write cut short by a kill; elsewhere it is corruption. A
                # line that parses, or only fails for a repeated key, is complete: no cut (append
                # writes whole records, from dicts), so it is never dropped unseen.
                tail = lineno == len(lines) or (lineno == len(lines) - 1 and not lines[-1])
                if tail and not isinstance(exc, DuplicateKey):
                    break
                problem = str(exc)
            else:
                if not isinstance(rec, dict) or "id" not in rec:
                    problem = "not a JSON object with an 'id'"
            if problem is not None:
                raise UserError(f"corrupt log line ({problem}); fix or delete the file", path=str(self.path),
                                line=lineno)
            if is_last:  # a complete object without its newline: keep it, but finish the line
                with open(self.path, "ab") as fh:
                    fh.write(b"\n")
                end += 1
            self._records[str(rec["id"])] = rec
            good_end = end
        if good_end < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
                os.fsync(fh.fileno())

    def done_ids(self) -> set[str]:
        """Ids already in the log (as strings)."""
        return set(self._records)

    def records(self) -> list[dict]:
        """The logged records in first-seen order (a re-appended id keeps its latest value)."""
        return list(self._records.values())

    def append(self, record: dict) -> None:
        """Add one record (must have an ``id``) durably: written, flushed and fsynced before returning."""
        if "id" not in record:
            raise ValueError("JsonlLog records need an 'id'")
        try:
            line = scrub_bytes(_dumps(record)) + b"\n"
        except UserError as exc:
            raise UserError(exc.message, path=str(self.path)) from None
        with writing(self.path):
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self._records[str(record["id"])] = record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
