"""Record files: every format round trip, tolerant reading, located errors, atomic writes, JsonlLog."""

from __future__ import annotations

import json
import os

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
