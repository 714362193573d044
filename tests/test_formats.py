"""Dataset formats: detection, the training view, preview slots and copy-on-write updates."""

from __future__ import annotations

import json
import re

import pytest

from lookahead_tuning.data.formats import (
    ExampleError,
    Slot,
    detect_format,
    get_text,
    preview_slots,
    resolve_format,
    set_texts,
    split_example,
)
from lookahead_tuning.errors import UserError

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ]
}
CONV = {
    "prompt": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
               {"role": "user", "content": "Q2"}],
    "completion": [{"role": "assistant", "content": "A2"}],
}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "p", "completion": "c"}, "prompt-completion"),
        (CONV, "conversational"),
        (CHAT, "messages"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"question": "q", "answer": "a"}, "fields"),
        ({"dialogue": "d", "summary": "s", "id": "7"}, "fields"),
    ],
)
def test_detect_format(row, expected):
    assert detect_format(row) == expected


def test_detect_format_errors_name_the_fields():
    with pytest.raises(ExampleError, match=r"fields present \(foo, bar\)"):
        detect_format({"foo": 1, "bar": 2})
    with pytest.raises(ExampleError, match="both be strings"):
        detect_format({"prompt": "p", "completion": [{"role": "assistant", "content": "c"}]})


def test_resolve_format_named_fields_and_override():
    assert resolve_format({"q": "x", "a": "y"}, "auto", "q", "a") == "fields"
    assert resolve_format({"prompt": "p", "completion": "c"}, "fields") == "fields"
    with pytest.raises(UserError, match="unknown dataset format"):
        resolve_format({}, "sharegpt")


def test_split_example_views():
    assert split_example({"prompt": "p", "completion": "c"}) == ([{"role": "user", "content": "p"}], "c")
    prompt, completion = split_example(CHAT)
    assert completion == "A2" and [m["content"] for m in prompt] == ["Be brief.", "Q1", "A1", "Q2"]
    prompt, completion = split_example(CONV)
    assert completion == "A2" and prompt[-1] == {"role": "user", "content": "Q2"}
    assert split_example({"instruction": "Do", "input": "this", "output": "ok"}) == (
        [{"role": "user", "content": "Do\n\nthis"}], "ok")
    assert split_example({"instruction": "Do", "input": "", "output": "ok"})[0][0]["content"] == "Do"
    assert split_example({"x": "in", "y": "out"}, input_field="x", output_field="y") == (
        [{"role": "user", "content": "in"}], "out")


def test_split_example_errors():
    with pytest.raises(ExampleError, match="missing field 'answer'; fields present: question"):
        split_example({"question": "q"}, "fields", "question", "answer")
    with pytest.raises(ExampleError, match="must be a string, found int"):
        split_example({"question": "q", "answer": 3})
    with pytest.raises(ExampleError, match="no assistant turn"):
        split_example({"messages": [{"role": "user", "content": "hi"}]})


def test_slots_for_chats_last_and_all_turns():
    assert preview_slots(CHAT, "messages") == [Slot(("messages", 3, "content"), ("messages", 4, "content"))]
    assert preview_slots(CHAT, "messages", all_turns=True) == [
        Slot(("messages", 1, "content"), ("messages", 2, "content")),
        Slot(("messages", 3, "content"), ("messages", 4, "content")),
    ]
    assert preview_slots(CONV, "conversational") == [Slot(("prompt", 2, "content"), ("completion", 0, "content"))]
    assert len(preview_slots(CONV, "conversational", all_turns=True)) == 2


def test_slots_for_alpaca_follow_the_visible_prompt():
    assert preview_slots({"instruction": "i", "input": "x", "output": "o"}, "alpaca") == [Slot(("input",), ("output",))]
    assert preview_slots({"instruction": "i", "input": " ", "output": "o"}, "alpaca") == [
        Slot(("instruction",), ("output",))]
    assert preview_slots({"instruction": "i", "output": "o"}, "alpaca") == [Slot(("instruction",), ("output",))]


def test_slot_errors():
    with pytest.raises(ExampleError, match="assistant turn 1 has no user turn"):
        preview_slots({"messages": [{"role": "assistant", "content": "a"}]}, "messages")
    with pytest.raises(ExampleError, match="missing field 'completion'; fields present: prompt"):
        preview_slots({"prompt": "p"}, "prompt-completion")
    with pytest.raises(ExampleError, match="cannot tell which fields"):
        preview_slots({"a": "x", "b": "y"}, "fields")


def test_get_and_set_texts_copy_on_write():
    new = set_texts(CHAT, {("messages", 3, "content"): "Q2!", ("messages", 4, "content"): "A2!"})
    assert new["messages"][3]["content"] == "Q2!" and new["messages"][4]["content"] == "A2!"
    assert CHAT["messages"][3]["content"] == "Q2" and CHAT["messages"][4]["content"] == "A2"
    assert new["messages"][0] is CHAT["messages"][0]  # untouched turns are shared, not copied
    with pytest.raises(ExampleError, match="'messages' turn 2 content must be a string"):
        get_text({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}]},
                 ("messages", 1, "content"))


@pytest.mark.parametrize("row, fragment", [
    ({"messages": [{"role": None, "content": "u"}, {"role": "assistant", "content": "a"}]}, "turn 1 has role None"),
    ({"messages": [{"role": 3, "content": "u"}, {"role": "assistant", "content": "a"}]}, "turn 1 has role 3"),
    ({"messages": [{"role": "robot", "content": "u"}, {"role": "assistant", "content": "a"}]}, "role 'robot'"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "robot", "content": "x"},
                   {"role": "user", "content": "v"}, {"role": "assistant", "content": "a"}]}, "turn 2 has role 'robot'"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "follows nothing"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}, "follows a 'system' turn"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "  "}]}, "empty answer"),
    ({"prompt": "p", "completion": ""}, "empty answer"),
    ({"instruction": "i", "output": " \n"}, "empty answer"),
])
def test_the_training_view_refuses_what_no_chat_template_can_train_on(row, fragment):
    """split_example is what `train` reads: an unknown role, an answer that follows no user turn, or an
    empty answer is the row's error (before, `train` failed later with no file or row, or trained on it)."""
    from lookahead_tuning.data.formats import ExampleError, split_example

    with pytest.raises(ExampleError, match=re.escape(fragment)):
        split_example(row)


def test_train_names_the_file_and_row_of_a_bad_chat(tmp_path, tiny_model_dir, capsys):
    from lookahead_tuning.cli import main

    data = tmp_path / "chats.jsonl"
    good = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    bad = {"messages": [{"role": None, "content": "u"}, {"role": "assistant", "content": "a"}]}
    data.write_text("\n".join(json.dumps(r) for r in (good, good, bad)) + "\n")
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--quiet", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{data}: row 3:" in err[0] and "role None" in err[0], err
    assert not (tmp_path / "run").exists()
