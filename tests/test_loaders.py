"""Loaders for the real formats (HEx-PHI, harmful answers, GSM8K, SAMSum) and load_task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookahead_tuning.data import builtin
from lookahead_tuning.data.loaders import load_gsm8k, load_harmful_answers, load_hexphi, load_samsum
from lookahead_tuning.data.tasks import SAMSUM_PROMPT, load_task
from lookahead_tuning.errors import UserError

GSM = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "Weng earns $12 an hour. How much for 2 hours?", "answer": "12 * 2 = <<12*2=24>>24\n#### 24"},
]
SAMSUM = [
    {"id": f"d{i}", "dialogue": f"Amy: hi {i}\r\nBob: hello", "summary": f"Amy greets Bob {i}."} for i in range(40)
]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- HEx-PHI

def test_load_hexphi_roundtrips_builtin(tmp_path):
    rows = builtin.harmful_eval_set()
    loaded = load_hexphi(_jsonl(tmp_path / "eval.jsonl", rows))
    assert loaded == rows


def test_load_hexphi_defaults_and_errors(tmp_path):
    rows = load_hexphi(_jsonl(tmp_path / "a.jsonl", [{"instruction": "x"}, {"instruction": "y", "category": "c"}]))
    assert rows == [{"id": "0", "instruction": "x", "category": "uncategorized"},
                    {"id": "1", "instruction": "y", "category": "c"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n\n{"prompt": "no instruction"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl:3: .*'instruction'.*prompt"):
        load_hexphi(bad)
    with pytest.raises(UserError, match="duplicate id"):
        load_hexphi(_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "instruction": "a"}, {"id": "1", "instruction": "b"}]))
    with pytest.raises(UserError, match="no such file"):
        load_hexphi(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- harmful answers

def test_load_harmful_answers_forms(tmp_path):
    chats = builtin.harmful_answers()
    assert load_harmful_answers(_jsonl(tmp_path / "a.jsonl", chats)) == chats
    assert load_harmful_answers(_jsonl(tmp_path / "m.jsonl", [{"messages": c} for c in chats[:3]])) == chats[:3]
    array = tmp_path / "arr.json"
    array.write_text(json.dumps(chats[:5], indent=2), encoding="utf-8")
    assert load_harmful_answers(array) == chats[:5]
    single = _jsonl(tmp_path / "one.jsonl", chats[:1])  # one line is also one JSON array
    assert load_harmful_answers(single) == chats[:1]


def test_load_harmful_answers_errors(tmp_path):
    chat = builtin.harmful_answers()[0]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(chat) + "\n[{\"role\": \n", encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.jsonl:2: invalid JSON"):
        load_harmful_answers(broken)
    with pytest.raises(UserError, match=r"no_answer\.jsonl:2: .*ends with an assistant turn"):
        load_harmful_answers(_jsonl(tmp_path / "no_answer.jsonl", [chat, chat[:1], chat]))
    with pytest.raises(UserError, match="no such file"):
        load_harmful_answers(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------- GSM8K

def test_load_gsm8k_strips_calculator(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", GSM)
    rows = load_gsm8k(path)
    assert rows[0]["answer"] == "In May she sold 48/2 = 24 clips.\nIn all 48+24 = 72 clips.\n#### 72"
    assert load_gsm8k(path, keep_calculator=True)[0]["answer"] == GSM[0]["answer"]
    assert [r["id"] for r in rows] == ["train-1", "train-2"]


def test_load_gsm8k_folder_and_errors(tmp_path):
    _jsonl(tmp_path / "train.jsonl", GSM)
    _jsonl(tmp_path / "test.jsonl", GSM[:1])
    assert len(load_gsm8k(tmp_path, split="train")) == 2
    assert len(load_gsm8k(tmp_path)) == 1  # test split by default
    (tmp_path / "test.jsonl").unlink()
    with pytest.raises(UserError, match="no test.jsonl"):
        load_gsm8k(tmp_path)
    bad = _jsonl(tmp_path / "bad.jsonl", [GSM[0], {"question": "q", "answer": "no final"}])
    with pytest.raises(UserError, match=r"bad\.jsonl:2: .*####"):
        load_gsm8k(bad)


# --------------------------------------------------------------------------- SAMSum

def test_load_samsum_array_and_folder_split(tmp_path):
    (tmp_path / "test.json").write_text(json.dumps(SAMSUM), encoding="utf-8")
    rows = load_samsum(tmp_path / "test.json")
    assert len(rows) == 40 and rows[0] == {"id": "d0", "dialogue": "Amy: hi 0\nBob: hello", "summary": "Amy greets Bob 0."}
    train, test = load_samsum(tmp_path, split="train"), load_samsum(tmp_path, split="test")
    assert train and test and len(train) + len(test) == 40
    assert not {r["id"] for r in train} & {r["id"] for r in test}


def test_load_samsum_errors(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([SAMSUM[0], {"id": 9, "dialogue": "x"}]), encoding="utf-8")
    with pytest.raises(UserError, match=r"row 2: .*'summary'"):
        load_samsum(path)
    with pytest.raises(UserError, match="no train.json"):
        (tmp_path / "only").mkdir()
        load_samsum(tmp_path / "only", split="train")


# --------------------------------------------------------------------------- load_task

def test_load_task_math():
    rows = load_task("math", n=20, seed=3)
    assert len(rows) == 20 and rows[0]["id"] == "math-train-0"
    assert rows[0]["completion"].endswith("#### " + rows[0]["ground_truth"])
    test = load_task("math", n=200, split="test")
    assert not {r["prompt"] for r in load_task("math", n=500)} & {r["prompt"] for r in test}
    hard = load_task("math:hard", n=5)
    assert all(r["completion"].count("\n") == 3 for r in hard)
    with pytest.raises(UserError, match="unknown math level"):
        load_task("math:nope", n=2)


def test_load_task_files(tmp_path):
    gsm_dir = tmp_path / "gsm"
    gsm_dir.mkdir()
    _jsonl(gsm_dir / "train.jsonl", GSM)
    _jsonl(gsm_dir / "test.jsonl", GSM[1:])
    rows = load_task(f"gsm8k:{gsm_dir}")
    assert rows[0]["prompt"] == GSM[0]["question"] and rows[0]["ground_truth"] == "72"
    assert "<<" not in rows[0]["completion"]
    assert load_task(gsm_dir, split="test")[0]["ground_truth"] == "24"  # task told from the fields
    sam = tmp_path / "sam.json"
    sam.write_text(json.dumps(SAMSUM), encoding="utf-8")
    rows = load_task(sam, n=5, seed=1)
    assert len(rows) == 5 and rows == load_task(f"samsum:{sam}", n=5, seed=1)
    assert rows[0]["prompt"].startswith(SAMSUM_PROMPT) and rows[0]["completion"] == rows[0]["ground_truth"]
    assert rows != load_task(sam, n=5, seed=2)


def test_load_task_errors(tmp_path):
    with pytest.raises(UserError, match="gsm8k:PATH"):
        load_task("gsm8k")
    with pytest.raises(UserError, match="no such file"):
        load_task(tmp_path / "absent.jsonl")
    other = _jsonl(tmp_path / "other.jsonl", [{"text": "hello"}])
    with pytest.raises(UserError, match="cannot tell the task"):
        load_task(other)
    with pytest.raises(UserError, match="unknown split"):
        load_task("math", split="dev")


# --------------------------------------------------------------------------- real data

def test_real_gsm8k_and_samsum(shared_data):
    train = load_gsm8k(shared_data / "gsm8k", split="train")
    assert len(train) == 7473 and not any("<<" in r["answer"] for r in train)
    assert len(load_gsm8k(shared_data / "gsm8k" / "test.jsonl")) == 1319
    assert len(load_samsum(shared_data / "samsum" / "test.json")) == 819
    rows = load_task(f"samsum:{shared_data / 'samsum'}", split="train", n=10)
    test_ids = {r["id"] for r in load_task(shared_data / "samsum", split="test")}
    assert len(rows) == 10 and not {r["id"] for r in rows} & test_ids
