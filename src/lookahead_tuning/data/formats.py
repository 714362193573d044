"""The dataset formats practitioners train with, behind one small interface.

Supported row shapes (TRL's conventions first):

- ``prompt-completion``: ``{"prompt": str, "completion": str}`` (TRL standard prompt-completion);
- ``conversational``: ``{"prompt": [messages], "completion": [messages]}`` (TRL conversational
  prompt-completion);
- ``messages``: ``{"messages": [{"role", "content"}, ...]}`` (multi-turn chat; the last assistant turn is
  the answer). OpenAI tool use is part of it: an assistant turn with ``tool_calls`` (content null) and
  ``tool`` turns holding the results are prompt context, rendered as text (the calls as
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``); the answer is the last assistant turn,
  which must be text, and a preview goes into the user turn the exchange started from;
- ``alpaca``: ``{"instruction", "input" (optional), "output"}``;
- ``fields``: any named pair of string fields, e.g. GSM8K's ``question``/``answer``.

Two views of a row are offered. :func:`split_example` gives the normalised training view
``(prompt_messages, completion_text)``. :func:`preview_slots` says *where* in the row the user-visible
instruction and the answer live (as key paths), so the preview transform can rewrite a row in place and
keep every other field and the format itself unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

FORMATS = ("prompt-completion", "conversational", "messages", "alpaca", "fields")

# Plain field pairs recognised without --input-field/--output-field (GSM8K, SAMSum, common SFT sets).
KNOWN_FIELD_PAIRS = (
    ("question", "answer"),
    ("dialogue", "summary"),
    ("input", "output"),
    ("prompt", "response"),
    ("query", "response"),
    ("instruction", "response"),
    ("problem", "solution"),
)

Path = tuple[str | int, ...]
Messages = list[dict[str, str]]


class ExampleError(UserError):
    """A row that does not fit its format. Callers add the row's location (see ``io.Location``)."""


@dataclass(frozen=True)
class Slot:
    """Key paths of one (instruction, answer) pair inside a row, e.g. ``("messages", 2, "content")``."""

    prompt: Path
    answer: Path


def _fields(example: Mapping[str, Any]) -> str:
    return ", ".join(map(str, example)) or "(none)"


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, Mapping) and "role" in m for m in value)


def detect_format(example: Mapping[str, Any]) -> str:
    """Guess the format of one row from its keys (see the module docstring for the shapes)."""
    if not isinstance(example, Mapping):
        raise ExampleError(f"expected a record (an object), found {type(example).__name__}")
    if "messages" in example and _is_messages(example["messages"]):
        return "messages"
    if "prompt" in example and "completion" in example:
        prompt, completion = example["prompt"], example["completion"]
        if _is_messages(prompt) and _is_messages(completion):
            return "conversational"
        if isinstance(prompt, str) and isinstance(completion, str):
            return "prompt-completion"
        raise ExampleError(
            "'prompt' and 'completion' must both be strings (standard) or both be message lists "
            f"(conversational); found {type(prompt).__name__} and {type(completion).__name__}"
        )
    if "instruction" in example and "output" in example:
        return "alpaca"
    for inp, out in KNOWN_FIELD_PAIRS:
        if inp in example and out in example:
            return "fields"
    raise ExampleError(
        f"cannot tell the dataset format from the fields present ({_fields(example)}); expected "
        "prompt/completion, messages, instruction/input/output or a known pair such as question/answer; "
        "name the pair with --input-field and --output-field"
    )


def resolve_fields(
    example: Mapping[str, Any], input_field: str | None = None, output_field: str | None = None
) -> tuple[str, str]:
    """The (input, output) field names of a ``fields`` row: the ones given, else a known pair present."""
    if input_field and output_field:
        return input_field, output_field
    for inp, out in KNOWN_FIELD_PAIRS:
        if (input_field in (None, inp)) and (output_field in (None, out)) and inp in example and out in example:
            return inp, out
    given = f"--input-field {input_field}" if input_field else f"--output-field {output_field}"
    if not (input_field or output_field):
        given = "no field names"
    raise ExampleError(
        f"cannot tell which fields hold the instruction and the answer ({given}; fields present: "
        f"{_fields(example)}); pass both --input-field and --output-field"
    )


