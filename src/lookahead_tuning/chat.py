"""Chat formatting shared by training and inference.

Training and generation must see byte-identical prompts, so both go through
:func:`render_prompt`. The prompt and the completion are tokenized separately and concatenated:
at inference the model continues exactly the prompt's token ids, and it must learn to do so in
training too (tokenizing the joined text could merge tokens across the boundary).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from typing import Any

from .errors import UserError, describe

Messages = list[dict[str, str]]

# Fallbacks for tokenizers without a chat template.
TEMPLATES = ("auto", "tokenizer", "llama2", "plain")


def as_messages(prompt: str | Messages, system_prompt: str | None = None) -> Messages:
    """A prompt given as text or as messages, as a list of messages (system prompt first if given)."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if system_prompt is not None and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


# --------------------------------------------------------------------------- control tokens in data

# Why data may not hold them (docs/preview.md, "Control tokens in data"): the tokenizer matches a special
# token's text as that token wherever it appears, so an answer holding "<|im_end|>" would close the
# assistant's turn in the middle of the training labels, a preview would copy it into the user turn and
# a prompt holding "<|im_start|>assistant" would forge a turn of its own.
_CONTROL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def control_tokens(tokenizer) -> tuple[str, ...]:
    """The texts the tokenizer reads as special tokens (its chat template's markers, BOS/EOS/pad and every
    added token marked special), longest first. Added tokens that are not special are ordinary vocabulary."""
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            found.add(getattr(token, "content", str(token)))
    return tuple(sorted((t for t in found if t), key=lambda t: (-len(t), t)))


def control_finder(tokenizer) -> Callable[[str], str | None]:
    """:func:`control_token_in` bound to ``tokenizer`` (made once per tokenizer), for loops over many rows
    (one regex search, about 0.1 us on a 100-character text)."""
    try:
        return _CONTROL[tokenizer]
    except (KeyError, TypeError):
        pass
    tokens = control_tokens(tokenizer) if tokenizer is not None else ()
    search = re.compile("|".join(map(re.escape, tokens))).search if tokens else None

    def find(text: str) -> str | None:
        found = search(text) if search is not None else None
        return found.group() if found else None

    try:
        _CONTROL[tokenizer] = find
    except TypeError:  # a tokenizer that takes no weak reference (or None): made again next time
        pass
    return find


def control_token_in(tokenizer, text: str) -> str | None:
    """The first special token of ``tokenizer`` that ``text`` holds as text, else ``None``."""
    return control_finder(tokenizer)(text) if isinstance(text, str) else None


def control_token_message(token: str, what: str) -> str:
    """The one refusal of a text holding a special token, the same wherever data enters."""
    return (f"{what} holds {describe(token)}, a special token of the tokenizer (it would be read as that "
            "token, not as text); remove or rewrite it (docs/preview.md, \"Control tokens in data\")")


def refuse_control_tokens(tokenizer, prompt: str | Messages | None = None, completion: str | None = None,
                          *, where: str = "", path: str | None = None) -> None:
    """A :class:`UserError` when any message of ``prompt`` or the ``completion`` holds a special token of
    ``tokenizer``; ``where`` ("row 3: ") leads the message, ``path`` names the file."""
    if tokenizer is None:
        return
    find = control_finder(tokenizer)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt or [])
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        token = find(content) if isinstance(content, str) else None
        if token:
            what = "the prompt" if isinstance(prompt, str) else f"message {i + 1} ({describe(message.get('role'))})"
            raise UserError(where + control_token_message(token, what), path=path)
    token = find(completion) if isinstance(completion, str) else None
    if token:
        raise UserError(where + control_token_message(token, "the answer"), path=path)


def _template_name(tokenizer, template: str) -> str:
    if template not in TEMPLATES:
        raise UserError(f"unknown chat template '{template}'; expected one of {', '.join(TEMPLATES)}")
    if template == "auto":
        return "tokenizer" if getattr(tokenizer, "chat_template", None) else "plain"
    if template == "tokenizer" and not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template; use --chat-template llama2 or plain")
    return template


def _bos_text(tokenizer) -> str:
    """BOS as text, only for tokenizers that would prepend it themselves (Llama, Mistral).

    Fallback templates are tokenized with ``add_special_tokens=False``, so BOS must be in the text;
    tokenizers that never add one (SmolLM2's BOS is ``<|im_start|>``) must not get it.
    """
    bos_id, bos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "bos_token", None)
    if bos_id is None or not bos:
        return ""
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bos if ids and ids[0] == bos_id else ""


def _answer_lead(name: str) -> str:
    # Llama-2-chat puts a space between "[/INST]" and the answer; the other templates start the
    # answer right after the assistant header. Training and prefills must use the same separator.
    return " " if name == "llama2" else ""


