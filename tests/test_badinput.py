"""The bad-input corpus (tests/badinput/cases.yaml) through the real CLI.

Every bad case must give exit code 2, exactly one ``error: ...`` line on stderr naming the file, line or
key, no traceback, no new file next to its input, and an existing output left byte for byte as it was.
Every awkward-but-valid case must succeed and write the expected number of records.

The cases run in-process through :func:`lookahead_tuning.cli.main` (one interpreter start for the whole
corpus; stderr is captured at the file-descriptor level, so a stray warning or a progress bar written by
a library counts as output too). A few cases also run as real subprocesses, the way a user meets them,
and one checks that ``--debug`` shows the traceback the normal mode hides.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CORPUS = Path(__file__).resolve().parent / "badinput"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))["cases"]
SENTINEL = b'{"sentinel": "an earlier output that a failed run must not touch"}\n'
HUGE_BYTES = 10 * 1024 * 1024
PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+")  # a tqdm bar: "Loading weights: 100%|####| 20/20 [...]"


def _case_ids() -> list[str]:
    return [c["id"] for c in CASES]


def corpus_counts() -> tuple[int, int, int]:
    """(all cases, bad, valid): printed at the end of every pytest run that ran the corpus (conftest.py)."""
    bad = sum(1 for c in CASES if c.get("exit", 2) != 0)
    return len(CASES), bad, len(CASES) - bad


def test_corpus_is_complete():
    """Bad cases over every command, unique ids, every input file present."""
    ids = _case_ids()
    assert len(ids) == len(set(ids))
    bad = [c for c in CASES if c.get("exit", 2) == 2]
    assert len(bad) >= 130
    assert {c["args"][0] for c in bad} >= {"preview", "train", "eval", "run", "generate", "report", "demo"}
    assert {c["id"] for c in CASES if c.get("exit") == 0} >= {
        "valid-bom", "valid-crlf", "valid-no-final-newline", "valid-answers-shorter-than-m",
        "valid-json-array-in-jsonl", "valid-empty-input"}
    for case in CASES:
        if "input" in case:
            assert (CORPUS / case["input"]).is_file(), case["input"]
        assert set(case) <= {"id", "args", "input", "output", "existing_output", "expect", "exit", "rows",
                             "leaves", "input_name", "links", "server"}
    used = {c["input"] for c in CASES if "input" in c} | {"train/data.jsonl", "eval/prompts.jsonl",
                                                          "eval/metrics_ok.json"}
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file()} - {"cases.yaml", ".gitattributes"}
    assert on_disk <= used, f"corpus files no case uses: {sorted(on_disk - used)}"


# --------------------------------------------------------------------------- model folders the cases need


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """The tiny model, a copy whose tokenizer has no chat template, a copy with pickled weights only, a
    folder with only its config.json and one with the weights but no tokenizer files."""
    import torch
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("badinput-models")
    notemplate = root / "notemplate"
    shutil.copytree(tiny_model_dir, notemplate)
    (notemplate / "chat_template.jinja").unlink(missing_ok=True)
    config_path = notemplate / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config), encoding="utf-8")

    pickled = root / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()

    onlyconfig = root / "onlyconfig"
    onlyconfig.mkdir()
    shutil.copy(tiny_model_dir / "config.json", onlyconfig)
    notokenizer = root / "notokenizer"
    notokenizer.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (tiny_model_dir / name).is_file():
            shutil.copy(tiny_model_dir / name, notokenizer)
    return {"tiny": tiny_model_dir, "notemplate": notemplate, "pickled": pickled, "onlyconfig": onlyconfig,
            "notokenizer": notokenizer}


def _huge_line(path: Path) -> Path:
    """A 10 MB single line: one JSON object whose string never closes (generated, never committed)."""
    with open(path, "wb") as fh:
        fh.write(b'{"prompt": "' + b"x" * HUGE_BYTES)
    return path


# Hostile OpenAI-compatible servers a case may talk to ({server} in its arguments, `server: MODE`): the
# modes of tests/openai_stub.py, on the completions endpoint unless the mode ends in "-models".
_SERVERS: dict[str, object] = {}


def _server_url(mode: str) -> str:
    from openai_stub import CompletionsStub

    if mode not in _SERVERS:
        hostile, _, where = mode.partition("@")
        _SERVERS[mode] = CompletionsStub(hostile=hostile, hostile_on=(where or "completions",), hostile_seconds=10)
    return _SERVERS[mode].url


@pytest.fixture(scope="module", autouse=True)
def _stop_servers():
    yield
    while _SERVERS:
        _SERVERS.popitem()[1].close()


def _prepare(case: dict, folder: Path, models: dict[str, Path]) -> tuple[list[str], Path]:
    """Copy the case's input into ``folder`` and expand the placeholders of its arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / case.get("output", "out.jsonl")
    values = {"dir": str(folder), "out": str(out), "data": str(CORPUS / "train" / "data.jsonl"),
              "prompts": str(CORPUS / "eval" / "prompts.jsonl"), "bigint": "1" + "0" * 5000,
              **{k: str(v) for k, v in models.items()}}
    if "server" in case:
        values["server"] = _server_url(case["server"])
    if "input" in case:
        src = CORPUS / case["input"]
        name = case.get("input_name", src.name)
        values["in"] = str(shutil.copy(src, folder / name))
        values["inname"] = name
    if any("{huge}" in a for a in case["args"]):
        values["huge"] = str(_huge_line(folder / "huge.jsonl"))
    if any("{modelcopy}" in a for a in case["args"]):  # a model the case may try to overwrite: in its folder
        values["modelcopy"] = str(shutil.copytree(models["tiny"], folder / "model"))
    for name, target, kind in case.get("links", []):
        if kind == "symlink":
            (folder / name).symlink_to(target)
        elif kind in ("fifo", "socket"):  # made here: git cannot hold them
            from conftest import special_file

            (folder / name).unlink(missing_ok=True)  # a model copy's file the case replaces
            special_file(folder / name, kind)
        else:
            os.link(folder / target, folder / name)
    if case.get("existing_output"):
        out.write_bytes(SENTINEL)
    return [a.format(**values) for a in case["args"]], out


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with its content hash: a file rewritten in place counts as changed."""
    import hashlib

    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        else:
            out[str(p.relative_to(folder))] = "symlink" if p.is_symlink() else "folder"
    return out


def _count_records(path: Path) -> int:
    from lookahead_tuning.io import read_records

    return len(read_records(path))


def check_result(case: dict, rc: int, stderr: str, folder: Path, out: Path, before: dict[str, str]) -> None:
    """The promises of the corpus (see the module docstring) for one finished case."""
    want = case.get("exit", 2)
    assert rc == want, f"{case['id']}: exit {rc}, wanted {want}; stderr:\n{stderr[-3000:]}"
    if want == 0:
        assert out.exists(), f"{case['id']}: no output written"
        if "rows" in case:
            assert _count_records(out) == case["rows"]
        assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"
        return
    # A progress bar (transformers shows one while loading weights) is not an error line.
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert "Traceback" not in stderr, f"{case['id']}: traceback without --debug:\n{stderr[-3000:]}"
    assert len(lines) == 1, f"{case['id']}: expected one line on stderr, got:\n{stderr[-3000:]}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert len(line) < 1000, f"{case['id']}: the error line is {len(line)} characters long"
    for fragment in case.get("expect", []):
        assert fragment in line, f"{case['id']}: {fragment!r} not in {line!r}"
    if case.get("existing_output"):
        assert out.read_bytes() == SENTINEL, f"{case['id']}: the existing output was changed"
    after = {k: v for k, v in _snapshot(folder).items() if k not in case.get("leaves", [])}
    assert after == before, f"{case['id']}: files appeared or changed: {after} vs {before}"


# --------------------------------------------------------------------------- in-process: every case


@pytest.mark.parametrize("case", CASES, ids=_case_ids())
def test_case_in_process(case, tmp_path, model_dirs, capfd, monkeypatch):
    from lookahead_tuning.cli import main

    monkeypatch.delenv("LOOKAHEAD_TUNING_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # a relative path in a config must not land in the checkout
    folder = tmp_path / "case"
    argv, out = _prepare(case, folder, model_dirs)
    before = _snapshot(folder)
    capfd.readouterr()
    rc = main(argv)
    captured = capfd.readouterr()
    check_result(case, rc, captured.err, folder, out, before)
    assert [p.name for p in tmp_path.iterdir()] == ["case"], "files written outside the case folder"


# --------------------------------------------------------------------------- real subprocesses


SUBPROCESS_CASES = ["preview-truncated-jsonl", "train-config-unknown-key", "eval-prompts-missing-instruction",
                    "run-task-name-escapes-output", "valid-bom"]

# Runs several cases in one fresh interpreter (start-up costs seconds on a loaded machine) and reports
# each one's exit code and stderr, captured at the file-descriptor level like a terminal would see it.
DRIVER = r"""
import json, os, sys, tempfile
from lookahead_tuning.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    with tempfile.TemporaryFile() as err:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        results.append({"rc": rc, "stderr": err.read().decode("utf-8", "replace")})
print(json.dumps(results))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LOOKAHEAD_TUNING_DEBUG"}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_cases_in_a_fresh_interpreter(tmp_path, model_dirs):
    """A handful of cases in a real, separate Python process (no state shared with the test run)."""
    cases = [c for c in CASES if c["id"] in SUBPROCESS_CASES]
    prepared = []
    for case in cases:
        folder = tmp_path / case["id"]
        argv, out = _prepare(case, folder, model_dirs)
        prepared.append((case, folder, out, _snapshot(folder), argv))
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([p[4] for p in prepared])], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (case, folder, out, before, _), result in zip(prepared, results, strict=True):
        check_result(case, result["rc"], result["stderr"], folder, out, before)


def test_the_console_script_and_debug(tmp_path, model_dirs):
    """``python -m lookahead_tuning`` exits 2 with one line; ``--debug`` shows the traceback instead."""
    case = next(c for c in CASES if c["id"] == "preview-truncated-jsonl")
    argv, out = _prepare(case, tmp_path, model_dirs)
    before = _snapshot(tmp_path)
    plain = subprocess.run([sys.executable, "-m", "lookahead_tuning", *argv], env=_env(), capture_output=True,
                           text=True, timeout=300)
    check_result(case, plain.returncode, plain.stderr, tmp_path, out, before)
    debug = subprocess.run([sys.executable, "-m", "lookahead_tuning", "--debug", *argv], env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "UserError" in debug.stderr
    assert out.read_bytes() == SENTINEL
