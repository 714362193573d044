"""Chat formatting: templates, fallbacks, system prompt, prefill, and train/inference identity."""

from __future__ import annotations

import copy

import pytest

from lookahead_tuning.chat import (
    as_messages,
    encode_example,
    encode_prompt,
    end_of_turn,
    render_prompt,
    stop_token_ids,
)
from lookahead_tuning.errors import UserError


@pytest.fixture
def no_template(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def test_tokenizer_template_ends_at_assistant_header(tokenizer):
    text = render_prompt(tokenizer, "How are you?", system_prompt="Be brief.")
    assert text.endswith("<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text


def test_prefill_continues_the_assistant_turn(tokenizer):
    plain = render_prompt(tokenizer, "Tell me.")
    assert render_prompt(tokenizer, "Tell me.", prefill="Sure, here") == plain + "Sure, here"


def test_messages_prompt_and_system_not_duplicated(tokenizer):
    msgs = [{"role": "system", "content": "S1"}, {"role": "user", "content": "Q"}]
    assert as_messages(msgs, "S2")[0]["content"] == "S1"
    assert as_messages("Q", "S2") == [{"role": "system", "content": "S2"}, {"role": "user", "content": "Q"}]
    text = render_prompt(tokenizer, msgs, system_prompt="S2")
    assert "S1" in text and "S2" not in text


def test_llama2_fallback(tokenizer):
    text = render_prompt(tokenizer, "Hi", system_prompt="Sys", prefill="Sure", template="llama2")
    # SmolLM2 never prepends BOS, so the fallback must not invent one.
    assert text == "[INST] <<SYS>>\nSys\n<</SYS>>\n\nHi [/INST] Sure"
    multi = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert render_prompt(tokenizer, multi, template="llama2") == "[INST] a [/INST] b <|im_end|>[INST] c [/INST]"


def test_plain_fallback_is_auto_without_template(no_template):
    text = render_prompt(no_template, "Hi", system_prompt="Sys", prefill="Ok")
    assert text == "Sys\n\n### Instruction:\nHi\n\n### Response:\nOk"
    assert render_prompt(no_template, "Hi", template="plain") == render_prompt(no_template, "Hi")
    assert end_of_turn(no_template) == no_template.eos_token


def test_template_errors(tokenizer, no_template):
    with pytest.raises(UserError, match="unknown chat template 'chatml'"):
        render_prompt(tokenizer, "x", template="chatml")
    with pytest.raises(UserError, match="no chat template"):
        render_prompt(no_template, "x", template="tokenizer")
    with pytest.raises(UserError, match="must end with a user message"):
        render_prompt(tokenizer, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])


def test_end_of_turn_and_stop_ids(tokenizer):
    assert end_of_turn(tokenizer) == "<|im_end|>"
    eot_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eot_id in stop_token_ids(tokenizer)
    assert tokenizer.eos_token_id in stop_token_ids(tokenizer)


@pytest.mark.parametrize("template", ["tokenizer", "llama2", "plain"])
def test_training_and_inference_format_identically(tokenizer, template):
    """The training text is exactly the inference prompt prefilled with the answer, plus end of turn."""
    prompt, answer = "What is 3 + 4?", "3 + 4 = 7. #### 7"
    ex = encode_example(tokenizer, prompt, answer, system_prompt="Sys", template=template)
    prompt_ids = encode_prompt(tokenizer, prompt, system_prompt="Sys", template=template)
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids
    assert ex["labels"][:n] == [-100] * n and ex["labels"][n:] == ex["input_ids"][n:]
    assert ex["attention_mask"] == [1] * len(ex["input_ids"])
    full = tokenizer.decode(ex["input_ids"])
    assert full == render_prompt(tokenizer, prompt, system_prompt="Sys", prefill=answer, template=template) + end_of_turn(
        tokenizer, template
    )


def test_encode_example_truncates_the_completion(tokenizer):
    full = encode_example(tokenizer, "Q", "a long answer " * 20)
    cut = encode_example(tokenizer, "Q", "a long answer " * 20, max_length=len(full["input_ids"]) - 5)
    assert cut["input_ids"] == full["input_ids"][:-5] and cut["labels"] == full["labels"][:-5]