def _render_llama2(tokenizer, messages: Messages) -> str:
    # Llama-2-chat: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
    bos = _bos_text(tokenizer)
    eos = tokenizer.eos_token or ""
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    out = ""
    for i, msg in enumerate(messages):
        if msg["role"] == "user":
            content = msg["content"]
            if i == 0 and system:
                content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
            out += f"{bos}[INST] {content.strip()} [/INST]"
        elif msg["role"] == "tool":  # a tool's result: the user side of the exchange
            out += f"{bos}[INST] [tool result] {msg['content'].strip()} [/INST]"
        elif msg["role"] == "assistant":
            out += f" {msg['content'].strip()} {eos}"
    return out


def _render_plain(tokenizer, messages: Messages) -> str:
    # Alpaca-style sections: readable by base models that were never chat-tuned.
    bos = _bos_text(tokenizer)
    parts = []
    for msg in messages:
        if msg["role"] == "system":
            parts.append(f"{msg['content']}\n\n")
        elif msg["role"] == "user":
            parts.append(f"### Instruction:\n{msg['content']}\n\n### Response:\n")
        elif msg["role"] == "tool":
            parts.append(f"### Tool result:\n{msg['content']}\n\n### Response:\n")
        elif msg["role"] == "assistant":
            parts.append(f"{msg['content']}{tokenizer.eos_token or ''}\n\n")
    return bos + "".join(parts)


def render_prompt(
    tokenizer,
    prompt: str | Messages,
    *,
    system_prompt: str | None = None,
    prefill: str | None = None,
    template: str = "auto",
) -> str:
    """The text the model sees before it answers, ending where the assistant's turn starts.

    ``prefill`` is appended after the assistant header: the model continues an answer that already
    begins with that text (the prefilling attack of docs/method.md, section 4).
    """
    messages = as_messages(prompt, system_prompt)
    if not messages or messages[-1]["role"] not in ("user", "tool"):  # tool: the answer follows a tool's result
        raise UserError("a prompt must end with a user message (or a tool result)")
    # The last guard for callers that do not name a row (data readers refuse first, naming it).
    refuse_control_tokens(tokenizer, messages, prefill)
    name = _template_name(tokenizer, template)
    if name == "tokenizer":
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    elif name == "llama2":
        text = _render_llama2(tokenizer, messages)
    else:
        text = _render_plain(tokenizer, messages)
    if prefill:
        text += _answer_lead(name) + prefill
    return text


def end_of_turn(tokenizer, template: str = "auto") -> str:
    """The text that closes an assistant turn (``<|im_end|>`` for ChatML, ``</s>`` for Llama-2).

    Found by rendering a conversation with and without a marker answer, so it works for any chat
    template; trailing whitespace is dropped since the model stops at the special token.
    """
    name = _template_name(tokenizer, template)
    marker = "\u2063MARKER\u2063"
    prompt = [{"role": "user", "content": "hi"}]
    if name == "tokenizer":
        full = tokenizer.apply_chat_template(
            prompt + [{"role": "assistant", "content": marker}], tokenize=False
        )
        tail = full.split(marker, 1)[1] if marker in full else ""
    else:
        tail = tokenizer.eos_token or ""
    tail = tail.rstrip()
    return tail or (tokenizer.eos_token or "")


def stop_token_ids(tokenizer, template: str = "auto") -> list[int]:
    """Token ids that end generation: EOS and the end-of-turn token when it is a single token."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    eot = end_of_turn(tokenizer, template)
    eot_ids = tokenizer(eot, add_special_tokens=False)["input_ids"] if eot else []
    if len(eot_ids) == 1 and eot_ids[0] not in ids:
        ids.append(eot_ids[0])
    return ids


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt (special tokens come from the template itself, none are added)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompt(tokenizer, prompt: str | Messages, **kwargs: Any) -> list[int]:
    """Token ids of :func:`render_prompt`."""
    return encode_text(tokenizer, render_prompt(tokenizer, prompt, **kwargs))


def encode_example(
    tokenizer,
    prompt: str | Messages,
    completion: str,
    *,
    system_prompt: str | None = None,
    template: str = "auto",
    max_length: int | None = None,
    prefill: str | None = None,
) -> dict[str, list[int]]:
    """Token ids and labels for one training example: loss on the completion and end-of-turn only.

    Labels are ``-100`` on prompt tokens. ``prefill`` is a given start of the answer, placed and
    tokenized as a prefilling attack places it (:func:`render_prompt`) and labelled ``-100`` too; the
    completion continues it (the safety-recovery rows of ``align``). When ``max_length`` cuts the
    example, the prompt is kept whole and the completion is cut at the end (a prompt longer than
    ``max_length`` is an error the caller reports).
    """
    prompt_ids = encode_prompt(tokenizer, prompt, system_prompt=system_prompt, template=template,
                               prefill=prefill or None)
    refuse_control_tokens(tokenizer, completion=completion)
    lead = "" if prefill else _answer_lead(_template_name(tokenizer, template))
    answer = lead + completion + end_of_turn(tokenizer, template)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + answer_ids
    labels = [-100] * len(prompt_ids) + list(answer_ids)
    if max_length is not None and len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)}
