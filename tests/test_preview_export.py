"""``preview --export``: LLaMA-Factory (Alpaca / ShareGPT + dataset_info.json) and axolotl (chat_template).

Each export is read back the way its trainer documents it: the dataset loaded with ``datasets`` (both
trainers load JSON through it) and every field found through the names the registering config gives
(LLaMA-Factory's ``columns``/``tags``, axolotl's ``field_messages``/``message_property_mappings``/
``message_field_training``), never by our own field names.
"""

from __future__ import annotations

import json

import pytest
import yaml

from lookahead_tuning.cli import main
from lookahead_tuning.preview import DEFAULT_CONNECTOR, DEFAULT_PREFIX

SINGLE = [{"prompt": f"What is {a} + {b}?", "completion": f"{a} + {b} = {a + b}.\n#### {a + b}"}
          for a, b in [(2, 3), (4, 1), (7, 5)]]
CHATS = [{"messages": [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                       {"role": "user", "content": f"What is {a} + {b}?"},
                       {"role": "assistant", "content": f"It is {a + b}."}]} for a, b in [(1, 1), (2, 5)]]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(path):
    from datasets import load_dataset

    return list(load_dataset("json", data_files=str(path), split="train"))


def _llama_factory_view(folder, name):
    """(system, [(role, text), ...]) per row, read through dataset_info.json as LLaMA-Factory does."""
    info = json.loads((folder / "dataset_info.json").read_text())[name]
    rows = _load(folder / info["file_name"])
    cols = info["columns"]
    out = []
    if info["formatting"] == "alpaca":
        for r in rows:
            prompt = r[cols["prompt"]] + ("\n" + r[cols["query"]] if r.get(cols["query"]) else "")
            out.append((r.get(cols["system"]), [("user", prompt), ("assistant", r[cols["response"]])]))
    else:
        tags = info["tags"]
        roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant"}
        for r in rows:
            turns = [(roles[t[tags["role_tag"]]], t[tags["content_tag"]]) for t in r[cols["messages"]]]
            out.append((r.get(cols["system"]), turns))
    return info["formatting"], out


def test_llama_factory_alpaca_export_of_the_virtual_preview(tmp_path, capsys):
    src = _write(tmp_path / "train.jsonl", SINGLE)
    out = tmp_path / "lf" / "math_virtual.json"
    out.parent.mkdir()
    (out.parent / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "other.json"}}))
    assert main(["preview", str(src), str(out), "--mode", "virtual", "--export", "llama-factory", "--quiet"]) == 0
    formatting, rows = _llama_factory_view(out.parent, "math_virtual")
    assert formatting == "alpaca"
    for src_row, (system, turns) in zip(SINGLE, rows, strict=True):
        assert system is None
        assert turns == [("user", src_row["prompt"] + DEFAULT_CONNECTOR + DEFAULT_PREFIX),
                         ("assistant", DEFAULT_PREFIX + src_row["completion"])]
    info = json.loads((out.parent / "dataset_info.json").read_text())
    assert info["other"] == {"file_name": "other.json"}  # existing entries are kept
    assert "LLaMA-Factory: Alpaca rows" in capsys.readouterr().out


def test_llama_factory_sharegpt_export_keeps_the_chat(tmp_path, tokenizer):
    from lookahead_tuning.preview import first_answer_tokens

    src = _write(tmp_path / "chats.jsonl", CHATS)
    out = tmp_path / "chats_real.jsonl"
    assert main(["preview", str(src), str(out), "--mode", "real", "--m", "2", "--export", "llama-factory",
                 "--quiet"]) == 0
    formatting, rows = _llama_factory_view(tmp_path, "chats_real")
    assert formatting == "sharegpt"
    for chat, (system, turns) in zip(CHATS, rows, strict=True):
        m = chat["messages"]
        assert system == "Be brief."
        preview = first_answer_tokens(m[4]["content"], tokenizer, 2)
        assert turns == [("user", "Hi"), ("assistant", "Hello!"),
                         ("user", m[3]["content"] + DEFAULT_CONNECTOR + preview), ("assistant", m[4]["content"])]


def test_axolotl_export_trains_only_the_last_answer(tmp_path):
    src = _write(tmp_path / "chats.jsonl", CHATS)
    out = tmp_path / "ax.jsonl"
    assert main(["preview", str(src), str(out), "--mode", "virtual", "--export", "axolotl", "--quiet"]) == 0
    config = yaml.safe_load((tmp_path / "ax.axolotl.yaml").read_text())
    ds = config["datasets"][0]
    assert ds["type"] == "chat_template" and ds["ds_type"] == "json"
    rows = _load(ds["path"])
    role, content = ds["message_property_mappings"]["role"], ds["message_property_mappings"]["content"]
    for chat, row in zip(CHATS, rows, strict=True):
        messages = row[ds["field_messages"]]
        trained = [m[content] for m in messages if m[ds["message_field_training"]]]
        assert trained == [DEFAULT_PREFIX + chat["messages"][4]["content"]]
        assert [m[role] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
        assert messages[3][content].endswith(DEFAULT_CONNECTOR + DEFAULT_PREFIX)


def test_export_errors_leave_nothing_behind(tmp_path, capsys):
    src = _write(tmp_path / "train.jsonl", SINGLE)
    code = main(["preview", str(src), str(tmp_path / "out.csv"), "--mode", "virtual", "--export", "axolotl"])
    assert code == 2 and "give OUTPUT a .json or .jsonl name" in capsys.readouterr().err
    (tmp_path / "dataset_info.json").write_text("{not json")
    code = main(["preview", str(src), str(tmp_path / "out.json"), "--mode", "virtual", "--export", "llama-factory"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "dataset_info.json cannot be merged: invalid JSON" in err, err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("target, make, fragment", [
    ("llama-factory", lambda d: (d / "dataset_info.json").mkdir(), "it is not a file"),
    ("axolotl", lambda d: (d / "out.axolotl.yaml").mkdir(), "it is not a file"),
    ("llama-factory", lambda d: (d / "dataset_info.json").write_text("[" * 100_000 + "]" * 100_000),
     "dataset_info.json"),
    ("llama-factory", lambda d: (d / "dataset_info.json").write_text('{"a": NaN}'), "dataset_info.json"),
])
def test_a_registering_file_that_cannot_be_written_fails_before_any_row(tmp_path, capsys, target, make, fragment):
    """The file that registers the export is checked before the rows are written: no OUTPUT is left
    beside a registration that failed (before, OUTPUT was written first)."""
    src = _write(tmp_path / "train.jsonl", SINGLE)
    make(tmp_path)
    code = main(["preview", str(src), str(tmp_path / "out.json"), "--mode", "virtual", "--export", target])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "out.json").exists()


def test_output_cannot_be_the_registering_file(tmp_path, capsys):
    src = _write(tmp_path / "train.jsonl", SINGLE)
    out = tmp_path / "dataset_info.json"
    code = main(["preview", str(src), str(out), "--mode", "virtual", "--export", "llama-factory"])
    assert code == 2 and "registers the export" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("turns", [[{"role": "tool", "content": "x"}], []])
def test_unsupported_turns_are_one_line_errors(tmp_path, capsys, turns):
    chat = {"messages": [{"role": "user", "content": "a"}, *turns,
                         {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}
    src = _write(tmp_path / "c.jsonl", [chat])
    code = main(["preview", str(src), str(tmp_path / "o.json"), "--mode", "virtual", "--export", "llama-factory"])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o.json").exists()
