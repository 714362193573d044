"""``lookahead-tuning preview``: formats in and out, reference flag spellings, every error path.

A few tests run the real command in a subprocess (exit codes, stderr); the rest call ``cli.main``
in-process, which runs the same code without paying the interpreter start-up each time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lookahead_tuning.cli import main
from lookahead_tuning.io import read_records, write_records
from lookahead_tuning.preview import PreviewConfig, preview_rows, real_preview

C = " The answer begins with: "
P = "Let's solve this problem. "
ROWS = [
    {"question": "How many clips?", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"},
    {"question": "Short?", "answer": "42"},
    {"question": "Emoji?", "answer": "Hi 😀 there, naïve café"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "lookahead_tuning", "preview", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------- through a subprocess

def test_subprocess_real_mode_and_summary(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    proc = run_cli(str(src), str(out), "--mode", "real", "--tokenizer", "smollm2-135m-instruct", "--quiet")
    assert proc.returncode == 0, proc.stderr
    got = read_records(out)
    assert got[0]["question"] == f"How many clips?{C}Natalia sold 4"
    assert got[1]["question"] == f"Short?{C}42"
    assert [r["answer"] for r in got] == [r["answer"] for r in ROWS]
    assert "real preview: 3 rows" in proc.stdout
    # previews of 6, 2 (4|2) and 6 tokens; one answer shorter than m
    assert "mean preview tokens: 4.67; rows shorter than m: 1" in proc.stdout
    assert "skipped rows: 0" in proc.stdout


def test_subprocess_malformed_json_exit_2_and_output_untouched(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"question": "q", "answer": "a"}\n{"question": "q", "answer": \n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n", encoding="utf-8")
    proc = run_cli(str(src), str(out), "--mode", "virtual", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {src}:2: invalid JSON")
    assert out.read_text(encoding="utf-8") == "precious\n"
    assert listing(tmp_path) == ["in.jsonl", "out.jsonl"]


# ----------------------------------------------------------------- in-process

def test_reference_script_spellings(tmp_path, capsys):
    # The reference README's virtual command, verbatim apart from the paths.
    src = write_jsonl(tmp_path / "train.json", ROWS)  # JSON lines in a .json file, as there
    out = tmp_path / "train_virtual.json"
    code = main(["preview", "--input_file", str(src), "--output_file", str(out), "--input_format", "jsonl",
                   "--output_format", "jsonl", "--input_field", "question", "--output_field", "answer",
                   "--mode", "virtual", "--P", " Let's solve this problem. ", "--quiet"])
    assert code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["question"] == f"How many clips?{C} Let's solve this problem. "
    assert first["answer"].startswith(" Let's solve this problem. Natalia")


def expected_virtual(rows):
    return [{**r, "question": r["question"] + C + P, "answer": P + r["answer"]} for r in rows]


@pytest.mark.parametrize("name", ["out.json", "out.jsonl", "out.csv", "out.parquet", "out_folder"])
def test_every_output_format(tmp_path, name, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    assert main(["preview", str(src), str(tmp_path / name), "--mode", "virtual", "--quiet"]) == 0
    assert read_records(tmp_path / name) == expected_virtual(ROWS)


@pytest.mark.parametrize("name", ["in.json", "in.csv", "in.parquet", "in_folder"])
def test_every_input_format(tmp_path, name, capsys):
    write_records(tmp_path / name, ROWS)
    assert main(["preview", str(tmp_path / name), str(tmp_path / "out.jsonl"), "--mode", "virtual", "--quiet"]) == 0
    assert read_records(tmp_path / "out.jsonl") == expected_virtual(ROWS)


def test_output_format_override(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.data"
    assert main(["preview", str(src), str(out), "--mode", "virtual", "--output-format", "csv", "--quiet"]) == 0
    assert out.read_text(encoding="utf-8").startswith("question,answer\n")


def test_bom_and_crlf_input(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r) for r in ROWS).encode("utf-8"))
    assert main(["preview", str(src), str(tmp_path / "o.jsonl"), "--mode", "virtual", "--quiet"]) == 0
    assert read_records(tmp_path / "o.jsonl") == expected_virtual(ROWS)


def test_real_mode_formats_options(tmp_path, tokenizer, capsys):
    chat = [{"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "42"},
                          {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "Hi 😀 there"}]}]
    src = write_jsonl(tmp_path / "chat.jsonl", chat)
    out = tmp_path / "o.jsonl"
    assert main(["preview", str(src), str(out), "--mode", "real", "--m", "2", "--align", "word",
                 "--all-turns", "--quiet"]) == 0
    msgs = read_records(out)[0]["messages"]
    assert [m["content"] for m in msgs] == [f"Q1{C}42", "42", f"Q2{C}Hi 😀", "Hi 😀 there"]
    assert main(["preview", str(src), str(out), "--mode", "real", "--m", "0", "--connector", " => ",
                 "--format", "messages", "--quiet"]) == 0
    assert [m["content"] for m in read_records(out)[0]["messages"]] == ["Q1", "42", "Q2 => ", "Hi 😀 there"]


def test_missing_field_error_names_row_and_fields(tmp_path, capsys):
    rows = ROWS + [{"question": "q", "solution": "s", "id": 4}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["preview", str(src), str(out), "--mode", "virtual", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {src}:4: row 4: missing field 'answer'; fields present: question, solution, id"
    assert not out.exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"question": "q", "answer": 7}, "field 'answer' must be a string, found int"),
        ({"question": None, "answer": "a"}, "field 'question' must be a string, found NoneType"),
        ({"question": "q", "answer": ""}, "empty answer in field 'answer'"),
    ],
)
def test_invalid_rows_fail_unless_skipped(tmp_path, bad, message, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], bad, ROWS[1]])
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")
    assert main(["preview", str(src), str(out), "--mode", "virtual", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {src}:2: row 2: {message}"
    assert out.read_text(encoding="utf-8") == "old\n"
    assert main(["preview", str(src), str(out), "--mode", "virtual", "--skip-invalid", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "skipped rows: 1" in stdout and message in stdout
    assert read_records(out) == expected_virtual([ROWS[0], ROWS[1]])


def test_error_after_the_first_chunk_leaves_no_partial_file(tmp_path, capsys):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5000)] + [{"question": "q", "answer": ""}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["preview", str(src), str(out), "--mode", "virtual", "--quiet"]) == 2
    assert "in.jsonl:5001: row 5001: empty answer" in capsys.readouterr().err
    assert listing(tmp_path) == ["in.jsonl"]


def test_usage_errors(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    assert main(["preview", str(src), str(tmp_path / "o.xml"), "--mode", "virtual"]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert main(["preview", str(src), "--mode", "virtual"]) == 2
    assert "give INPUT and OUTPUT" in capsys.readouterr().err
    assert main(["preview", str(tmp_path / "nope.jsonl"), str(tmp_path / "o.jsonl"), "--mode", "virtual"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["preview", str(src), str(tmp_path / "o.jsonl"), "--mode", "real", "--tokenizer", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": "x"}])
    assert main(["preview", str(other), str(tmp_path / "o.jsonl"), "--mode", "virtual"]) == 2
    assert "fields present (text)" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_on_gsm8k_matches_reference_for_every_row(shared_data, tokenizer, tmp_path, capsys):
    src = shared_data / "gsm8k" / "train.jsonl"
    out = tmp_path / "gsm8k_real.jsonl"
    assert main(["preview", str(src), str(out), "--mode", "real", "--tokenizer", "smollm2-135m-instruct",
                 "--quiet"]) == 0
    rows = read_records(src)
    got = read_records(out)
    assert len(got) == len(rows) == 7473
    for row, new in zip(rows, got, strict=True):
        assert (new["question"], new["answer"]) == real_preview(row["question"], row["answer"], tokenizer, 6)
    assert got == preview_rows(rows, PreviewConfig(mode="real", tokenizer=tokenizer))


def test_a_dataset_folder_output_never_replaces_what_it_did_not_write(tmp_path, capsys):
    """An HF-dataset OUTPUT replaces its folder whole: refused when the folder holds the input, or holds
    anything but a saved dataset; an earlier dataset there is replaced (a rerun), a new folder made."""
    data = tmp_path / "d"
    data.mkdir()
    src = write_jsonl(data / "train.jsonl", ROWS)
    (data / "notes.txt").write_text("keep")
    before = listing(data)
    assert main(["preview", str(src), str(data), "--mode", "virtual", "--quiet"]) == 2
    assert "lies inside it" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["preview", str(src), str(other), "--mode", "virtual", "--quiet"]) == 2
    assert "not a saved Hugging Face dataset" in capsys.readouterr().err
    assert listing(data) == before and listing(other) == ["notes.txt"]

    fresh = tmp_path / "fresh"
    assert main(["preview", str(src), str(fresh), "--mode", "virtual", "--quiet"]) == 0
    assert main(["preview", str(src), str(fresh), "--mode", "virtual", "--prefix", "Z. ", "--quiet"]) == 0
    assert [r["answer"][:3] for r in read_records(fresh)] == ["Z. "] * len(ROWS)  # the prefix opens the answer
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["preview", str(src), str(empty), "--mode", "virtual", "--quiet"]) == 0


def test_sigterm_leaves_no_temporary_file(tmp_path):
    """SIGTERM (timeout, a scheduler, kill) runs the same clean-up as Ctrl-C: exit 143, no output, no
    temporary sibling (before, a killed preview left its half-written temporary file behind)."""
    import signal
    import time

    src = tmp_path / "big.jsonl"
    row = json.dumps({"prompt": "How many apples are there in the basket? " * 4, "completion": "There are 12."})
    src.write_text((row + "\n") * 300_000, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen([sys.executable, "-m", "lookahead_tuning", "preview", str(src), str(out), "--mode",
                             "virtual", "--quiet"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the preview finished before it could be interrupted; use a larger input"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip() == "terminated", err
    assert listing(tmp_path) == ["big.jsonl"]