def resolve_format(
    example: Mapping[str, Any], fmt: str = "auto", input_field: str | None = None, output_field: str | None = None
) -> str:
    """The format to use for ``example``: ``fmt`` unless ``"auto"``; named fields imply ``fields``."""
    if fmt not in ("auto", *FORMATS):
        raise UserError(f"unknown dataset format '{fmt}'; expected auto or one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    if input_field or output_field:
        return "fields"
    return detect_format(example)


def _require(example: Mapping[str, Any], key: str) -> Any:
    if key not in example:
        raise ExampleError(f"missing field '{key}'; fields present: {_fields(example)}")
    return example[key]


def _message_list(example: Mapping[str, Any], key: str) -> list:
    value = _require(example, key)
    if not _is_messages(value):
        raise ExampleError(f"field '{key}' must be a list of {{'role', 'content'}} messages")
    return value


TOOL_ROLES = ("tool", "function")  # OpenAI's tool results (and the older function-calling role)


def is_tool_call(message: Mapping[str, Any]) -> bool:
    """An assistant turn that calls tools (OpenAI ``tool_calls`` or the older ``function_call``)."""
    return message.get("role") == "assistant" and bool(message.get("tool_calls") or message.get("function_call"))


def _user_before(messages: Sequence[Mapping[str, Any]], j: int) -> int:
    """Index of the user turn that the assistant turn ``j`` answers: no text answer in between; tool
    calls and tool results (the exchange the answer comes out of) are passed over."""
    for i in range(j - 1, -1, -1):
        role = messages[i].get("role")
        if role == "user":
            return i
        if role == "assistant" and not is_tool_call(messages[i]):
            break
    raise ExampleError(f"assistant turn {j + 1} has no user turn before it to carry the preview")


def _last_answer(messages: Sequence[Mapping[str, Any]]) -> int:
    """Index of the last assistant turn, which must be a text answer (not a tool call)."""
    last = max((j for j, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        raise ExampleError("the conversation has no assistant turn")
    if is_tool_call(messages[last]):
        raise ExampleError(f"the conversation ends with a tool call (turn {last + 1}), not a text answer to "
                           "train on or preview; end it with the assistant's reply")
    return last


def _chat_slots(turns: list[tuple[Path, Mapping[str, Any]]], all_turns: bool) -> list[Slot]:
    roles = [m for _, m in turns]
    if not any(m.get("role") == "assistant" for m in roles):
        raise ExampleError("the conversation has no assistant turn to preview")
    last = _last_answer(roles)
    targets = [j for j, m in enumerate(roles) if m.get("role") == "assistant" and not is_tool_call(m)]
    if not all_turns:
        targets = [last]
    slots = []
    for j in targets:
        i = _user_before(roles, j)
        slots.append(Slot(turns[i][0] + ("content",), turns[j][0] + ("content",)))
    return slots


def preview_slots(
    example: Mapping[str, Any],
    fmt: str,
    *,
    input_field: str | None = None,
    output_field: str | None = None,
    all_turns: bool = False,
) -> list[Slot]:
    """Where the preview goes: one :class:`Slot` per (instruction, answer) pair to rewrite.

    Chats: the answer is the last assistant turn and the instruction is the user turn it answers
    (``all_turns`` takes every assistant turn). Alpaca: the preview closes the user-visible prompt, so it
    goes after ``input`` when that is non-empty, else after ``instruction``. ``fmt`` must be resolved
    (not ``"auto"``; see :func:`resolve_format`).
    """
    if fmt == "prompt-completion":
        _require(example, "prompt")
        _require(example, "completion")
        return [Slot(("prompt",), ("completion",))]
    if fmt == "alpaca":
        _require(example, "instruction")
        _require(example, "output")
        extra = example.get("input")
        where = "input" if isinstance(extra, str) and extra.strip() else "instruction"
        return [Slot((where,), ("output",))]
    if fmt == "fields":
        inp, out = resolve_fields(example, input_field, output_field)
        _require(example, inp)
        _require(example, out)
        return [Slot((inp,), (out,))]
    if fmt == "messages":
        msgs = _message_list(example, "messages")
        return _chat_slots([(("messages", i), m) for i, m in enumerate(msgs)], all_turns)
    if fmt == "conversational":
        prompt = _message_list(example, "prompt")
        completion = _message_list(example, "completion")
        turns = [(("prompt", i), m) for i, m in enumerate(prompt)]
        turns += [(("completion", i), m) for i, m in enumerate(completion)]
        if not any(m.get("role") == "assistant" for m in completion):
            raise ExampleError("the conversational 'completion' has no assistant message")
        return _chat_slots(turns, all_turns)
    raise UserError(f"unknown dataset format '{fmt}'; expected one of {', '.join(FORMATS)}")


def _describe(path: Path) -> str:
    if len(path) == 1:
        return f"field '{path[0]}'"
    return f"'{path[0]}' turn {int(path[1]) + 1} {path[2]}"


def get_text(example: Mapping[str, Any], path: Path) -> str:
    """The string at ``path``; a missing key or a non-string value is an :class:`ExampleError`."""
    value: Any = example
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise ExampleError(f"missing {_describe(path)}; fields present: {_fields(example)}") from None
    if not isinstance(value, str):
        raise ExampleError(f"{_describe(path)} must be a string, found {type(value).__name__}")
    return value


def set_texts(example: Mapping[str, Any], updates: Mapping[Path, str]) -> dict:
    """A copy of ``example`` with the strings at the given paths replaced (input row left untouched).

    Only the containers on the updated paths are copied, so large untouched fields are shared.
    """

    def put(node: Any, path: Path, text: str) -> Any:
        key, rest = path[0], path[1:]
        node = dict(node) if isinstance(node, Mapping) else list(node)
        node[key] = text if not rest else put(node[key], rest, text)
        return node

    out: Any = dict(example)
    for path, text in updates.items():
        out = put(out, path, text)
    return out


def _tool_calls_text(message: Mapping[str, Any], where: str, i: int) -> str:
    """An assistant turn's tool calls as text, one ``<tool_call>{"name", "arguments"}</tool_call>`` each."""
    calls = message.get("tool_calls")
    if calls is None:
        calls = [{"function": message.get("function_call")}]
    if not isinstance(calls, list):
        raise ExampleError(f"'{where}' turn {i + 1} 'tool_calls' must be a list, found {type(calls).__name__}")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ExampleError(f"'{where}' turn {i + 1}: every tool call needs a 'function' with a string 'name'")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):  # OpenAI sends the arguments as JSON text
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass  # kept as the text it is
        text = json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False, default=str)
        out.append(f"<tool_call>{text}</tool_call>")
    return "\n".join(out)


def _chat_text(messages: list, where: str) -> Messages:
    out = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if is_tool_call(m):
            if content is not None and not isinstance(content, str):
                raise ExampleError(f"'{where}' turn {i + 1} content must be a string or null, found "
                                   f"{type(content).__name__}")
            calls = _tool_calls_text(m, where, i)
            out.append({"role": "assistant", "content": f"{content}\n{calls}" if content else calls})
            continue
        if not isinstance(content, str):
            raise ExampleError(f"'{where}' turn {i + 1} content must be a string, found {type(content).__name__}")
        role = str(m["role"])
        out.append({"role": "tool" if role in TOOL_ROLES else role, "content": content})
    return out


CHAT_ROLES = ("system", "user", "assistant", *TOOL_ROLES)


def prompt_chat(messages: Any, where: str = "prompt") -> Messages:
    """A conversation to answer (a prompt file's ``prompt`` or ``messages``) in the shape the chat
    renderers take: tool calls and tool results become text exactly as in training (the model is asked
    what it was trained on), and the last turn is where the model answers, a user message or a tool
    result. Roles are not restricted here: a tokenizer's own template may know more than training does."""
    if not isinstance(messages, list) or not messages:
        raise ExampleError(f"'{where}' must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise ExampleError(f"'{where}' turn {i + 1} must be an object with a string 'role'")
    chat = _chat_text(messages, where)
    if chat[-1]["role"] not in ("user", "tool"):
        raise ExampleError(f"'{where}' messages must end with a user message or a tool result (the model answers "
                           f"after it), not a '{chat[-1]['role']}' turn")
    return chat


def _check_training_chat(raw: Sequence[Mapping[str, Any]], chat: Messages, last: int) -> None:
    """A chat to train on: every role is one a chat template knows, and the answer follows a user turn
    (or a tool result), as every renderer of the prompt requires."""
    for i, m in enumerate(raw):
        role = m.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise ExampleError(f"turn {i + 1} has role {role!r}; expected one of {', '.join(CHAT_ROLES)}")
    if last == 0 or chat[last - 1]["role"] not in ("user", "tool"):
        before = "nothing" if last == 0 else f"a '{chat[last - 1]['role']}' turn"
        raise ExampleError(f"the answer (turn {last + 1}) follows {before}; it must follow a user message or a "
                           "tool result")


def _answer_text(text: str) -> str:
    if not text.strip():
        raise ExampleError("empty answer: there is nothing to train on")
    return text


def split_example(
    example: Mapping[str, Any],
    fmt: str = "auto",
    input_field: str | None = None,
    output_field: str | None = None,
) -> tuple[Messages, str]:
    """The training view of any supported row: ``(prompt_messages, completion_text)``.

    Multi-turn chats: everything before the last assistant turn is the prompt, that turn is the
    completion. Alpaca joins ``instruction`` and a non-empty ``input`` with a blank line.
    """
    fmt = resolve_format(example, fmt, input_field, output_field)
    if fmt in ("messages", "conversational"):
        if fmt == "messages":
            chat = _chat_text(_message_list(example, "messages"), "messages")
        else:
            chat = _chat_text(_message_list(example, "prompt"), "prompt")
            chat += _chat_text(_message_list(example, "completion"), "completion")
        raw = (list(_message_list(example, "messages")) if fmt == "messages"
               else list(_message_list(example, "prompt")) + list(_message_list(example, "completion")))
        last = _last_answer(raw)
        _check_training_chat(raw, chat, last)
        return chat[:last], _answer_text(chat[last]["content"])
    if fmt == "alpaca":
        instruction = get_text(example, ("instruction",))
        extra = example.get("input")
        if extra is not None and not isinstance(extra, str):
            raise ExampleError(f"field 'input' must be a string, found {type(extra).__name__}")
        prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        return [{"role": "user", "content": prompt}], _answer_text(get_text(example, ("output",)))
    if fmt == "prompt-completion":
        inp, out = "prompt", "completion"
    else:
        inp, out = resolve_fields(example, input_field, output_field)
    return [{"role": "user", "content": get_text(example, (inp,))}], _answer_text(get_text(example, (out,)))
