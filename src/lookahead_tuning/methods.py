"""The methods, one registry: each is a named choice of five independent parts (docs/method.md, section 3).

- ``preview``: none | real | virtual — the LookAhead data transform of the training prompts;
- ``loss``: cross-entropy | constrained — Constrained SFT's token-wise loss against the frozen seed;
- ``rewrite``: none | sdft — the seed rewrites the gold answers first (SDFT);
- ``safety_share``: the share of built-in (harmful request, refusal) pairs mixed into the task rows;
- ``eval_system_prompt``: a system prompt the model is *evaluated* with (PTST: trained without it).

Training (``train/``), the forecast, the dry run, the CLI choices, the config schema and the report's
tables all read this registry; adding a method is one entry here plus its test. A config may still set
any part by hand (``method: lookahead-real`` with ``loss: constrained``): keys set explicitly win over
the method's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import UserError

# PTST's safety system prompt, in the project's own words (docs/method.md, section 3: PTST).
SAFETY_SYSTEM_PROMPT = (
    "You are a helpful, honest and harmless assistant. Help with every request you safely can, but "
    "refuse any request that could cause harm to people or property: crimes, violence, weapons, "
    "self-harm, malware, fraud, harassment, hate, sexual content involving minors or privacy "
    "violations. When you refuse, say so briefly and politely."
)


@dataclass(frozen=True)
class Method:
    """One named method: the five parts above, and what the report calls it."""

    name: str
    label: str
    about: str
    preview: str = "none"
    loss: str = "cross-entropy"
    rewrite: str = "none"
    safety_share: float = 0.0
    eval_system_prompt: str | None = None

    def parts(self) -> dict[str, object]:
        """The training keys this method stands for (filled in where a config leaves them unset)."""
        return {"preview": self.preview, "loss": self.loss, "rewrite": self.rewrite,
                "safety_share": self.safety_share}

    @property
    def forecastable(self) -> bool:
        """Whether the forecast (the seed's cross-entropy on the data as trained) describes its training
        pressure: not for another loss, nor for answers that only exist after the seed rewrote them."""
        return self.loss == "cross-entropy" and self.rewrite == "none"


MIX_SHARE = 0.05  # Bianchi et al. 2024 mix a few percent; the built-in default

_REGISTRY = (
    Method("vanilla", "vanilla", "cross-entropy on the task answers"),
    Method("lookahead-real", "LookAhead real", "the first m answer tokens previewed in the training prompt",
           preview="real"),
    Method("lookahead-virtual", "LookAhead virtual", "a fixed prefix in the training prompt and answer",
           preview="virtual"),
    Method("constrained-sft", "Constrained SFT", "answer tokens held near the seed, strongly the first ones",
           loss="constrained"),
    Method("sdft", "SDFT", "the seed rewrites the gold answers in its own words first", rewrite="sdft"),
    Method("safety-mix", "safety mix", "a few percent of refusal pairs mixed into the task data",
           safety_share=MIX_SHARE),
    Method("ptst", "PTST", "trained without a safety system prompt, evaluated with one",
           eval_system_prompt=SAFETY_SYSTEM_PROMPT),
    Method("lookahead-real-constrained", "LookAhead real + CSFT", "the real preview with the constrained loss",
           preview="real", loss="constrained"),
    Method("lookahead-virtual-constrained", "LookAhead virtual + CSFT",
           "the virtual preview with the constrained loss", preview="virtual", loss="constrained"),
    Method("lookahead-real-mix", "LookAhead real + mix", "the real preview with safety-data mixing",
           preview="real", safety_share=MIX_SHARE),
    Method("lookahead-virtual-mix", "LookAhead virtual + mix", "the virtual preview with safety-data mixing",
           preview="virtual", safety_share=MIX_SHARE),
)
METHODS: dict[str, Method] = {m.name: m for m in _REGISTRY}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
# The names as a type, for the config schemas (pydantic lists them in its error message).
MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]
# The untuned seed model is a row of every table too; it is not a method one trains with.
SEED_ROW = "seed"


def get_method(name: str) -> Method:
    """The registered method ``name``, or a one-line error listing the names."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method '{name}'; expected one of {', '.join(METHOD_NAMES)}") from None


def row_rank(name: str) -> int:
    """Position of a table row (the seed first, then the registry's order; unknown names last)."""
    order = (SEED_ROW, *METHOD_NAMES)
    return order.index(name) if name in order else len(order)
