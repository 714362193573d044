"""``lookahead-tuning generate`` end to end: prompt-file formats, prefills, resume after SIGKILL, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lookahead_tuning.cli import main
from lookahead_tuning.generate.cli import read_prompts

CMD = [sys.executable, "-m", "lookahead_tuning", "generate"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # see the one_torch_thread fixture


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(args, **kwargs):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, timeout=300, env=ENV, **kwargs)


@pytest.fixture
def prompt_files(tmp_path):
    hexphi = tmp_path / "hexphi.jsonl"
    hexphi.write_text("\n".join(json.dumps({"id": f"h{i}", "instruction": f"Question {i}?", "category": "c"})
                                for i in range(3)) + "\n")
    trl = tmp_path / "trl.jsonl"
    trl.write_text(json.dumps({"prompt": "Plain prompt"}) + "\n"
                   + json.dumps({"prompt": [{"role": "user", "content": "As messages"}]}) + "\n")
    txt = tmp_path / "prompts.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    return {"hexphi": hexphi, "trl": trl, "txt": txt}


def test_read_prompts_each_format(prompt_files):
    hexphi = read_prompts(prompt_files["hexphi"])
    assert [r["id"] for r in hexphi] == ["h0", "h1", "h2"] and hexphi[0]["category"] == "c"
    assert hexphi[1]["prompt"] == "Question 1?"
    trl = read_prompts(prompt_files["trl"])
    assert [r["id"] for r in trl] == ["0", "1"]
    assert trl[1]["prompt"] == [{"role": "user", "content": "As messages"}]
    assert read_prompts(prompt_files["txt"]) == [{"id": "0", "prompt": "first prompt"},
                                                 {"id": "1", "prompt": "second prompt"}]


@pytest.mark.parametrize("fmt", ["hexphi", "trl", "txt"])
def test_cli_subprocess_each_format_and_rerun_adds_nothing(tiny_model_dir, prompt_files, tmp_path, fmt):
    out = tmp_path / "out.jsonl"
    args = ["--model", tiny_model_dir, "--prompts", prompt_files[fmt], "--out", out, "--max-new-tokens", 3]
    proc = _run(args)
    assert proc.returncode == 0, proc.stderr
    rows = read_prompts(prompt_files[fmt])
    got = _lines(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]  # one batch, written in input order
    assert all(r["completion_tokens"] == 3 and isinstance(r["completion"], str) for r in got)
    assert f"{len(rows)} new answers, 0 already there" in proc.stdout
    if fmt == "txt":  # resume: the second run answers nothing and appends nothing
        before = out.read_bytes()
        again = _run(args)
        assert again.returncode == 0 and f"0 new answers, {len(rows)} already there" in again.stdout
        assert out.read_bytes() == before


def test_cli_resumes_after_sigkill(tiny_model_dir, tmp_path, tiny_answers_reference):
    prompts = tmp_path / "many.txt"
    prompts.write_text("".join(f"Prompt number {i} asks something.\n" for i in range(40)))
    out = tmp_path / "out.jsonl"
    args = ["--model", tiny_model_dir, "--prompts", prompts, "--out", out, "--max-new-tokens", 48,
            "--batch-size", 2, "--quiet"]
    proc = subprocess.Popen(CMD + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=ENV)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "generation finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = out.read_bytes().count(b"\n")
    assert 2 <= partial < 40
    finished = _run(args)
    assert finished.returncode == 0, finished.stderr
    got = _lines(out)
    assert sorted(r["id"] for r in got) == sorted(str(i) for i in range(40))  # no duplicate, none lost
    reference = tiny_answers_reference(read_prompts(prompts), 48)
    assert {r["id"]: r["completion"] for r in got} == {r["id"]: r["completion"] for r in reference}


@pytest.fixture
def tiny_answers_reference(tiny_model_dir):
    def answer(rows, n):
        from lookahead_tuning.generate import generate
        from lookahead_tuning.models import load_model

        model, tok = load_model(tiny_model_dir)
        return generate(model, tok, rows, max_new_tokens=n, progress=False)

    return answer


def test_cli_prefill_file(tiny_model_dir, prompt_files, tmp_path, tiny_answers_reference, tokenizer):
    chats = tmp_path / "answers.jsonl"
    chats.write_text("".join(json.dumps([{"role": "user", "content": f"Question {i}?"},
                                         {"role": "assistant", "content": f"Sure, step {i} is to begin now."}]) + "\n"
                             for i in range(3)))
    out = tmp_path / "out.jsonl"
    code = main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompt_files["hexphi"]),
                 "--out", str(out), "--prefill-file", str(chats), "--prefill-tokens", "3",
                 "--max-new-tokens", "4", "--quiet"])
    assert code == 0
    got = _lines(out)
    assert [r["prefill"] for r in got] == ["Sure, step"] * 3  # "Sure" "," " step"
    rows = [{**r, "prefill": p} for r, p in zip(read_prompts(prompt_files["hexphi"]),
                                                 [g["prefill"] for g in got], strict=True)]
    assert [g["completion"] for g in got] == [r["completion"] for r in tiny_answers_reference(rows, 4)]


def test_cli_errors_are_one_line_exit_2(tiny_model_dir, prompt_files, tmp_path, capsys):
    base = ["generate", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o.jsonl")]
    assert main(base + ["--prompts", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "ok"}) + "\n" + json.dumps({"question": "no prompt"}) + "\n")
    assert main(base + ["--prompts", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl:2:" in err and "'instruction' or 'prompt'" in err
    chats = tmp_path / "answers.jsonl"
    chats.write_text(json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) + "\n")
    assert main(base + ["--prompts", str(prompt_files["hexphi"]), "--prefill-file", str(chats),
                        "--prefill-tokens", "3"]) == 2
    assert "aligned by row" in capsys.readouterr().err
    assert main(base + ["--prompts", str(prompt_files["txt"]), "--prefill-tokens", "3"]) == 2
    assert main(["generate", "--model", "nope-model", "--prompts", str(prompt_files["txt"]),
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "unknown model 'nope-model'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL_CHAT = [{"role": "system", "content": "You can call tools."},
             {"role": "user", "content": "What is the weather in Paris?"},
             {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
             {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 20}'}]


def test_openai_tool_call_prompts_are_answered(tiny_model_dir, tmp_path, capsys):
    """Issue 30, class 10: an OpenAI tool-use conversation (an assistant turn with ``tool_calls`` and
    content null, a ``tool`` turn) is a valid prompt, as ``prompt`` or as a chat request's ``messages``,
    ending at the tool result or at a later user turn. The calls are the text training renders (so the
    model is asked what it was trained on); ``generate`` used to refuse every such row."""
    from lookahead_tuning.data.formats import split_example

    follow_up = [*TOOL_CHAT, {"role": "assistant", "content": "It is 20 C."}, {"role": "user", "content": "And tomorrow?"}]
    prompts = tmp_path / "tools.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in (
        {"id": "after-result", "prompt": TOOL_CHAT},
        {"id": "request", "messages": follow_up, "tools": [{"type": "function", "function": {"name": "get_weather"}}]},
        {"id": "function-role", "prompt": [TOOL_CHAT[1], {"role": "assistant", "content": None,
                                                          "function_call": TOOL_CALL["function"]},
                                           {"role": "function", "name": "get_weather", "content": "20"}]},
    )))
    rows = read_prompts(prompts)
    trained, _ = split_example({"messages": [*TOOL_CHAT, {"role": "assistant", "content": "It is 20 C."}]})
    assert rows[0]["prompt"] == trained  # the same text as the training view of that conversation
    assert rows[0]["prompt"][2] == {"role": "assistant", "content":
                                    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'}
    assert [m["role"] for m in rows[1]["prompt"]] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert "messages" not in rows[1] and rows[1]["tools"]  # the prompt is not copied twice; other fields kept
    assert [m["role"] for m in rows[2]["prompt"]] == ["user", "assistant", "tool"]
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "2", "--quiet"]) == 0, capsys.readouterr().err
    assert sorted(r["id"] for r in _lines(out)) == ["after-result", "function-role", "request"]

    # Still refused, one line each: a conversation that ends where nobody asked anything, a bad call.
    for row, needle in (({"prompt": TOOL_CHAT[:3]}, "must end with a user message or a tool result"),
                        ({"messages": [*TOOL_CHAT, {"role": "assistant", "content": "done"}]}, "not a 'assistant' turn"),
                        ({"prompt": [TOOL_CHAT[1], {"role": "assistant", "content": None, "tool_calls": "x"},
                                     TOOL_CHAT[3]]}, "'tool_calls' must be a list"),
                        ({"prompt": [{"role": "user", "content": 5}]}, "content must be a string")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(row) + "\n")
        assert main(["generate", "--model", str(tiny_model_dir), "--prompts", str(bad), "--out",
                     str(tmp_path / "bad-out.jsonl"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "bad.jsonl:1: row 1:" in err and needle in err, err
        assert not (tmp_path / "bad-out.jsonl").exists()
