"""Property-based fuzzing of everything that reads user input (hypothesis).

The property, for every generated input: **a correct result, or a :class:`UserError` that renders as one
line of bounded length; never another exception, never a changed input file.** Generated inputs are
hostile on purpose: arbitrary bytes, valid JSON of every shape (huge integers, U+2028, deep nesting),
YAML mappings whose values are of the wrong type, non-finite or out of range, rows whose fields are
missing or of the wrong type.

Kept within about a minute on the 2-core development machine: example counts are set per test and the
database is off (CI starts from a clean checkout anyway).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookahead_tuning.errors import MAX_MESSAGE, MAX_PATH, UserError

FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
BOUND = MAX_PATH + MAX_MESSAGE + 20


def assert_one_bounded_line(exc: UserError) -> None:
    text = exc.render()
    assert len(text.splitlines()) == 1, text
    assert len(text) <= BOUND, len(text)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- strategies

# Text as users paste it: any character except lone surrogates (JSON files cannot carry those as text),
# with line and paragraph separators, BOMs and control characters made likely.
TEXT = st.text(st.one_of(st.characters(blacklist_categories=("Cs",)),
                         st.sampled_from(["\u2028", "\u2029", "\ufeff", "\x00", "\r", "\n", '"', "\\"])),
               max_size=40)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                         st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(TEXT, inner, max_size=4)),
                           max_leaves=12)


def _write(tmp_path_factory, name: str, data: bytes) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- readers


@FAST
@given(data=st.binary(max_size=300), ext=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_readers_never_crash_on_arbitrary_bytes(tmp_path_factory, data, ext):
    from lookahead_tuning.io import read_records

    path = _write(tmp_path_factory, f"in{ext}", data)
    before = _digest(path)
    try:
        records = read_records(path)
    except UserError as exc:
        assert_one_bounded_line(exc)
    else:
        assert all(isinstance(r, dict) for r in records)
    assert _digest(path) == before


@FAST
@given(first=st.dictionaries(TEXT, JSON_VALUES, max_size=4), rest=st.lists(JSON_VALUES, max_size=4))
def test_json_lines_read_back_exactly(tmp_path_factory, first, rest):
    """Valid JSON lines (any value, U+2028 in strings, 30-digit integers) read back as written; a line
    that is not an object is an error naming its line. (The first line is an object: a file starting
    with ``[`` is read as one JSON array.)"""
    from lookahead_tuning.io import read_records

    values = [first, *rest]

    lines = [json.dumps(v, ensure_ascii=False) for v in values]
    path = _write(tmp_path_factory, "in.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))
    try:
        records = read_records(path)
    except UserError as exc:
        assert_one_bounded_line(exc)
        first_bad = next(i for i, v in enumerate(values, 1) if not isinstance(v, dict))
        assert exc.line == first_bad and "JSON object" in exc.message
    else:
        assert records == values


@FAST
@given(depth=st.integers(min_value=1, max_value=3000), kind=st.sampled_from("[{"))
def test_nesting_is_bounded_not_fatal(tmp_path_factory, depth, kind):
    from lookahead_tuning.io import MAX_NESTING, read_records

    inner = "[" * depth + "]" * depth if kind == "[" else '{"a": ' * depth + "1" + "}" * depth
    path = _write(tmp_path_factory, "in.jsonl", f'{{"prompt": "p", "x": {inner}}}\n'.encode())
    try:
        records = read_records(path)
    except UserError as exc:
        assert_one_bounded_line(exc)
        assert depth + 1 > MAX_NESTING and "nested" in exc.message
    else:
        assert depth + 1 <= MAX_NESTING and len(records) == 1


@FAST
@given(rows=st.lists(st.lists(st.one_of(TEXT, st.just('"'), st.just('a"b')), min_size=1, max_size=3),
                     min_size=1, max_size=4))
def test_csv_never_crashes(tmp_path_factory, rows):
    from lookahead_tuning.io import read_records

    text = "prompt,completion\n" + "\n".join(",".join(r) for r in rows) + "\n"
    path = _write(tmp_path_factory, "in.csv", text.encode("utf-8"))
    try:
        records = read_records(path)
    except UserError as exc:
        assert_one_bounded_line(exc)
    else:
        assert all(set(r) == {"prompt", "completion"} for r in records)


# --------------------------------------------------------------------------- format detection


FIELD_NAMES = st.sampled_from(["prompt", "completion", "messages", "instruction", "input", "output", "question",
                               "answer", "role", "content", "tool_calls"])
MESSAGE = st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "name"]),
                          st.one_of(st.sampled_from(["user", "assistant", "system", "tool"]), JSON_VALUES),
                          max_size=3)
ROW_VALUES = st.one_of(JSON_VALUES, st.lists(MESSAGE, max_size=4))


@FAST
@given(row=st.dictionaries(FIELD_NAMES, ROW_VALUES, max_size=4))
def test_format_detection_and_split_never_crash(row):
    from lookahead_tuning.data.formats import preview_slots, resolve_format, split_example

    try:
        prompt, completion = split_example(row)
    except UserError as exc:
        assert_one_bounded_line(exc)
    else:
        assert isinstance(completion, str)
        assert all(isinstance(m["content"], str) for m in prompt)
    try:
        fmt = resolve_format(row)
        preview_slots(row, fmt, all_turns=True)
    except UserError as exc:
        assert_one_bounded_line(exc)


# --------------------------------------------------------------------------- config loading

HOSTILE_NUMBERS = st.one_of(st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
                            st.floats(), st.sampled_from([".inf", "-.inf", ".nan", "1e-5", "5e-5", "many", ""]))
TRAIN_KEYS = st.sampled_from(["lr", "epochs", "seed", "data_seed", "batch_size", "grad_accum", "limit", "m",
                              "max_steps", "save_steps", "warmup_ratio", "weight_decay", "beta_base",
                              "lora_dropout", "lora_alpha", "safety_share", "max_length", "log_every",
                              "beta_schedule", "lora", "prefix"])


@FAST
@given(values=st.dictionaries(TRAIN_KEYS, st.one_of(HOSTILE_NUMBERS, st.lists(HOSTILE_NUMBERS, max_size=3)),
                              max_size=5))
def test_training_config_checks_every_number(tmp_path_factory, values):
    """Every value that makes a config is finite, in range and not a boolean posing as a number."""
    import yaml

    from lookahead_tuning.train.config import load_config

    path = _write(tmp_path_factory, "c.yaml", yaml.safe_dump(values).encode())
    try:
        cfg = load_config(path, {"model": "m", "data": "d", "out": "o"})
    except UserError as exc:
        assert_one_bounded_line(exc)
        return
    for key in ("lr", "epochs", "warmup_ratio", "weight_decay", "beta_base", "lora_dropout", "lora_alpha"):
        value = getattr(cfg, key)
        assert not isinstance(value, bool) and math.isfinite(value)
    assert 0 < cfg.lr <= 1 and cfg.epochs > 0 and 0 <= cfg.seed < 2**32 and cfg.batch_size >= 1
    assert cfg.limit is None or cfg.limit >= 1


@FAST
@given(text=st.text(max_size=200))
def test_yaml_reader_never_crashes(tmp_path_factory, text):
    from lookahead_tuning.io import read_yaml

    path = _write(tmp_path_factory, "c.yaml", text.encode("utf-8", "surrogatepass"))
    try:
        read_yaml(path)
    except UserError as exc:
        assert_one_bounded_line(exc)


EXPERIMENT = st.fixed_dictionaries(
    {"name": st.just("fuzz"), "model": st.just("smollm2-135m-instruct"), "tasks": st.just(["math"]),
     "methods": st.lists(st.one_of(st.sampled_from(["vanilla", "lookahead-real", "bogus"]),
                                   st.fixed_dictionaries({"name": st.sampled_from(["vanilla", "sdft"])},
                                                         optional={"seed": HOSTILE_NUMBERS, "lr": HOSTILE_NUMBERS,
                                                                   "out": TEXT})),
                         min_size=1, max_size=2)},
    optional={"seeds": st.lists(HOSTILE_NUMBERS, max_size=3), "train": st.dictionaries(TRAIN_KEYS, HOSTILE_NUMBERS,
                                                                                      max_size=2),
              "eval": st.dictionaries(st.sampled_from(["limit", "max_new_tokens", "batch_size", "prefill_tokens"]),
                                      HOSTILE_NUMBERS, max_size=2),
              "sweeps": st.fixed_dictionaries({}, optional={"m": st.lists(HOSTILE_NUMBERS, max_size=2)})})


@FAST
@given(values=EXPERIMENT)
def test_experiment_config_loads_or_names_the_problem(tmp_path_factory, values):
    import yaml

    from lookahead_tuning.experiment.config import load_experiment
    from lookahead_tuning.experiment.plan import plan_cells

    path = _write(tmp_path_factory, "e.yaml", yaml.safe_dump(values).encode())
    try:
        cfg = load_experiment(path)
    except UserError as exc:
        assert_one_bounded_line(exc)
        return
    for cell in plan_cells(cfg):  # a loaded config plans cells whose training settings are all valid
        if cell.method != "seed":
            assert "out" not in cell.train and cell.train["seed"] in cfg.seeds


# --------------------------------------------------------------------------- the preview transform


ROWS = st.lists(st.fixed_dictionaries({}, optional={"prompt": st.one_of(TEXT, JSON_VALUES),
                                                    "completion": st.one_of(TEXT, JSON_VALUES),
                                                    "extra": JSON_VALUES}), min_size=1, max_size=4)


@SLOW
@given(rows=ROWS, mode=st.sampled_from(["real", "virtual"]), m=st.integers(min_value=0, max_value=8))
def test_preview_transform_result_or_one_line(tmp_path_factory, tokenizer, rows, mode, m):
    """The preview of generated rows: every row written (and the instruction extended), or one error
    line; the input file never changes and no output appears on failure."""
    from lookahead_tuning.io import read_records
    from lookahead_tuning.preview.cli import run_preview
    from lookahead_tuning.preview.dataset import PreviewConfig

    folder = tmp_path_factory.mktemp("preview")
    src = folder / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    before = _digest(src)
    out = folder / "out.jsonl"
    config = PreviewConfig(mode=mode, tokenizer=tokenizer, m=m)
    try:
        summary = run_preview(str(src), str(out), config, progress=False)
    except UserError as exc:
        assert_one_bounded_line(exc)
        assert not out.exists()
    else:
        written = read_records(out)
        assert summary.rows == len(written) == len(rows)
        for row, new in zip(rows, written, strict=True):
            assert new["prompt"].startswith(row["prompt"]) and len(new["prompt"]) >= len(row["prompt"])
    assert _digest(src) == before
    assert sorted(p.name for p in folder.iterdir()) in (["in.jsonl"], ["in.jsonl", "out.jsonl"])


@SLOW
@given(data=st.binary(max_size=200), fmt=st.sampled_from(["jsonl", "csv", "json"]))
def test_preview_command_exits_0_or_2_with_one_line(tmp_path_factory, data, fmt):
    """The whole command on arbitrary bytes: exit 0, or exit 2 with exactly one bounded ``error:`` line."""
    import contextlib
    import io

    from lookahead_tuning.cli import main

    folder = tmp_path_factory.mktemp("cmd")
    src = folder / f"in.{fmt}"
    src.write_bytes(data)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        # Virtual mode needs no tokenizer (one that cannot be loaded only drops the summary's token count),
        # which keeps each call fast: the property is about reading, transforming and writing.
        rc = main(["preview", str(src), str(folder / "out.jsonl"), "--mode", "virtual", "--tokenizer",
                   str(folder / "no-tokenizer"), "--quiet"])
    lines = err.getvalue().splitlines()
    assert rc in (0, 2)
    if rc == 2:
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= BOUND + 7
        assert not (folder / "out.jsonl").exists()
    assert src.read_bytes() == data


# --------------------------------------------------------------------------- issue 30, class 5: repeated keys

# Objects are written from (key, value) pairs so that a key can repeat. Keys and strings are drawn from
# the characters that make a key end hard to count (quotes, backslashes, colons, spaces); the text gets
# JSON's whitespace anywhere it is allowed and \u escapes at random, and integers beyond 20 digits send
# it through the standard library's path instead of orjson's.
PAIR_TEXT = st.text(st.sampled_from(['a', 'b', ':', '"', '\\', ' ', '{', 'é']), max_size=4)
PAIR_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**25), 10**25), PAIR_TEXT)
PAIR_TREES = st.recursive(
    PAIR_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(lambda items: ("list", items)),
                            st.lists(st.tuples(PAIR_TEXT, inner), max_size=4).map(lambda pairs: ("object", pairs))),
    max_leaves=12)


def _render(node, rnd) -> str:
    def space() -> str:
        return rnd.choice(["", "", " ", "\n  ", "\t", "\r\n"])

    def text(value: str) -> str:
        return json.dumps(value, ensure_ascii=rnd.random() < 0.5)

    if isinstance(node, tuple):
        kind, items = node
        if kind == "list":
            return "[" + ",".join(space() + _render(v, rnd) + space() for v in items) + space() + "]"
        return "{" + ",".join(space() + text(k) + space() + ":" + space() + _render(v, rnd) + space()
                              for k, v in items) + space() + "}"
    return text(node) if isinstance(node, str) else json.dumps(node)


def _value(node):
    """The Python value of a pair tree, or None in place of the whole when a key repeats somewhere."""
    if not isinstance(node, tuple):
        return node, False
    kind, items = node
    if kind == "list":
        parts = [_value(v) for v in items]
        return [v for v, _ in parts], any(r for _, r in parts)
    parts = [(k, *_value(v)) for k, v in items]
    keys = [k for k, _, _ in parts]
    return {k: v for k, v, _ in parts}, len(set(keys)) != len(keys) or any(r for _, _, r in parts)


@FAST
@given(tree=PAIR_TREES, rnd=st.randoms(use_true_random=False))
def test_a_repeated_key_is_found_however_the_text_is_written(tree, rnd):
    """parse_json refuses exactly the texts in which some object names a key twice (spelled the same or
    with escapes) and reads every other one exactly: the fast count never lets a repeat through and never
    refuses a text without one."""
    from lookahead_tuning.io import BadJSON, parse_json

    text = _render(tree, rnd)
    expected, repeats = _value(tree)
    if repeats:
        with pytest.raises(BadJSON) as caught:
            parse_json(text.encode("utf-8"))
        assert "duplicate key" in caught.value.message
    else:
        assert parse_json(text.encode("utf-8")) == expected


# --------------------------------------------------------------------------- issue 30, class 7: inputs and writes

ARROW_OK = ["string", "large_string", "int64", "float64", "bool", "date32", "time64[us]", "timestamp[ms]"]
ARROW_BAD = ["decimal128(5, 2)", "duration[s]", "binary", "large_binary"]


def _arrow_leaf(name: str):
    import pyarrow as pa

    return {"string": pa.string(), "large_string": pa.large_string(), "int64": pa.int64(),
            "float64": pa.float64(), "bool": pa.bool_(), "date32": pa.date32(), "time64[us]": pa.time64("us"),
            "timestamp[ms]": pa.timestamp("ms"), "decimal128(5, 2)": pa.decimal128(5, 2),
            "duration[s]": pa.duration("s"), "binary": pa.binary(), "large_binary": pa.large_binary()}[name]


ARROW_TYPES = st.recursive(
    st.sampled_from(ARROW_OK + ARROW_BAD).map(lambda name: ("leaf", name)),
    lambda inner: st.one_of(st.tuples(st.just("list"), inner), st.tuples(st.just("large_list"), inner),
                            st.tuples(st.just("struct"), st.lists(inner, min_size=1, max_size=3)),
                            st.tuples(st.just("dictionary"), st.sampled_from(["string", "int64"]))),
    max_leaves=5)


def _arrow_type(node):
    import pyarrow as pa

    kind, arg = node
    if kind == "leaf":
        return _arrow_leaf(arg), arg in ARROW_BAD
    if kind == "dictionary":
        return pa.dictionary(pa.int32(), _arrow_leaf(arg)), False
    if kind == "struct":
        parts = [_arrow_type(child) for child in arg]
        return pa.struct([(f"f{i}", t) for i, (t, _) in enumerate(parts)]), any(bad for _, bad in parts)
    inner, bad = _arrow_type(arg)
    return (pa.list_(inner) if kind == "list" else pa.large_list(inner)), bad


@FAST
@given(node=ARROW_TYPES)
def test_a_column_type_no_record_can_hold_is_named_at_the_input(tmp_path_factory, node):
    """However a decimal, a duration or bytes are nested (lists, structs), the Parquet reader names the
    input, the column and its type, one line; every other type reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lookahead_tuning.io import read_records

    arrow_type, bad = _arrow_type(node)
    path = tmp_path_factory.mktemp("arrow") / "in.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "x": pa.nulls(1, type=arrow_type)}), path)
    try:
        records = read_records(path)
    except UserError as exc:
        assert_one_bounded_line(exc)
        assert bad and exc.path == str(path) and "column 'x' has Arrow type" in exc.message
    else:
        assert not bad and records == [{"prompt": "p", "x": None}]


@FAST
@given(code=st.sampled_from(["ENOSPC", "EROFS", "EACCES", "EDQUOT"]), after=st.integers(0, 300),
       kind=st.sampled_from(["out.jsonl", "out.json", "out.csv", "report.md", "log"]),
       rows=st.lists(st.dictionaries(st.sampled_from(["prompt", "completion", "id"]), TEXT, min_size=3),
                     min_size=1, max_size=20))
def test_a_write_that_fails_part_way_is_one_line_naming_the_output(tmp_path_factory, code, after, kind, rows):
    """A disk that fills up (or turns read-only, or runs out of quota) after ``after`` bytes: every writer
    raises the one-line error naming its output (never the temporary), the earlier output stays byte for
    byte, and no temporary is left."""
    import builtins
    import errno
    import os
    from unittest import mock

    from lookahead_tuning import io as lio

    number = getattr(errno, code)
    folder = tmp_path_factory.mktemp("disk")
    target = folder / ("gen.jsonl" if kind == "log" else kind)
    target.write_bytes(b'{"id": "earlier"}\n')
    real_open = builtins.open

    class Filling:
        def __init__(self, fh):
            self.fh, self.left = fh, after

        def write(self, data):
            if len(data) > self.left:
                self.fh.write(data[: self.left])
                self.left = 0
                raise OSError(number, os.strerror(number))
            self.left -= len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return Filling(fh) if "w" in mode or "a" in mode else fh

    with mock.patch.object(lio, "open", fake_open, create=True):
        try:
            if kind == "log":
                log = lio.JsonlLog(target)
                for i, row in enumerate(rows):
                    log.append({**row, "id": str(i)})
                log.close()
            elif kind == "report.md":
                lio.atomic_write_text(target, "".join(str(r) for r in rows))
            else:
                lio.write_records(target, iter(rows))
        except UserError as exc:
            assert exc.render() == f"{target}: {os.strerror(number)}"
        else:  # everything fitted in ``after`` bytes
            return
    if kind == "log":  # the records that fitted are kept, the one cut short is dropped on the next open
        kept = lio.JsonlLog(target).records()
        assert kept[0] == {"id": "earlier"} and all(r["id"] != "earlier" for r in kept[1:])
    else:
        assert target.read_bytes() == b'{"id": "earlier"}\n'
    assert sorted(p.name for p in folder.iterdir()) == [target.name]


@pytest.mark.parametrize(("name", "value"), [
    ("POSITIVE_INT", -1), ("POSITIVE_INT", 0), ("POSITIVE_INT", True), ("POSITIVE_INT", 1.5),
    ("POSITIVE_INT", 10**5000), ("SEED", -1), ("SEED", 2**32), ("LEARNING_RATE", float("nan")),
    ("LEARNING_RATE", float("inf")), ("LEARNING_RATE", 0.0), ("EPOCHS", True), ("TEMPERATURE", 0.0),
    ("TOP_P", 1.5), ("FRACTION", -0.1)], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_bounds_refuse_the_classic_bad_numbers(name, value):
    import lookahead_tuning.validate as v

    with pytest.raises(ValueError, match="expected "):
        getattr(v, name).check(value)
    with pytest.raises(UserError, match=f"^{name.lower()}: expected"):
        getattr(v, name).check(value, name.lower())


# --------------------------------------------------------------------------- server answers (issue 30, class 6)

# Answers shaped like a completion, a chat completion and a model list, each field of any JSON type, and
# the raw bytes a broken server sends.
COMPLETION_LIKE = st.fixed_dictionaries({"choices": st.one_of(JSON_VALUES, st.lists(st.fixed_dictionaries(
    {"text": JSON_VALUES, "finish_reason": JSON_VALUES}), max_size=3)),
    "usage": st.one_of(JSON_VALUES, st.fixed_dictionaries({"completion_tokens": JSON_VALUES}))})
CHAT_LIKE = st.fixed_dictionaries({"choices": st.one_of(JSON_VALUES, st.lists(st.fixed_dictionaries(
    {"message": st.one_of(JSON_VALUES, st.fixed_dictionaries({"content": JSON_VALUES}))}), max_size=3))})
MODELS_LIKE = st.fixed_dictionaries({"data": st.one_of(JSON_VALUES, st.lists(st.fixed_dictionaries(
    {"id": JSON_VALUES}), max_size=3))})


@FAST
@given(body=st.one_of(COMPLETION_LIKE.map(json.dumps), CHAT_LIKE.map(json.dumps), MODELS_LIKE.map(json.dumps),
                      JSON_VALUES.map(json.dumps), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_server_answers_are_read_exactly_or_refused_in_one_line(body):
    """A server's answer gives the types the code reads (a string text, an integer token count >= 0, a
    string or null chat content, string model ids) or a one-line refusal; never another exception."""
    from lookahead_tuning.endpoint import BadAnswer, ChatAnswer, CompletionAnswer, ModelList, parse_answer

    raw = body.encode("utf-8", "surrogatepass")
    for schema in (CompletionAnswer, ChatAnswer, ModelList):
        try:
            answer = parse_answer(raw, schema, what="generation", url="http://127.0.0.1:1/v1")
        except BadAnswer as exc:
            assert_one_bounded_line(exc)
            assert exc.message.startswith("generation at http://127.0.0.1:1/v1: the server's answer is not a valid ")
            continue
        if schema is CompletionAnswer:
            assert answer.choices and all(type(c.text) is str for c in answer.choices)
            tokens = answer.usage.completion_tokens if answer.usage else None
            assert tokens is None or (type(tokens) is int and tokens >= 0)
        elif schema is ChatAnswer:
            assert all(c.message.content is None or type(c.message.content) is str for c in answer.choices)
        else:
            assert all(type(card.id) is str for card in answer.data)
