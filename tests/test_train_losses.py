"""Numerics of the training losses: answer positions, answer-only projection, Constrained SFT, betas."""

from __future__ import annotations

import math

import pytest
import torch

from lookahead_tuning.chat import encode_example, end_of_turn
from lookahead_tuning.train.collator import PadCollator
from lookahead_tuning.train.config import TrainConfig
from lookahead_tuning.train.losses import (
    answer_logprobs,
    answer_positions,
    beta_tensor,
    constrained_sft_loss,
    cross_entropy,
)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()


@pytest.fixture(scope="module")
def batch(tokenizer):
    rows = [encode_example(tokenizer, "What is 2 + 3?", "2 + 3 = 5.\n#### 5"),
            encode_example(tokenizer, [{"role": "user", "content": "Name a colour, please."}], "Blue.")]
    return PadCollator(tokenizer.pad_token_id)(rows)


def test_answer_positions_count_within_each_span():
    labels = torch.tensor([[5, -100, -100, 7, 8, 9, -100, 4, 3, -100]])
    mask, targets, position = answer_positions(labels)
    assert targets.tolist() == [[-100, -100, 7, 8, 9, -100, 4, 3, -100]]
    assert position[mask].tolist() == [1, 2, 3, 1, 2]


def test_labels_cover_answer_and_end_of_turn_only(tokenizer, batch):
    labels = batch["labels"][0]
    answer = [t for t in labels.tolist() if t != -100]
    assert tokenizer.decode(answer) == "2 + 3 = 5.\n#### 5" + end_of_turn(tokenizer)
    # every prompt token and the padding of the shorter row is masked
    first = labels.tolist().index(answer[0])
    assert all(t == -100 for t in labels[:first].tolist())
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    assert batch["labels"][1][batch["attention_mask"][1] == 0].eq(-100).all()


@pytest.mark.parametrize("answer_only", [True, False])
def test_answer_only_projection_equals_model_loss(tiny, batch, answer_only):
    expected = tiny(**batch).loss
    got = cross_entropy(answer_logprobs(tiny, batch, answer_only=answer_only))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_answer_only_projection_with_lora_uses_the_adapters(tiny, batch):
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    expected = peft_model(**batch).loss
    got = cross_entropy(answer_logprobs(peft_model, batch))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert abs(float(got) - float(tiny(**batch).loss)) > 1e-3  # the adapters changed the loss


def test_answer_only_projection_gradients_match(tiny, batch):
    import copy

    a, b = copy.deepcopy(tiny), copy.deepcopy(tiny)
    a(**batch).loss.backward()
    cross_entropy(answer_logprobs(b, batch)).backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_constrained_loss_hand_computed():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    betas = torch.tensor([0.5, 2.0, 0.1])
    # (2/0.5)*log(1+e^-0.25), (2/2)*log(1+e^2), (2/0.1)*log(2)
    hand = (4 * math.log(1 + math.exp(-0.25)) + math.log(1 + math.exp(2.0)) + 20 * math.log(2)) / 3
    assert float(constrained_sft_loss(logp, ref, betas)) == pytest.approx(hand, rel=1e-6)
    assert hand == pytest.approx((2.303756 + 2.126928 + 13.862944) / 3, rel=1e-6)


def test_constrained_loss_small_beta_is_cross_entropy_gradient():
    logp = torch.tensor([-1.0, -3.0], requires_grad=True)
    constrained_sft_loss(logp, torch.tensor([-2.0, -0.1]), torch.tensor([1e-4, 1e-4])).backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-0.5, -0.5]), rtol=1e-3, atol=1e-4)


def test_constrained_loss_large_beta_stops_pushing_past_the_seed():
    logp = torch.tensor([0.0], requires_grad=True)  # already above the reference
    constrained_sft_loss(logp, torch.tensor([-5.0]), torch.tensor([2.0])).backward()
    assert abs(float(logp.grad)) < 1e-3


def test_default_beta_schedule_is_the_reference_one():
    cfg = TrainConfig(model="m", data="d", out="o")
    assert cfg.betas(7) == pytest.approx([0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.1])
    positions = torch.tensor([1, 2, 5, 6, 40])
    assert beta_tensor(positions, cfg.betas(5), cfg.beta_base).tolist() == pytest.approx([0.5, 2, 2, 0.1, 0.1])


def test_beta_schedule_is_configurable():
    cfg = TrainConfig(model="m", data="d", out="o", beta_base=0.2, beta_first_multiplier=10,
                      beta_first5_multiplier=3)
    assert cfg.betas(6) == pytest.approx([2.0, 0.6, 0.6, 0.6, 0.6, 0.2])
    cfg = TrainConfig(model="m", data="d", out="o", beta_schedule=[1.0, 0.7])
    assert cfg.betas(4) == pytest.approx([1.0, 0.7, 0.1, 0.1])
