"""Per-position KL divergence between the seed and a fine-tuned model (the paper's Figure 3).

For harmful prompts teacher-forced on harmful answers, at each answer position t = 1..k we compare
the two models' next-token distributions there:

    KL_t = mean over pairs of  sum_v p_seed(v | x, y_<t) * (log p_seed(v | x, y_<t) - log p_model(v | x, y_<t))

Shallow alignment lives in the first few positions, so vanilla fine-tuning shows a large KL at t = 1..3
while LookAhead Tuning keeps it small. The teacher-forcing helper here is shared with the forecast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from .stats import mean_present

Pair = tuple[Any, str]  # (prompt as text or messages, answer text)
KEEP_BYTES = 1 << 30  # the seed's logits are kept for many models up to this size (110 pairs x 8 x 49,152: 173 MB)


def as_pair(example: Any) -> Pair:
    """``(prompt, answer)`` from a chat list ``[user, assistant]``, a 2-tuple or a prompt/completion row."""
    if isinstance(example, (list, tuple)) and len(example) == 2 and isinstance(example[1], str):
        return example[0], example[1]
    if isinstance(example, list) and example and isinstance(example[0], dict):
        if example[-1].get("role") != "assistant":
            raise UserError("a chat list must end with the assistant's (harmful) answer")
        return example[:-1], str(example[-1].get("content", ""))
    if isinstance(example, dict) and "prompt" in example and "completion" in example:
        return example["prompt"], str(example["completion"])
    raise UserError(f"cannot read a (prompt, answer) pair from {str(example)[:80]!r}")


def encode_pairs(tokenizer, pairs: Sequence[Pair], positions: int, *, system_prompt: str | None = None
                 ) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, first answer ids)`` per pair, tokenized exactly as training does
    (:func:`chat.encode_example`: prompt and answer separately), the answer cut to ``positions``."""
    from ..chat import encode_example

    out = []
    for prompt, answer in pairs:
        enc = encode_example(tokenizer, prompt, answer, system_prompt=system_prompt)
        n_prompt = sum(1 for label in enc["labels"] if label == -100)
        ids = enc["input_ids"]
        out.append((ids[:n_prompt], ids[n_prompt:n_prompt + positions]))
    return out


def answer_logits(model, batch: Sequence[tuple[list[int], list[int]]], positions: int, pad_id: int):
    """Teacher-forced logits at answer positions 1..``positions`` for a batch of encoded pairs.

    Returns ``(logits [B, P, V] float32, targets [B, P], mask [B, P])``. Rows are left-padded so
    every row's answer ends at the same column and only the last P+1 positions need logits.
    """
    import torch

    P = positions
    seqs = [p + a for p, a in batch]
    width = max(max(len(s) for s in seqs), P + 1)  # at least P + 1 columns to keep
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    targets = torch.zeros((len(seqs), P), dtype=torch.long)
    mask = torch.zeros((len(seqs), P), dtype=torch.bool)
    for i, ((_, ans), seq) in enumerate(zip(batch, seqs, strict=True)):
        input_ids[i, width - len(seq):] = torch.tensor(seq)
        attn[i, width - len(seq):] = 1
        a = len(ans)
        targets[i, :a] = torch.tensor(ans, dtype=torch.long)
        mask[i, :a] = True
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    device = next(model.parameters()).device
    kwargs = {"input_ids": input_ids.to(device), "attention_mask": attn.to(device),
              "position_ids": position_ids.to(device)}
    with torch.no_grad():
        try:
            logits = model(**kwargs, logits_to_keep=P + 1).logits
        except TypeError:  # a model class without logits_to_keep
            logits = model(**kwargs).logits[:, -(P + 1):]
    logits = logits[:, :-1].float().cpu()  # column j predicts the token at column j + 1
    # Row i's answer (length a) occupies the last a columns: answer token t sits at kept column P - a + t.
    out = torch.zeros((len(seqs), P, logits.shape[-1]), dtype=torch.float32)
    for i, (_, ans) in enumerate(batch):
        a = len(ans)
        if a:
            out[i, :a] = logits[i, P - a:P]
    return out, targets, mask


