"""Safety-drift forecast: the seed model's loss at the first answer positions, before any training.

Fine-tuning erodes shallow alignment through the gradients on the first answer tokens, and those
gradients scale with the loss there. So before spending a GPU-hour we can measure, on the task data
as each method would present it, the seed's mean per-token loss at answer positions 1..k:

- ``vanilla``: the data as is. A high loss at positions 1-3 means training will move the opening
  distribution a lot — the tokens where refusals live — so expect a safety drop.
- ``lookahead-real``: the prompt carries the first m answer tokens; the model can copy them, so the
  early loss should fall (how much shows how well this model copies from its prompt).
- ``lookahead-virtual``: the prompt names a fixed prefix P and the trained answer starts with P.
  **Position 1 is the first token of the trained answer, i.e. of P** (not of the original answer):
  those are the tokens whose gradients reach the opening distribution.

Reading it: compare methods column by column; the method with the lowest loss at positions 1-3 is
the one expected to keep the most safety. It is a forecast of *pressure*, not of the safe rate:
check it against a real run (``eval safety``) before trusting it for a new model or task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .. import markup
from ..errors import UserError
from ..methods import PAPER_FORECAST
from ..train.methods import Recipe
from .kl import answer_logits, encode_pairs
from .stats import mean_present

# The methods `forecast` measures when none are named: the three the paper compares in its figures.
DEFAULT_METHODS = PAPER_FORECAST


class MethodForecast(BaseModel):
    """One method's forecast: the seed's loss per answer position and its means."""

    model_config = ConfigDict(extra="allow", strict=True)
    per_position: list[float | None] | None = None
    mean_first_3: float | None = None
    mean_first_k: float | None = None


class StoredForecast(BaseModel):
    """A stored forecast (``TASK--forecast.json``): the seed's per-position loss per method."""

    model_config = ConfigDict(extra="allow", strict=True)
    fingerprint: str | None = None
    methods: dict[str, MethodForecast] = {}



def method_settings(method: str, *, m: int = 6, prefix: str | None = None, connector: str | None = None) -> Recipe:
    """How ``method`` makes its training data with these preview parameters, as ``train`` would."""
    from ..methods import get_method

    if not get_method(method).forecastable:
        from ..methods import METHODS

        usable = ", ".join(n for n, spec in METHODS.items() if spec.forecastable)
        raise UserError(f"the forecast measures the seed's cross-entropy on the data as trained, which does not "
                        f"describe '{method}' (another loss or rewritten answers); it takes {usable}")
    values: dict[str, Any] = {"method": method, "m": m}
    if prefix is not None:
        values["prefix"] = prefix
    if connector is not None:
        values["connector"] = connector
    return Recipe.of(values)


def method_pairs(rows: Sequence[dict], method: str, tokenizer, *, m: int = 6, prefix: str | None = None,
                 connector: str | None = None, settings=None) -> list[tuple[Any, str]]:
    """The ``(prompt, trained answer)`` pairs a method would train on: ``method_examples``, the pipeline
    training uses (safety mix and preview applied). ``settings`` (the method's ``Recipe`` in a run) replaces
    the method's defaults with ``m``, ``prefix`` and ``connector``."""
    from ..train.methods import as_example, method_examples

    if settings is None:
        settings = method_settings(method, m=m, prefix=prefix, connector=connector)
    examples = method_examples([as_example(r) for r in rows], settings, tokenizer)
    return [(ex["prompt"], ex["completion"]) for ex in examples]


def per_position_loss(model, tokenizer, pairs: Sequence[tuple[Any, str]], k: int = 8, *, batch_size: int = 8,
                      system_prompt: str | None = None) -> list[float]:
    """Mean cross-entropy (nats) of the answer token at positions 1..k, teacher-forced."""
    import torch
    import torch.nn.functional as F

    encoded = encode_pairs(tokenizer, pairs, k, system_prompt=system_prompt)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total = torch.zeros(k, dtype=torch.float64)
    count = torch.zeros(k, dtype=torch.float64)
    for start in range(0, len(encoded), batch_size):
        logits, targets, mask = answer_logits(model, encoded[start:start + batch_size], k, pad_id)
        nll = -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        total += (nll * mask).sum(0).double()
        count += mask.sum(0).double()
    return [float(t / c) if c > 0 else math.nan for t, c in zip(total.tolist(), count.tolist(), strict=True)]


