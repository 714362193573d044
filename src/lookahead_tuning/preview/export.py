"""Previewed data in the shapes other trainers read: LLaMA-Factory and axolotl.

A user who trains with LLaMA-Factory or axolotl still wants the LookAhead transform; ``preview --export``
writes the previewed rows in that trainer's dataset format plus the small config that registers them:

- ``llama-factory``: single-turn formats become **Alpaca** rows (``instruction``, ``input``, ``output``,
  ``system``), chats (``messages``, conversational) become **ShareGPT** rows (``conversations`` of
  ``{"from": "human"|"gpt", "value"}``, ``system``); ``dataset_info.json`` beside the file gets an
  entry named after the file (its other entries are kept).
- ``axolotl``: ``{"messages": [{"role", "content", "training"}]}`` rows and ``<name>.axolotl.yaml``, a
  ``datasets:`` block of ``type: chat_template`` (the model's own template, as training here uses)
  where only the last assistant turn is trained — the turn the preview was made for.

The training view is the one this package trains on (:func:`lookahead_tuning.data.formats.split_example`):
everything before the last assistant turn is the prompt, that turn is the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..data.formats import split_example
from ..errors import UserError

EXPORTS = ("llama-factory", "axolotl")
CHAT_FORMATS = ("messages", "conversational")
_SHAREGPT_ROLE = {"user": "human", "assistant": "gpt"}

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}


def _conversation(row: Mapping[str, Any], fmt: str, input_field: str | None,
                  output_field: str | None) -> tuple[str | None, list[dict[str, str]]]:
    """(system prompt, turns ending with the trained assistant answer) of one previewed row."""
    prompt, answer = split_example(row, fmt, input_field, output_field)
    system = None
    if prompt and prompt[0]["role"] == "system":
        system, prompt = prompt[0]["content"], prompt[1:]
    roles = [m["role"] for m in prompt]
    if any(r not in ("user", "assistant") for r in roles):
        bad = next(r for r in roles if r not in ("user", "assistant"))
        raise UserError(f"a '{bad}' turn cannot be exported (only one leading system turn, then user and "
                        "assistant turns)")
    return system, [*prompt, {"role": "assistant", "content": answer}]


def alpaca_row(system: str | None, turns: list[dict[str, str]]) -> dict[str, Any]:
    if len(turns) != 2 or turns[0]["role"] != "user":
        raise UserError("an Alpaca row holds one user turn and its answer; export chats as ShareGPT")
    row = {"instruction": turns[0]["content"], "input": "", "output": turns[1]["content"]}
    return {**row, "system": system} if system else row


def sharegpt_row(system: str | None, turns: list[dict[str, str]]) -> dict[str, Any]:
    # LLaMA-Factory's ShareGPT reader wants human at odd positions and gpt at even ones.
    for i, turn in enumerate(turns):
        if turn["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise UserError("LLaMA-Factory's ShareGPT format needs turns alternating user, assistant, ... "
                            f"(turn {i + 1} is '{turn['role']}')")
    row: dict[str, Any] = {"conversations": [{"from": _SHAREGPT_ROLE[t["role"]], "value": t["content"]}
                                             for t in turns]}
    return {**row, "system": system} if system else row


def axolotl_row(system: str | None, turns: list[dict[str, str]]) -> dict[str, Any]:
    last = len(turns) - 1
    messages = [{"role": "system", "content": system, "training": False}] if system else []
    messages += [{"role": t["role"], "content": t["content"], "training": i == last} for i, t in enumerate(turns)]
    return {"messages": messages}


def export_rows(rows: Iterable[Mapping[str, Any]], target: str, config: Any, *,
                start: int = 1) -> Iterator[dict[str, Any]]:
    """The previewed ``rows`` in ``target``'s shape; ``config`` is the :class:`PreviewConfig` that made
    them (its format is resolved once the first chunk is previewed); ``start``: the first row's number."""
    for k, row in enumerate(rows, start=start):
        try:
            system, turns = _conversation(row, config.fmt, config.input_field, config.output_field)
            if target == "axolotl":
                yield axolotl_row(system, turns)
            elif config.fmt in CHAT_FORMATS:
                yield sharegpt_row(system, turns)
            else:
                yield alpaca_row(system, turns)
        except UserError as exc:
            raise UserError(f"row {k} (after the preview): {exc.message}") from None


def check_export_path(output_path: str, target: str) -> None:
    """Fail before any row is written: an unknown target, a non-JSON output, a broken dataset_info.json."""
    if target not in EXPORTS:
        raise UserError(f"unknown export '{target}'; expected one of {', '.join(EXPORTS)}")
    if Path(output_path).suffix.lower() not in (".json", ".jsonl"):
        raise UserError(f"--export {target} writes JSON rows; give OUTPUT a .json or .jsonl name", path=output_path)
    register = export_config_path(output_path, target)
    if Path(output_path).name == register.name:
        raise UserError(f"OUTPUT would be the file that registers the export ({register.name}); give the rows "
                        "another name", path=output_path)
    if register.exists() and not register.is_file():
        raise UserError(f"is where --export {target} registers OUTPUT, and it is not a file", path=str(register))
    if target == "llama-factory":
        _read_info(register)


def export_config_path(output_path: str, target: str) -> Path:
    """The file that registers the export beside OUTPUT: ``dataset_info.json`` or ``<stem>.axolotl.yaml``."""
    out = Path(output_path)
    return out.with_name(out.stem + ".axolotl.yaml") if target == "axolotl" else out.with_name("dataset_info.json")


def _read_info(path: Path) -> dict[str, Any]:
    from ..io import read_json

    if not path.is_file():
        return {}
    try:
        return read_json(path, "a JSON object")
    except UserError as exc:
        raise UserError(f"existing dataset_info.json cannot be merged: {exc.message}; fix or move it",
                        path=str(path), line=exc.line) from None


def llama_factory_entry(output_path: str, fmt: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry for the exported file (keyed by the file's stem)."""
    if fmt in CHAT_FORMATS:
        return {"file_name": Path(output_path).name, "formatting": "sharegpt", "columns": dict(SHAREGPT_COLUMNS),
                "tags": dict(SHAREGPT_TAGS)}
    return {"file_name": Path(output_path).name, "formatting": "alpaca", "columns": dict(ALPACA_COLUMNS)}


def axolotl_config(output_path: str) -> str:
    """A ``datasets:`` block for the exported file, to paste into (or merge with) an axolotl config."""
    import yaml

    block = {
        "datasets": [{
            "path": str(Path(output_path).resolve()),
            "ds_type": "json",
            "type": "chat_template",
            "chat_template": "tokenizer_default",
            "field_messages": "messages",
            "message_property_mappings": {"role": "role", "content": "content"},
            "message_field_training": "training",
            "roles_to_train": ["assistant"],
            "train_on_eos": "turn",
        }],
    }
    head = ("# Written by lookahead-tuning preview --export axolotl: the previewed rows, trained on the last\n"
            "# assistant turn only (its 'training' flag), formatted with the model's own chat template.\n")
    return head + yaml.safe_dump(block, sort_keys=False)


def write_export_config(output_path: str, target: str, fmt: str) -> Path:
    """Write the file that registers the export: ``dataset_info.json`` (merged) or ``<stem>.axolotl.yaml``."""
    from ..io import atomic_write_json, atomic_write_text

    path = export_config_path(output_path, target)
    if target == "axolotl":
        atomic_write_text(path, axolotl_config(output_path))
        return path
    info = _read_info(path)
    info[Path(output_path).stem] = llama_factory_entry(output_path, fmt)
    atomic_write_json(path, info)
    return path
