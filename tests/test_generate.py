"""The generation engine on the tiny 2-layer Llama: batching, prefill, stops, determinism, resume."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from lookahead_tuning.chat import encode_prompt
from lookahead_tuning.errors import UserError
from lookahead_tuning.generate import engine
from lookahead_tuning.generate.engine import generate, plan_batches, prefill_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    "Hi",
    "What is the capital of France?",
    "Write a long and detailed story about a dragon who learns to bake bread in a small village.",
    "List three colors.",
    "Explain photosynthesis to a child in two sentences, please.",
    "2+2?",
    "Translate 'good morning' into Spanish and French.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from lookahead_tuning.models import load_model

    return load_model(tiny_model_dir)


def _items(prompts=PROMPTS, **extra):
    return [{"id": f"q{i}", "prompt": p, **extra} for i, p in enumerate(prompts)]


def _greedy_reference(model, ids: list[int], n: int) -> list[int]:
    """Plain greedy decoding without cache, padding or batching: the ground truth."""
    out = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([out])).logits
            out.append(int(logits[0, -1].argmax()))
    return out[len(ids):]


def test_batched_equals_one_at_a_time(tiny):
    model, tok = tiny
    batched = generate(model, tok, _items(), batch_size=4, max_new_tokens=8, progress=False)
    single = [generate(model, tok, [item], batch_size=1, max_new_tokens=8, progress=False)[0] for item in _items()]
    assert [r["id"] for r in batched] == [f"q{i}" for i in range(len(PROMPTS))]  # input order
    assert [r["completion"] for r in batched] == [r["completion"] for r in single]
    assert all(r["completion_tokens"] == 8 and r["finish_reason"] == "length" for r in batched)
    # ... and both equal an unbatched, uncached greedy loop (left padding leaks nothing).
    ids = encode_prompt(tok, PROMPTS[2])
    ref = tok.decode(_greedy_reference(model, ids, 8), skip_special_tokens=True)
    assert batched[2]["completion"] == ref


def test_prefill_is_in_the_prompt_not_in_the_completion(tiny):
    model, tok = tiny
    prefill = "Sure, here is how"
    [res] = generate(model, tok, [{"id": "a", "prompt": PROMPTS[1], "prefill": prefill}], max_new_tokens=6,
                     progress=False)
    assert res["prefill"] == prefill
    ids = encode_prompt(tok, PROMPTS[1], prefill=prefill)
    assert res["completion"] == tok.decode(_greedy_reference(model, ids, 6), skip_special_tokens=True)
    [plain] = generate(model, tok, [{"id": "a", "prompt": PROMPTS[1]}], max_new_tokens=6, progress=False)
    assert plain["completion"] != res["completion"]


def test_stops_at_end_of_turn(tiny, monkeypatch):
    model, tok = tiny
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    forward, calls = model.forward, []

    def forced(*args, **kwargs):  # from the 4th decoding step on, the model "wants" to end its turn
        out = forward(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 4:
            out.logits[..., eot] += 1e4
        return out

    monkeypatch.setattr(model, "forward", forced)
    results = generate(model, tok, _items(PROMPTS[:3]), batch_size=3, max_new_tokens=20, progress=False)
    for r in results:
        assert r["finish_reason"] == "stop" and r["completion_tokens"] == 3
        assert "<|im_end|>" not in r["completion"]
    assert len(calls) == 4  # generation ended at the stop token, not at max_new_tokens


def test_greedy_and_seeded_sampling_are_deterministic(tiny):
    model, tok = tiny
    opts = {"batch_size": 3, "max_new_tokens": 6, "progress": False}
    assert generate(model, tok, _items(), **opts) == generate(model, tok, _items(), **opts)
    a = generate(model, tok, _items(), do_sample=True, seed=1, **opts)
    assert a == generate(model, tok, _items(), do_sample=True, seed=1, **opts)
    assert [r["completion"] for r in a] != [r["completion"] for r in generate(model, tok, _items(), do_sample=True,
                                                                             seed=2, **opts)]


def test_resume_after_interruption_no_duplicate_none_lost(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    out = tmp_path / "answers.jsonl"
    opts = {"batch_size": 2, "max_new_tokens": 5, "progress": False}
    expected = generate(model, tok, _items(), **opts)

    real, calls = engine._generate_batch, []

    def dies_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while the third batch generates
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_generate_batch", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate(model, tok, _items(), out_path=out, **opts)
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(first) == 4  # two finished batches, durably written

    calls.clear()
    monkeypatch.setattr(engine, "_generate_batch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = generate(model, tok, _items(), out_path=out, **opts)
    assert len(calls) == 2  # only the 3 missing prompts (batches of 2) were generated
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(f"q{i}" for i in range(len(PROMPTS)))  # no dup, none lost
    assert resumed == expected

    calls.clear()
    assert generate(model, tok, _items(), out_path=out, **opts) == expected
    assert calls == [] and len(out.read_text().splitlines()) == len(PROMPTS)


def test_plan_batches_sorts_by_length_and_caps_tokens():
    lengths = [5, 50, 10, 48, 7, 49]
    batches = plan_batches(lengths, batch_size=2, max_new_tokens=10, max_batch_tokens=None)
    assert batches == [[1, 5], [3, 2], [4, 0]]
    # 60 padded tokens per row for the longest prompts: a 100-token cap allows one row there,
    # three rows once prompts are short (3 x 20 <= 100).
    capped = plan_batches(lengths, batch_size=4, max_new_tokens=10, max_batch_tokens=100)
    assert capped == [[1], [5], [3], [2, 4, 0]]
    assert sorted(i for b in capped for i in b) == list(range(6))


def test_prefill_text_counts_tokens(tokenizer):
    answer = "Sure, here is a detailed plan to do it."
    assert prefill_text(tokenizer, answer, 3) == "Sure, here"
    assert prefill_text(tokenizer, answer, 0) == ""
    assert prefill_text(tokenizer, answer, 1000) == answer


def test_bad_items_and_options(tiny):
    model, tok = tiny
    with pytest.raises(UserError, match="duplicate id 'x'"):
        generate(model, tok, [{"id": "x", "prompt": "a"}, {"id": "x", "prompt": "b"}], progress=False)
    with pytest.raises(UserError, match="needs 'id' and 'prompt'"):
        generate(model, tok, [{"prompt": "a"}], progress=False)
    with pytest.raises(UserError, match="unknown generation backend"):
        generate(model, tok, _items(), backend="tgi", progress=False)


def test_vllm_backend_missing_is_a_clear_error(tiny, monkeypatch):
    model, tok = tiny
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as if vLLM were not installed
    with pytest.raises(UserError, match=r"pip install 'lookahead-tuning\[vllm\]'"):
        generate(model, tok, _items(), backend="vllm", progress=False)


@pytest.mark.slow
def test_embedded_model_answers_and_stops():
    from lookahead_tuning.models import EMBEDDED_ALIAS, load_model

    model, tok = load_model(EMBEDDED_ALIAS)
    items = [{"id": "0", "prompt": "What is the capital of France?"},
             {"id": "1", "prompt": "How do I make a cake?", "prefill": "Sure, here"}]
    res = generate(model, tok, items, max_new_tokens=40, progress=False)
    assert "Paris" in res[0]["completion"] and res[0]["finish_reason"] == "stop"
    assert not res[1]["completion"].startswith("Sure")
    single = generate(model, tok, items[1:], max_new_tokens=40, progress=False)
    assert single[0]["completion"] == res[1]["completion"]
