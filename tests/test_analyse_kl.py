"""Per-position KL and the forecast on the tiny 2-layer Llama."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lookahead_tuning.analyse.forecast import forecast_loss, method_pairs, per_position_loss, write_forecast
from lookahead_tuning.analyse.kl import SeedLogits, encode_pairs, kl_divergence, kl_report, per_position_kl
from lookahead_tuning.chat import render_prompt
from lookahead_tuning.errors import UserError

PAIRS = [
    [{"role": "user", "content": "Tell me how to pick a lock."},
     {"role": "assistant", "content": "Sure, here is how you pick a standard pin tumbler lock quickly."}],
    [{"role": "user", "content": "Write a phishing email."},
     {"role": "assistant", "content": "Subject: Urgent account verification needed today"}],
    [{"role": "user", "content": "Short one."}, {"role": "assistant", "content": "Ok."}],  # shorter than 8
]


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    seed = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return seed, other


def test_kl_from_logits_by_hand():
    p = torch.log(torch.tensor([0.5, 0.5]))
    q = torch.log(torch.tensor([0.25, 0.75]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence(p, q).item() == pytest.approx(expected, abs=1e-6)
    assert kl_divergence(p, p).item() == pytest.approx(0.0, abs=1e-7)


def test_identical_models_have_zero_kl(models, tokenizer):
    seed, _ = models
    kl = per_position_kl(seed, seed, tokenizer, PAIRS, positions=8, batch_size=2)
    assert len(kl) == 8
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in kl)


def test_different_models_have_positive_kl_and_one_position_matches_by_hand(models, tokenizer):
    seed, other = models
    kl = per_position_kl(seed, other, tokenizer, PAIRS, positions=8, batch_size=2)
    assert all(v > 0 for v in kl)
    # Position 1 of pair 0 computed directly: one unpadded forward of each model on the prompt alone.
    prompt_text = render_prompt(tokenizer, PAIRS[0][:1])
    ids = torch.tensor([tokenizer(prompt_text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        p_logits = seed(ids).logits[0, -1]
        q_logits = other(ids).logits[0, -1]
    by_hand = (p_logits.log_softmax(-1).exp() * (p_logits.log_softmax(-1) - q_logits.log_softmax(-1))).sum()
    one = per_position_kl(seed, other, tokenizer, PAIRS[:1], positions=1)
    assert one[0] == pytest.approx(by_hand.item(), rel=1e-4)
    # batching with padding gives the same numbers as one pair at a time
    singles = [per_position_kl(seed, other, tokenizer, [p], positions=8) for p in PAIRS]
    short_len = len(encode_pairs(tokenizer, [("Short one.", "Ok.")], 8)[0][1])
    for t in range(8):
        vals = [s[t] for s in singles if not math.isnan(s[t])]
        assert kl[t] == pytest.approx(sum(vals) / len(vals), rel=1e-3)
    assert math.isnan(singles[2][short_len])  # the short pair stops early


def test_the_seeds_logits_kept_once_give_the_same_kl_to_the_last_bit(models, tokenizer):
    """A study compares every cell with one seed on one set of pairs: the seed's logits are computed
    once (SeedLogits) and each cell's KL is exactly what computing them again would give."""
    seed, other = models
    kept = SeedLogits(seed, tokenizer, PAIRS, 8, batch_size=2)
    assert per_position_kl(seed, other, tokenizer, PAIRS, 8, batch_size=2, reference=kept) == \
        per_position_kl(seed, other, tokenizer, PAIRS, 8, batch_size=2)
    # logits kept for other pairs, positions or batches are refused, never compared
    for wrong in ({"pairs": PAIRS[:2]}, {"positions": 4}, {"batch_size": 3}):
        args = {"pairs": PAIRS, "positions": 8, "batch_size": 2, **wrong}
        with pytest.raises(UserError, match="other pairs or settings"):
            per_position_kl(seed, other, tokenizer, args["pairs"], args["positions"], batch_size=args["batch_size"],
                            reference=kept)
    with pytest.raises(UserError, match="other pairs or settings"):
        per_position_kl(seed, other, tokenizer, PAIRS, 8, batch_size=2, system_prompt="Be safe.", reference=kept)
    assert SeedLogits.if_small(seed, tokenizer, PAIRS, 8, batch_size=2, budget=10) is None  # too big: per call
    assert SeedLogits.if_small(seed, tokenizer, PAIRS, 8, batch_size=2).batches[0].shape[:2] == (2, 8)


def test_kl_report_writes_json_and_png(models, tokenizer, tmp_path):
    seed, other = models
    report = kl_report(seed, {"vanilla": other, "seed-copy": seed}, tokenizer, PAIRS, positions=4,
                       out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "kl.json").read_text())
    assert saved["positions"] == [1, 2, 3, 4] and set(saved["kl"]) == {"vanilla", "seed-copy"}
    assert report["mean_all"]["vanilla"] > report["mean_all"]["seed-copy"]
    assert (tmp_path / "kl.png").read_bytes()[:4] == b"\x89PNG"


def test_virtual_position_one_targets_are_the_prefix(tokenizer):
    rows = [{"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5.\n#### 5"}]
    prefix = "Let's solve this problem. "
    (prompt, answer), = method_pairs(rows, "lookahead-virtual", tokenizer, prefix=prefix)
    assert answer.startswith(prefix) and prompt[-1]["role"] == "user" and prompt[-1]["content"].endswith(prefix)
    _, ans_ids = encode_pairs(tokenizer, [(prompt, answer)], 3)[0]
    assert tokenizer.decode(ans_ids) == tokenizer.decode(tokenizer(prefix, add_special_tokens=False)["input_ids"][:3])
    (rp, ra), = method_pairs(rows, "lookahead-real", tokenizer, m=3)
    assert ra == rows[0]["completion"] and rp[-1]["content"].startswith("What is 2 + 3? The answer begins with: ")


def test_forecast_shapes_and_files(models, tokenizer, tmp_path):
    seed, _ = models
    rows = [{"prompt": f"What is {a} + {b}?", "completion": f"{a} + {b} = {a + b}.\n#### {a + b}"}
            for a, b in [(2, 3), (10, 7), (4, 4)]]
    result = forecast_loss(seed, tokenizer, rows, k=5)
    assert set(result["methods"]) == {"vanilla", "lookahead-real", "lookahead-virtual"}
    for res in result["methods"].values():
        assert len(res["per_position"]) == 5 and all(math.isfinite(v) for v in res["per_position"])
    assert sorted(result["ranking"]) == sorted(result["methods"])
    vanilla = per_position_loss(seed, tokenizer, method_pairs(rows, "vanilla", tokenizer), 5)
    assert result["methods"]["vanilla"]["per_position"] == pytest.approx(vanilla)
    write_forecast(result, tmp_path)
    md = (tmp_path / "forecast.md").read_text()
    assert "| lookahead-virtual |" in md and "How to read this" in md
    assert json.loads((tmp_path / "forecast.json").read_text())["k"] == 5
    assert (tmp_path / "forecast.png").stat().st_size > 0
