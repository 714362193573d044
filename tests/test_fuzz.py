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
