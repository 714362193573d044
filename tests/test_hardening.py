"""The pieces behind the hostile-input contract, one by one (the corpus in tests/badinput runs them
through the CLI): bounded one-line messages, URL redaction, output folders that clean up after a
failure, the overwrite check, the number ranges and the divergence check."""

from __future__ import annotations

import os

import pytest

from lookahead_tuning.errors import UserError, describe, one_line, shorten


def test_messages_are_one_bounded_line():
    err = UserError("bad value " + "x" * 10_000, path="/tmp/" + "d" * 500 + "/two\nlines.jsonl", line=3)
    text = err.render()
    assert len(text.splitlines()) == 1 and len(text) < 560
    assert "two\\nlines.jsonl:3:" in text and "…" in text
    assert one_line("a\u2028b\rc\x1b[2Jd\te") == "a\\u2028b\\rc\\x1b[2Jd\te"
    assert shorten("abcdefghij", 5) == "ab…ij"
    assert describe(10**5000) == "an integer of about 5001 digits"
    assert describe(list(range(1000))) == "a list of 1000 items"
    nested: list = []
    nested.append(nested)
    assert describe(nested) == "[[...]]"


def test_urls_lose_their_credentials_only():
    from lookahead_tuning.redact import redact_url, register, scrub, url_secrets

    assert redact_url("http://user:sk-abcdef@host:8000/v1?api_key=k123456&x=1") == \
        "http://host:8000/v1?api_key=***&x=1"
    plain = "HTTP://Judge.Example:8000/v1"
    assert redact_url(plain) == plain  # untouched, so fingerprints of configs without credentials stay
    assert "sk-abcdef" in url_secrets("http://user:sk-abcdef@host/v1")
    register("short")  # too short to mask without mangling ordinary text
    register("a-long-enough-secret")
    assert scrub("x a-long-enough-secret short") == "x *** short"


def test_a_failed_command_leaves_the_disk_as_it_was(tmp_path):
    from lookahead_tuning.io import has_content, output_folder

    new = tmp_path / "a" / "b" / "run"
    with pytest.raises(UserError), output_folder(new):
        (new / "config.yaml").write_text("x")
        raise UserError("a late check failed")
    assert list(tmp_path.iterdir()) == []  # the run folder and the two parents made for it are gone

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("kept")
    with pytest.raises(KeyboardInterrupt), output_folder(existing):
        (existing / "config.yaml").write_text("x")
        (existing / "work").mkdir()
        raise KeyboardInterrupt
    assert sorted(p.name for p in existing.iterdir()) == ["mine.txt"]

    durable = tmp_path / "durable"
    with pytest.raises(UserError), output_folder(durable, durable=lambda p: has_content(p / "log.jsonl")):
        (durable / "log.jsonl").write_text('{"id": 1}\n')
        (durable / "empty").mkdir()
        raise UserError("the judge failed after generation")
    assert (durable / "log.jsonl").is_file()  # resumable work stays


def test_overwrite_check_by_inode_and_resolved_path(tmp_path):
    from lookahead_tuning.io import refuse_overwrite

    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    os.link(data, tmp_path / "hard.jsonl")
    (tmp_path / "soft.jsonl").symlink_to(data)
    for spelling in (data, tmp_path / "." / "data.jsonl", tmp_path / "hard.jsonl", tmp_path / "soft.jsonl",
                     tmp_path / "sub" / ".." / "data.jsonl"):
        with pytest.raises(UserError, match="OUTPUT is the same file as INPUT"):
            refuse_overwrite([("OUTPUT", spelling)], [("INPUT", data)])
    refuse_overwrite([("OUTPUT", tmp_path / "other.jsonl")], [("INPUT", data), ("--x", None)])


def test_config_fields_and_flags_share_one_range():
    import argparse

    from lookahead_tuning.train.config import make_config
    from lookahead_tuning.validate import LEARNING_RATE, SEED

    base = {"model": "m", "data": "d", "out": "o"}
    assert make_config({**base, "lr": "5e-5", "epochs": 3}).lr == 5e-5  # YAML reads 5e-5 as a string
    for key, value, fragment in [("lr", float("inf"), "finite"), ("epochs", True, "True"),
                                 ("seed", -1, "from 0 to 4294967295"), ("m", 10**400, "about 401 digits"),
                                 ("batch_size", 1.5, "integer")]:
        with pytest.raises(UserError, match=f"key '{key}'.*{fragment}"):
            make_config({**base, key: value})
    with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number > 0 and <= 1"):
        LEARNING_RATE("nan")
    assert SEED("42") == 42


def test_diverged_weights_are_refused(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from lookahead_tuning.train.api import _check_finite
    from lookahead_tuning.train.config import make_config

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    cfg = make_config({"model": "m", "data": "d", "out": "o", "lr": 1.0})
    _check_finite(model, cfg)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(UserError, match="training diverged.*lower --lr"):
        _check_finite(model, cfg)


def test_text_prompts_split_on_newlines_only(tmp_path):
    from lookahead_tuning.generate.cli import read_prompts

    path = tmp_path / "p.txt"
    path.write_text("first\u2028still first\r\nsecond\n\n", encoding="utf-8")
    assert [r["prompt"] for r in read_prompts(path)] == ["first\u2028still first", "second"]


def test_tool_call_chats_train_with_the_preview_in_the_user_turn():
    from lookahead_tuning.data.formats import split_example
    from lookahead_tuning.train.config import make_config
    from lookahead_tuning.train.methods import apply_preview

    row = {"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": '{"city": "P"}'}}]},
        {"role": "tool", "tool_call_id": "c", "content": "20 C"},
        {"role": "assistant", "content": "It is 20 degrees."}]}
    prompt, completion = split_example(row)
    assert completion == "It is 20 degrees."
    assert [m["role"] for m in prompt] == ["user", "assistant", "tool"]
    assert prompt[1]["content"] == '<tool_call>{"name": "w", "arguments": {"city": "P"}}</tool_call>'
    cfg = make_config({"model": "m", "data": "d", "out": "o", "method": "lookahead-virtual"}).resolved()
    (example,) = apply_preview([{"prompt": prompt, "completion": completion}], cfg, tokenizer=None)
    assert example["prompt"][0]["content"].startswith("Weather in Paris?" + cfg.connector)
    assert example["prompt"][2]["content"] == "20 C"