def forecast_loss(model, tokenizer, rows: Sequence[dict], methods: Sequence[str] = DEFAULT_METHODS, k: int = 8, *,
                  m: int = 6, prefix: str | None = None, connector: str | None = None, batch_size: int = 8,
                  system_prompt: str | None = None, progress: bool = False,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-position seed loss for each method on ``rows`` (``{"prompt", "completion"}``).

    ``settings`` maps a method to its data recipe (``train.methods.Recipe``, a run's cells'); methods not in it use
    their registry defaults with ``m``, ``prefix`` and ``connector``.

    Returns ``{"k", "n", "methods": {name: {"per_position": [...], "mean_first_3", "mean_first_k"}},
    "ranking", "settings"}``; ``ranking`` orders methods by ``mean_first_3`` (lowest first = least
    expected drift).
    """
    from tqdm.auto import tqdm

    if not rows:
        raise UserError("no task rows to forecast on")
    if k < 1:
        raise UserError(f"--positions must be >= 1, got {k}")
    results = {}
    for method in tqdm(list(methods), desc="forecast", disable=not progress):
        pairs = method_pairs(rows, method, tokenizer, m=m, prefix=prefix, connector=connector,
                             settings=(settings or {}).get(method))
        losses = per_position_loss(model, tokenizer, pairs, k, batch_size=batch_size, system_prompt=system_prompt)
        results[method] = {
            "per_position": [None if math.isnan(v) else v for v in losses],
            "mean_first_3": mean_present(losses[:3]),
            "mean_first_k": mean_present(losses),
        }
    ranking = sorted(results, key=lambda name: math.inf if results[name]["mean_first_3"] is None
                     else results[name]["mean_first_3"])
    from .. import preview

    return {
        "k": k,
        "n": len(rows),
        "methods": results,
        "ranking": ranking,
        "settings": {"m": m, "prefix": preview.DEFAULT_PREFIX if prefix is None else prefix,
                     "connector": preview.DEFAULT_CONNECTOR if connector is None else connector,
                     "position_1": "first token of the trained answer (for virtual mode: of the prefix)"},
    }



GUIDE = """\
How to read this: each cell is the seed model's mean loss (nats) on the answer token at that
position, on the task data as the method would present it in training. Training gradients on the
first answer tokens are what erode shallow safety alignment, and they grow with this loss. The
method with the lowest loss at positions 1-3 is expected to keep the most safety; a method whose
early losses match vanilla's offers no protection. For lookahead-virtual, position 1 is the first
token of the trained answer, i.e. of the prefix. This forecasts training pressure, not a safe
rate: confirm with `lookahead-tuning eval safety` after a real run.
"""


def forecast_markdown(result: dict[str, Any]) -> str:
    """The forecast as a markdown table plus the reading guide."""
    k = result["k"]
    head = "| method | " + " | ".join(str(i) for i in range(1, k + 1)) + " | mean 1-3 | mean 1-k |"
    sep = "|---|" + "---:|" * (k + 2)
    lines = [f"# Safety-drift forecast ({result['n']} task examples)", "", head, sep]

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for name, res in result["methods"].items():
        cells = " | ".join(fmt(v) for v in res["per_position"])
        lines.append(f"| {markup.text(name)} | {cells} | {fmt(res['mean_first_3'])} | {fmt(res['mean_first_k'])} |")
    lines += ["", f"Lowest early loss first: {', '.join(markup.text(n) for n in result['ranking'])}.", "", GUIDE]
    return "\n".join(lines)


def write_forecast(result: dict[str, Any], out_dir: str | Path) -> None:
    """``forecast.json``, ``forecast.md`` and ``forecast.png`` under ``out_dir``."""
    from ..io import atomic_write_json, atomic_write_text
    from .plots import position_lines

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "forecast.json", result)
    atomic_write_text(out / "forecast.md", forecast_markdown(result))
    series = {name: [math.nan if v is None else v for v in res["per_position"]]
              for name, res in result["methods"].items()}
    position_lines(series, out / "forecast.png", xlabel="answer position (1 = first trained answer token)",
                   ylabel="seed loss [nats]", title="Seed loss at early answer positions, by method")
