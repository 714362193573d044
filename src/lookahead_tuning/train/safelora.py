"""SafeLoRA: project a finished LoRA update onto the seed's alignment subspace, layer by layer.

Hsu et al., "Safe LoRA: the Silver Lining of Reducing Safety Risks when Finetuning Large Language
Models" (NeurIPS 2024; docs/method.md, section 3). For each adapted layer i:

    V_i = W_i(aligned seed) - W_i(base before alignment)        the alignment matrix
    C_i = V_i V_iᵀ / ‖V_i‖_F                                     its projection (the paper's form)
    ΔW_i = s · B_i A_i                                           the LoRA update (s = alpha / r)
    if cos(ΔW_i, C_i ΔW_i) < τ:  ΔW_i ← C_i ΔW_i

C_i ΔW_i = s · (C_i B_i) A_i, so the projection is exact inside LoRA's parametrisation: B_i ← C_i B_i.
It needs no training data and no gradient; it runs after fine-tuning, before the weights are saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

PEFT_PREFIX = "base_model.model."  # what PEFT puts before the wrapped model's own module names


@dataclass(frozen=True)
class LayerDecision:
    """What SafeLoRA did with one adapted layer (recorded in the run's summary)."""

    name: str
    similarity: float | None  # cos(ΔW, CΔW); None where it is undefined (no update or no alignment change)
    projected: bool


def alignment_projection(aligned: torch.Tensor, base: torch.Tensor) -> torch.Tensor | None:
    """``C = V Vᵀ / ‖V‖_F`` with ``V = aligned - base`` (both ``out × in``); ``None`` when alignment left
    the layer unchanged (there is no alignment direction to project onto)."""
    v = aligned.detach().double() - base.detach().double()
    norm = torch.linalg.matrix_norm(v)
    if norm == 0:
        return None
    return (v @ v.T) / norm


def similarity(delta: torch.Tensor, projected: torch.Tensor) -> float | None:
    """Cosine of the update and its projection, as vectors (Frobenius): ``None`` for no update, 0 for an
    update the projection removes entirely (it lies outside the alignment subspace)."""
    nd, np_ = torch.linalg.matrix_norm(delta), torch.linalg.matrix_norm(projected)
    if nd == 0:
        return None
    if np_ == 0:
        return 0.0
    return float((delta * projected).sum() / (nd * np_))


def project_lora(model: torch.nn.Module, base_weights: Mapping[str, torch.Tensor], threshold: float,
                 adapter: str = "default") -> list[LayerDecision]:
    """Apply SafeLoRA in place to every LoRA layer of the PEFT ``model`` (whose frozen weights are the
    aligned seed's) against ``base_weights`` (the pre-alignment model's ``state_dict``).

    A layer whose similarity is undefined is left as it is and recorded with ``similarity=None``."""
    decisions = []
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if lora_a is None or lora_b is None or adapter not in lora_a:
            continue
        own = name.removeprefix(PEFT_PREFIX)
        key = f"{own}.weight"
        if key not in base_weights:
            raise KeyError(f"the base model has no weight '{key}' for the adapted layer '{own}'")
        aligned = module.base_layer.weight
        c = alignment_projection(aligned, base_weights[key].to(aligned.device))
        a, b = lora_a[adapter].weight, lora_b[adapter].weight
        delta = b.detach().double() @ a.detach().double()  # the scale s cancels in the cosine
        sim = None if c is None else similarity(delta, c @ delta)
        projected = sim is not None and sim < threshold
        if projected:
            with torch.no_grad():
                b.copy_((c @ b.detach().double()).to(b.dtype))
        decisions.append(LayerDecision(own, None if sim is None else round(sim, 6), projected))
    if not decisions:
        raise ValueError("SafeLoRA found no LoRA layer to project")
    return decisions


def summary(decisions: list[LayerDecision], threshold: float) -> dict:
    """The record a run keeps: the threshold, how many layers were projected, and each layer's decision."""
    return {"threshold": threshold, "layers": len(decisions),
            "projected": sum(d.projected for d in decisions),
            "decisions": [asdict(d) for d in decisions]}
