"""Record files: every format round trip, tolerant reading, located errors, atomic writes, JsonlLog."""

from __future__ import annotations

import json
import os
import re

import pytest

from lookahead_tuning.errors import UserError
from lookahead_tuning.io import (
    JsonlLog,
    atomic_write_json,
    atomic_write_text,
    file_format,
    iter_located_records,
    iter_records,
    read_records,
    write_records,
)

RECORDS = [
    {"id": "1", "prompt": "Résumé ✓ 你好", "completion": "emoji 😀 and \"quotes\", commas\nnew line"},
    {"id": "2", "prompt": "plain", "completion": "second"},
]
CHATS = [
    {"messages": [{"role": "user", "content": "hi 😀"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
]


@pytest.mark.parametrize("name", ["out.json", "out.jsonl", "out.csv", "out.parquet", "out_folder"])
def test_round_trip_flat(tmp_path, name):
    path = tmp_path / name
    assert write_records(path, iter(RECORDS)) == 2
    assert read_records(path) == RECORDS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize("name", ["out.json", "out.jsonl", "out.parquet", "out_folder"])
def test_round_trip_nested(tmp_path, name):
    path = tmp_path / name
    write_records(path, CHATS)
    assert read_records(path) == CHATS


def test_csv_writes_nested_values_as_json_text(tmp_path):
    path = tmp_path / "chats.csv"
    write_records(path, CHATS)
    back = read_records(path)
    assert json.loads(back[0]["messages"]) == CHATS[0]["messages"]


def test_format_override_and_detection(tmp_path):
    path = tmp_path / "data.txt"
    write_records(path, RECORDS, fmt="jsonl")
    assert read_records(path, fmt="jsonl") == RECORDS
    with pytest.raises(UserError, match="cannot tell the format"):
        read_records(path)
    assert file_format(tmp_path / "x.JSONL") == "jsonl"
    assert file_format(tmp_path / "newdir", write=True) == "hf"
    with pytest.raises(UserError, match="unknown record format"):
        file_format(path, "xml")


def test_json_extension_holding_json_lines_and_jsonl_holding_array(tmp_path):
    a = tmp_path / "lines.json"
    a.write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")
    b = tmp_path / "array.jsonl"
    b.write_text('\n  [{"a": 1},\n {"a": 2}]', encoding="utf-8")
    assert read_records(a) == read_records(b) == [{"a": 1}, {"a": 2}]


def test_bom_crlf_blank_lines_no_final_newline(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": "x"}\r\n\r\n{"a": "y"}')
    located = list(iter_located_records(path))
    assert [r for _, r in located] == [{"a": "x"}, {"a": "y"}]
    assert [(loc.row, loc.line) for loc, _ in located] == [(1, 1), (2, 3)]
    csv_path = tmp_path / "x.csv"
    csv_path.write_bytes(b'\xef\xbb\xbfq,a\r\n"multi\r\nline",2\r\nz,3')
    assert read_records(csv_path) == [{"q": "multi\r\nline", "a": "2"}, {"q": "z", "a": "3"}]
    arr = tmp_path / "x.json"
    arr.write_bytes(b'\xef\xbb\xbf[{"a": 1}]')
    assert read_records(arr) == [{"a": 1}]


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_records(path)
    assert info.value.render().startswith(f"{path}:2: invalid JSON")
    arr = tmp_path / "bad.json"
    arr.write_text('[\n{"a": 1},\n{"a" 2}\n]', encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_records(arr)
    assert info.value.line == 3


def test_non_object_line_and_invalid_utf8(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(UserError, match="expected a JSON object, found list") as info:
        read_records(path)
    assert info.value.line == 2
    path.write_bytes(b'{"a": 1}\n{"a": "\xff\xfe"}\n')
    with pytest.raises(UserError, match="invalid UTF-8") as info:
        read_records(path)
    assert info.value.line == 2
    csv_path = tmp_path / "x.csv"
    csv_path.write_bytes(b"q,a\nok,1\nbad\xff,2\n")
    with pytest.raises(UserError, match="invalid UTF-8") as info:
        read_records(csv_path)
    assert info.value.line == 3


def test_csv_errors(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("q,a\n1,2\n1,2,3\n", encoding="utf-8")
    with pytest.raises(UserError, match="3 fields but the header has 2") as info:
        read_records(path)
    assert info.value.line == 3
    path.write_text("q,q\n1,2\n", encoding="utf-8")
    with pytest.raises(UserError, match="duplicate columns q"):
        read_records(path)


def test_missing_input_and_non_dataset_folder(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_records(tmp_path / "absent.jsonl")
    with pytest.raises(UserError, match="not a Hugging Face dataset"):
        read_records(tmp_path)


def test_jsonl_streams_lazily(tmp_path):
    # A bad line far down must not be reached before the first records are yielded.
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n' * 3 + "not json\n", encoding="utf-8")
    it = iter_records(path)
    assert next(it) == {"a": 1}
    with pytest.raises(UserError):
        list(it)


@pytest.mark.parametrize("name", ["out.jsonl", "out.json", "out.csv", "out.parquet", "out_folder"])
def test_failed_write_keeps_existing_output(tmp_path, name):
    path = tmp_path / name
    write_records(path, RECORDS)
    before = read_records(path)

    def exploding():
        yield RECORDS[0]
        raise UserError("boom")

    with pytest.raises(UserError, match="boom"):
        write_records(path, exploding())
    assert read_records(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_failed_write_creates_nothing(tmp_path):
    def exploding():
        yield RECORDS[0]
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_records(tmp_path / "new.jsonl", exploding())
    assert list(tmp_path.iterdir()) == []


def test_csv_rejects_fields_the_header_lacks(tmp_path):
    with pytest.raises(UserError, match="fields the first record lacks"):
        write_records(tmp_path / "x.csv", [{"a": 1}, {"a": 2, "b": 3}])
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporaries_are_removed_but_a_live_ones_are_kept(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # a process that has exited
    out = tmp_path / "rows.jsonl"
    stale_file = tmp_path / f".rows.jsonl.{dead}.abc123.tmp"
    stale_dir = tmp_path / f".rows.jsonl.{dead}.tmp-xyz"
    live = tmp_path / f".rows.jsonl.{os.getpid()}.def456.tmp"
    other = tmp_path / f".other.jsonl.{dead}.abc123.tmp"  # another output's: not ours to remove
    for path in (stale_file, live, other):
        path.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "data.arrow").write_text("partial")
    write_records(out, [{"a": 1}])
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()
    assert read_records(out) == [{"a": 1}]


def test_atomic_text_and_json(tmp_path):
    atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "m.json", {"rate": 0.5, "name": "✓"})
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8")) == {"rate": 0.5, "name": "✓"}
    assert oct(os.stat(tmp_path / "m.json").st_mode & 0o777) != "0o600"  # not mkstemp's private mode


def test_jsonl_log_resumes_and_drops_truncated_tail(tmp_path):
    path = tmp_path / "log.jsonl"
    with JsonlLog(path) as log:
        log.append({"id": 1, "x": "a"})
        log.append({"id": "2", "x": "b"})
    with open(path, "ab") as fh:  # a kill in the middle of the third write
        fh.write(b'{"id": "3", "x": "unfini')
    log = JsonlLog(path)
    assert log.done_ids() == {"1", "2"}
    assert [r["x"] for r in log.records()] == ["a", "b"]
    log.append({"id": "3", "x": "c"})
    log.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [1, "2", "3"]


def test_jsonl_log_rejects_corruption_in_the_middle(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "1"}\ngarbage\n{"id": "3"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="corrupt log line") as info:
        JsonlLog(path)
    assert info.value.line == 2


def test_jsonl_log_keeps_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "1"}\n{"id": "2"}', encoding="utf-8")
    log = JsonlLog(path)
    log.append({"id": "3"})
    log.close()
    assert JsonlLog(path).done_ids() == {"1", "2", "3"}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_writer_honours_the_umask_figures_included(tmp_path, umask, mode):
    """One atomic writer for text, JSON, records and figures: each new file gets the umask's permissions
    (a PNG written under umask 022 is 0644, not the 0600 of the temporary it was written to)."""
    import os
    import stat

    from lookahead_tuning.analyse.plots import pyplot, save_figure
    from lookahead_tuning.io import atomic_write_json, atomic_write_text, write_records

    old = os.umask(umask)
    try:
        plt = pyplot()
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        save_figure(fig, tmp_path / "figures" / "a.png")
        plt.close(fig)
        atomic_write_text(tmp_path / "a.md", "x\n")
        atomic_write_json(tmp_path / "a.json", {"a": 1})
        write_records(tmp_path / "a.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert (tmp_path / "figures" / "a.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("figures/a.png", "a.md", "a.json", "a.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["a.png"]  # no temporary left


@pytest.mark.parametrize("name", ["out.parquet", "out.csv"])
def test_a_field_the_first_record_lacks_is_refused_not_dropped(tmp_path, name):
    """Parquet (like CSV) takes its columns from the first record: a later record's extra field would be
    dropped silently, so it is an error naming the output, and nothing is written."""
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.io import write_records

    target = tmp_path / name
    with pytest.raises(UserError, match=r"record 2 has fields the first record lacks \(extra\)") as info:
        write_records(target, [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d", "extra": "x"}])
    assert info.value.path == str(target) and not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["[]", '{"splits": 5}', '{"splits": ["train"]}'])
def test_a_dataset_folder_with_damaged_metadata_is_one_line(tmp_path, text):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.io import read_records

    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_dict.json").write_text(text)
    with pytest.raises(UserError, match="cannot load the dataset folder") as info:
        read_records(folder)
    assert info.value.path == str(folder)


def test_an_output_name_of_255_bytes_is_written(tmp_path):
    """Temporary siblings are named after the output but stay within a file system's 255 bytes."""
    from lookahead_tuning.io import read_records, write_records

    for name in ("x" * 249 + ".jsonl", "é" * 124 + ".jsonl"):  # 255 and 254 bytes
        target = tmp_path / name
        assert write_records(target, [{"a": 1}]) == 1 and read_records(target) == [{"a": 1}]
        target.unlink()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1.0, float("-inf")], {"x": float("nan")}])
def test_nan_and_infinity_are_refused_on_the_way_out_not_written_as_null(tmp_path, value):
    """The readers refuse a JSON NaN; a NaN from a Parquet column must not turn into null (orjson) or
    into the invalid token NaN (the standard library) in JSON output either."""
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.io import write_records

    for name in ("out.jsonl", "out.json"):
        with pytest.raises(UserError, match="NaN or infinity"):
            write_records(tmp_path / name, [{"a": "ok"}, {"a": value}])
    assert list(tmp_path.iterdir()) == []
    assert write_records(tmp_path / "ok.jsonl", [{"a": None, "b": 1.5}]) == 1  # a real null is fine


def test_bytes_are_refused_in_csv_not_written_as_their_repr(tmp_path):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.io import write_records

    with pytest.raises(UserError, match="holds bytes") as info:
        write_records(tmp_path / "out.csv", [{"a": b"\x00\xff"}])
    assert info.value.path == str(tmp_path / "out.csv") and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- strict JSON: repeated keys


@pytest.mark.parametrize("text, key", [
    ('{"a": 1, "a": 2}', "a"),
    ('{"a" : 1, "a"\t: 2, "b": ":"}', "a"),  # space before the colon, and a string that starts with one
    ('{"x": {"k": [1, {"k": 2}], "k": 3}}', "k"),
    ('{"\\u0061": 1, "a": 2}', "a"),  # one key spelled two ways
    ('{"a\\\\": 1, "a\\\\": 2}', "a\\"),  # a key ending in an escaped backslash
    ('{"id": 12345678901234567890123, "id": 1}', "id"),  # the standard library's path (a wide integer)
    ('[{"a": 1}, {"b": 1, "b": 2}]', "b"),
])
def test_a_repeated_key_is_refused_on_every_path(text, key):
    from lookahead_tuning.io import DuplicateKey, parse_json

    with pytest.raises(DuplicateKey, match=f"duplicate key {key!r}".replace("\\", "\\\\")):
        parse_json(text.encode())


@pytest.mark.parametrize("value", [
    {"a": 1, "b": {"a": 2}},  # the same key in two objects
    {"t": 'he said "a": b', "u": ":x", "v": "a\\\": y"},  # strings that look like key ends
    {"a\\": 1, "a\\\\": 2, "m": [{"k": 1}, {"k": 2}]},
    {"m": [{"é": "ü", "k": {"é": 2, "x/y": "1e-05"}}], "n": 1e-05},  # \u escapes, numbers orjson writes otherwise
])
def test_texts_that_look_like_repeats_are_read(value):
    from lookahead_tuning.io import parse_json

    for text in (json.dumps(value), json.dumps(value, indent=1), json.dumps(value, separators=(",", " : "))):
        assert parse_json(text.encode()) == value


def test_a_repeated_key_names_the_file_and_both_lines(tmp_path):
    from lookahead_tuning.io import read_json

    doc = tmp_path / "metrics.json"
    doc.write_text('{\n  "safe_rate": 0.9,\n  "n": 10,\n  "safe_rate": 0.1\n}\n')
    with pytest.raises(UserError) as caught:
        read_json(doc)
    assert caught.value.render() == (f"{doc}:4: invalid JSON: duplicate key 'safe_rate' (first given on line 2); "
                                     "keep one")
    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", "completion": "b", "prompt": "c"}\n')
    with pytest.raises(UserError, match="rows.jsonl:3: invalid JSON: duplicate key 'prompt' in one object"):
        read_records(lines)
    array = tmp_path / "rows.json"
    array.write_text('[\n {"prompt": "a",\n  "prompt": "b", "completion": "c"}\n]\n')
    with pytest.raises(UserError, match="rows.json:3: .*duplicate key 'prompt' \\(first given on line 2\\)"):
        read_records(array)


def test_a_repeated_key_in_a_log_is_corruption_even_on_the_last_line(tmp_path):
    """A cut last line is dropped on open (a kill mid-write); a complete line with a repeated key is not
    one, and dropping it would lose the record silently."""
    path = tmp_path / "gen.jsonl"
    path.write_text('{"id": "1", "completion": "a"}\n{"id": "2", "completion": "b", "completion": "c"}\n')
    with pytest.raises(UserError, match="gen.jsonl:2: corrupt log line .*duplicate key 'completion'"):
        JsonlLog(path)
    assert path.read_text().count("\n") == 2  # nothing cut


# --------------------------------------------------------------------------- only regular files are read


def _special(folder, kind: str, name: str = "in.jsonl"):
    from conftest import special_file

    return special_file(folder / name, kind)


SPECIALS = {"fifo": "a FIFO (named pipe)", "socket": "a socket", "device": "a character device"}


@pytest.mark.parametrize("kind", SPECIALS)
def test_every_reader_refuses_a_path_that_is_not_a_regular_file(tmp_path, kind):
    """Before this, a FIFO blocked the read forever and /dev/zero filled memory; each reader now refuses
    the path at once, naming what it is."""
    from lookahead_tuning.data.loaders import load_harmful_answers
    from lookahead_tuning.generate.cli import read_prompts
    from lookahead_tuning.io import read_json, read_yaml
    from lookahead_tuning.judge.llm import load_template

    readers = [(read_records, "in.jsonl"), (read_json, "in.json"), (read_yaml, "in.yaml"),
               (load_harmful_answers, "answers.jsonl"), (read_prompts, "in.txt"), (load_template, "judge.txt"),
               (JsonlLog, "log.jsonl")]
    for reader, name in readers:
        target = _special(tmp_path, kind, name)
        with pytest.raises(UserError) as caught:
            reader(target)
        assert caught.value.path == str(target) and SPECIALS[kind] in caught.value.message, (reader, caught.value)


@pytest.mark.parametrize("kind", SPECIALS)
def test_a_model_or_dataset_folder_holding_a_special_file_is_refused(tmp_path, tiny_model_dir, kind):
    import shutil

    from lookahead_tuning.models import check_model, load_tokenizer

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (model / "tokenizer.json").unlink()
    _special(model, kind, "tokenizer.json")
    for load in (check_model, load_tokenizer):
        with pytest.raises(UserError, match=re.escape(f"holds 'tokenizer.json', which is {SPECIALS[kind]}")):
            load(str(model))
    dataset = tmp_path / "ds"
    write_records(dataset, iter(RECORDS))
    data_file = next(dataset.glob("*.arrow"))
    data_file.unlink()
    _special(dataset, kind, data_file.name)
    with pytest.raises(UserError, match=re.escape(f"holds '{data_file.name}', which is {SPECIALS[kind]}")):
        read_records(dataset)


def test_dev_zero_is_refused_before_it_is_read(tmp_path):
    """/dev/zero (here behind a .jsonl symlink) ran a reader until memory was gone; in a process held to
    2 GB of memory so that a regression fails instead of exhausting the machine."""
    import subprocess
    import sys

    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from lookahead_tuning.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "preview", str(link), str(tmp_path / "out.jsonl"),
                           "--mode", "virtual", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"error: {link}: is a character device, not a regular file or a folder; a " \
                                  "reader would block on it or never finish"


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_output_that_is_a_special_file_is_refused_not_replaced(tmp_path, kind):
    """An atomic write renames a temporary over its target: over a FIFO, a device or /dev/null itself
    (as root) that would replace the special file with a plain one."""
    target = _special(tmp_path, kind, "out.jsonl")
    with pytest.raises(UserError, match=re.escape(f"is {SPECIALS[kind]}, not a regular file")):
        write_records(target, iter(RECORDS))
    assert target.is_fifo() if kind == "fifo" else target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


# --------------------------------------------------------------------------- Arrow types with no JSON value


def _arrow_cases():
    import datetime
    import decimal
    import uuid

    import pyarrow as pa

    refused = {
        "decimal": (pa.array([decimal.Decimal("1.50")]), "decimal128(3, 2)"),
        "duration": (pa.array([datetime.timedelta(seconds=3)]), "duration[us]"),
        "binary": (pa.array([b"xy"]), "binary"),
        "large_binary": (pa.array([b"xy"], type=pa.large_binary()), "large_binary"),
        "struct_holding_a_decimal": (pa.array([{"a": "x", "b": {"c": decimal.Decimal("2.5")}}]),
                                     "decimal128(2, 1)"),
        "list_of_binary": (pa.array([[b"x"]]), "binary"),
        "dictionary_of_decimals": (pa.array([decimal.Decimal("1.5")]).dictionary_encode(), "decimal128(2, 1)"),
        "uuid": (pa.array([uuid.UUID(int=1).bytes], type=pa.uuid()), "fixed_size_binary[16]"),
    }
    read = {
        "time": (pa.array([datetime.time(1, 2)]), datetime.time(1, 2)),
        "date": (pa.array([datetime.date(2020, 1, 2)]), datetime.date(2020, 1, 2)),
        "struct": (pa.array([{"a": 1, "b": {"c": "x"}}]), {"a": 1, "b": {"c": "x"}}),
        "dictionary": (pa.array(["a"]).dictionary_encode(), "a"),
        "large_string": (pa.array(["a"], type=pa.large_string()), "a"),
        "string_view": (pa.array(["a"], type=pa.string_view()), "a"),
        "float16": (pa.array([1.5], type=pa.float16()), 1.5),
        "list": (pa.array([[1, 2]]), [1, 2]),
    }
    return refused, read


UNSTORABLE = {("uuid", "hf")}  # datasets cannot hold the uuid extension type


@pytest.mark.parametrize(("name", "container"), [(name, container) for name in _arrow_cases()[0]
                                                  for container in ("parquet", "hf")
                                                  if (name, container) not in UNSTORABLE])
def test_an_arrow_column_with_no_json_value_names_the_input_and_its_type(tmp_path, name, container):
    """A decimal column used to read as Python Decimal and fail only when written ("Object of type Decimal
    is not JSON serializable", naming the output, or no file at all from generate); now the reader refuses
    it, naming the input, the column and the actual type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    column, type_text = _arrow_cases()[0][name]
    table = pa.table({"prompt": ["p"], "completion": ["c"], "extra": column})
    if container == "parquet":
        source = tmp_path / "in.parquet"
        pq.write_table(table, source)
    else:
        from datasets import Dataset

        source = tmp_path / "in_folder"
        Dataset(table).save_to_disk(str(source))
    with pytest.raises(UserError) as caught:
        read_records(source)
    assert caught.value.path == str(source)
    assert "column 'extra' has Arrow type" in caught.value.message and type_text in caught.value.message


@pytest.mark.parametrize("name", list(_arrow_cases()[1]))
def test_arrow_columns_with_a_json_like_value_are_read(tmp_path, name):
    import pyarrow as pa
    import pyarrow.parquet as pq

    column, value = _arrow_cases()[1][name]
    pq.write_table(pa.table({"prompt": ["p"], "completion": ["c"], "extra": column}), tmp_path / "in.parquet")
    assert read_records(tmp_path / "in.parquet") == [{"prompt": "p", "completion": "c", "extra": value}]


def test_preview_of_a_decimal_column_names_the_input_not_the_output(tmp_path, capsys):
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lookahead_tuning.cli import main

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "completion": ["c"], "price": pa.array([decimal.Decimal("1.5")])}),
                   source)
    assert main(["preview", str(source), str(tmp_path / "out.jsonl"), "--mode", "virtual", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {source}: column 'price' has Arrow type decimal128(2, 1)"), err
    assert "out.jsonl" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
