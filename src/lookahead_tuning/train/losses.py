"""The maths of training: answer-token log-probabilities, cross-entropy and the Constrained-SFT loss.

Everything works on the *answer positions* of a batch only (labels != -100 after the usual one-token
shift). The model's vocabulary projection (``lm_head``: hidden x vocab, the largest matmul of a small
model) is applied to those positions alone instead of to every prompt and padding position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class AnswerTokens:
    """Per answer token of a batch, flattened in (row, position) order."""

    logp: torch.Tensor  # log pi(y_t | x, y_<t), shape [N]
    position: torch.Tensor  # t, the 1-based position of the token within its answer, shape [N]


def answer_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the loss applies after the causal shift.

    Returns ``(mask, targets, position)``: ``mask[b, i]`` is true when hidden state ``i`` predicts an
    answer token ``targets[b, i] = labels[b, i + 1]``; ``position`` is that token's 1-based index within
    its answer span (counting restarts after every masked gap, so multi-turn labels work too).
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE
    # 1-based index within each contiguous run of answer tokens.
    counts = mask.long().cumsum(dim=1)
    starts = torch.where(mask, torch.zeros_like(counts), counts)  # count seen before each gap
    run_base = torch.cummax(starts, dim=1).values
    position = counts - run_base
    return mask, targets, position


def select_logprobs(hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor) -> AnswerTokens:
    """Project only the answer positions of ``hidden`` ([B, T, H], final-norm output) to the vocabulary."""
    mask, targets, position = answer_positions(labels)
    h = hidden[:, :-1][mask]  # [N, H]
    logits = lm_head(h).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    return AnswerTokens(logp=logp, position=position[mask])


def full_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> AnswerTokens:
    """The same as :func:`select_logprobs` from full logits [B, T, V] (used when answer-only projection is off)."""
    mask, targets, position = answer_positions(labels)
    logp = torch.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    logp = logp.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    return AnswerTokens(logp=logp, position=position[mask])


def answer_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor], *,
                    answer_only: bool = True) -> AnswerTokens:
    """Run ``model`` (plain, PEFT- or DDP-wrapped) on a batch and return the answer-token log-probs.

    With ``answer_only`` the model is called through its own ``forward`` (so DDP/DeepSpeed hooks run)
    with ``logits_to_keep=1`` and ``output_hidden_states=True``; the last hidden state (after the final
    norm) is then projected at answer positions only. With PEFT, that forward already runs the
    injected LoRA layers.
    """
    labels = batch["labels"]
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    if not answer_only:
        return full_logprobs(model(**kwargs).logits, labels)
    out = model(**kwargs, logits_to_keep=1, output_hidden_states=True)
    return select_logprobs(out.hidden_states[-1], output_head(model), labels)


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The vocabulary projection of a plain, PEFT- or DDP-wrapped causal LM."""
    inner = model
    while hasattr(inner, "module") and not hasattr(inner, "get_output_embeddings"):
        inner = inner.module  # DDP / DeepSpeed engine
    head = inner.get_output_embeddings()
    if head is None:
        raise RuntimeError(f"{type(inner).__name__} has no output embeddings; set answer_only_logits: false")
    return head


def cross_entropy(tokens: AnswerTokens) -> torch.Tensor:
    """Mean negative log-likelihood over the answer tokens (vanilla SFT)."""
    return -tokens.logp.mean()


def constrained_sft_loss(logp: torch.Tensor, ref_logp: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """Token-wise constrained SFT (Qi et al. 2024; docs/method.md, section 3).

    loss = mean_t (2 / beta_t) * softplus(-beta_t * delta_t),  delta_t = logp_t - ref_logp_t.

    As beta_t -> 0 this tends to -delta_t + const (cross-entropy); a large beta_t makes any move of
    token t away from the seed expensive while gains beyond the seed are barely rewarded.
    """
    delta = logp - ref_logp.detach()
    return ((2.0 / betas) * F.softplus(-betas * delta)).mean()


def beta_tensor(positions: torch.Tensor, schedule: list[float], base: float) -> torch.Tensor:
    """beta_t for each token's answer position, from a schedule for t = 1..len(schedule) and ``base`` after."""
    table = torch.tensor(list(schedule) + [base], dtype=torch.float32, device=positions.device)
    index = (positions - 1).clamp(min=0, max=len(schedule))
    return table[index]


def position_loss_sums(tokens: AnswerTokens, positions: int = 8) -> tuple[list[float], list[int]]:
    """Sum and count of -logp at answer positions 1..``positions`` (the quantity LookAhead keeps small)."""
    sums, counts = [], []
    nll = -tokens.logp.detach()
    for t in range(1, positions + 1):
        sel = tokens.position == t
        sums.append(float(nll[sel].sum()))
        counts.append(int(sel.sum()))
    return sums, counts