def kl_divergence(p_logits, q_logits):
    """KL(p || q) over the last axis from unnormalised logits (natural log, nats)."""
    import torch.nn.functional as F

    logp = F.log_softmax(p_logits.float(), dim=-1)
    logq = F.log_softmax(q_logits.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


class SeedLogits:
    """The seed's teacher-forced logits on one list of pairs, batch by batch as :func:`per_position_kl`
    forms them: computed once and compared with many models (a study's cells), bit for bit what each
    call would compute again. ``positions x vocabulary`` float32 per pair stay in memory."""

    def __init__(self, seed_model, tokenizer, pairs: Sequence[Any], positions: int = 8, *, batch_size: int = 8,
                 system_prompt: str | None = None):
        self.encoded, self.pad_id = _encode(tokenizer, pairs, positions, system_prompt)
        self.positions, self.batch_size = positions, batch_size
        self.batches = [answer_logits(seed_model, self.encoded[start:start + batch_size], positions, self.pad_id)[0]
                        for start in range(0, len(self.encoded), batch_size)]

    @classmethod
    def if_small(cls, seed_model, tokenizer, pairs: Sequence[Any], positions: int = 8, *,
                 budget: int = KEEP_BYTES, **options: Any) -> SeedLogits | None:
        """The seed's logits when they fit in ``budget`` bytes, else ``None`` (computed per call)."""
        vocab = getattr(getattr(seed_model, "config", None), "vocab_size", None)
        if not vocab or 4 * len(pairs) * positions * vocab > budget:
            return None
        return cls(seed_model, tokenizer, pairs, positions, **options)


def _encode(tokenizer, pairs: Sequence[Any], positions: int, system_prompt: str | None):
    if positions < 1:
        raise UserError(f"--positions must be >= 1, got {positions}")
    encoded = encode_pairs(tokenizer, [as_pair(p) for p in pairs], positions, system_prompt=system_prompt)
    if not encoded:
        raise UserError("no (prompt, answer) pairs to compare")
    return encoded, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def per_position_kl(
    seed_model,
    model,
    tokenizer,
    pairs: Sequence[Any],
    positions: int = 8,
    *,
    batch_size: int = 8,
    system_prompt: str | None = None,
    progress: bool = False,
    reference: SeedLogits | None = None,
) -> list[float]:
    """Mean KL(seed || model) at answer positions 1..``positions`` (pairs shorter than t skip t).

    ``pairs`` are chat lists ``[user, assistant]``, ``(prompt, answer)`` tuples or prompt/completion
    rows. A position no pair reaches is NaN. ``reference`` holds the seed's logits on these pairs,
    computed once (:class:`SeedLogits`); without it they are computed here, batch by batch.
    """
    import torch
    from tqdm.auto import tqdm

    encoded, pad_id = _encode(tokenizer, pairs, positions, system_prompt)
    if reference is not None and (reference.encoded, reference.positions, reference.batch_size) != (
            encoded, positions, batch_size):
        raise UserError("the seed's stored logits belong to other pairs or settings than these")
    total = torch.zeros(positions, dtype=torch.float64)
    count = torch.zeros(positions, dtype=torch.float64)
    for index, start in enumerate(tqdm(range(0, len(encoded), batch_size), desc="KL", disable=not progress)):
        batch = encoded[start:start + batch_size]
        model_logits, _, mask = answer_logits(model, batch, positions, pad_id)
        seed_logits = (reference.batches[index] if reference is not None
                       else answer_logits(seed_model, batch, positions, pad_id)[0])
        kl = kl_divergence(seed_logits, model_logits).clamp(min=0.0)  # rounding can give -1e-9
        total += (kl * mask).sum(0).double()
        count += mask.sum(0).double()
    return [float(t / c) if c > 0 else math.nan for t, c in zip(total.tolist(), count.tolist(), strict=True)]


def plot_kl(results: dict[str, list[float]], path: str | Path, *, title: str | None = None) -> None:
    """Grouped bars: one group per answer position, one bar per model (like the paper's Figure 3)."""
    from .plots import grouped_bars

    grouped_bars(results, path, xlabel="answer position", ylabel="KL(seed || model) [nats]",
                 title=title or "Per-token KL divergence from the seed model on harmful answers")


def kl_report(seed_model, models: dict[str, Any], tokenizer, pairs: Sequence[Any], *, positions: int = 8,
              out_dir: str | Path, batch_size: int = 8, system_prompt: str | None = None,
              progress: bool = True, extra: dict | None = None) -> dict[str, Any]:
    """Per-position KL for several models against one seed; writes ``kl.json`` and ``kl.png``."""
    from ..io import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = SeedLogits.if_small(seed_model, tokenizer, pairs, positions, batch_size=batch_size,
                                    system_prompt=system_prompt) if len(models) > 1 else None
    results = {name: per_position_kl(seed_model, m, tokenizer, pairs, positions, batch_size=batch_size,
                                     system_prompt=system_prompt, progress=progress, reference=reference)
               for name, m in models.items()}
    report = {
        "positions": list(range(1, positions + 1)),
        "n_pairs": len(pairs),
        "kl": {name: [None if math.isnan(v) else v for v in vals] for name, vals in results.items()},
        "mean_first_3": {name: mean_present(vals[:3]) for name, vals in results.items()},
        "mean_all": {name: mean_present(vals) for name, vals in results.items()},
        **(extra or {}),
    }
    atomic_write_json(out / "kl.json", report)
    plot_kl(results, out / "kl.png")
    return report

