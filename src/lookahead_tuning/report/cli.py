"""``lookahead-tuning report RUN_DIR``: the report stage's verb. It reads a run's ``results.json`` and never
runs a model (``study-summary``, which aggregates cell files first, is experiment/cli.py's)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from ..analyse.forecast import StoredForecast
from ..errors import UserError
from ..io import read_json
from ..methods import sweep_axis
from ..validate import check_document


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _JudgeRate(_Open):
    rate: float | None = None
    ci95: list[float] | None = None


class _Agreement(_Open):
    """One metric's judge agreement in a row: each judge's rate, each pair's flips and kappa."""

    judges: dict[str, _JudgeRate] = {}
    pairs: dict[str, dict[str, int | float | None]] = {}


class _Flip(_Open):
    metric: str
    methods: Annotated[list[str], Field(min_length=2, max_length=2)]
    judges: Annotated[list[str], Field(min_length=2, max_length=2)]
    rates: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]]

    @model_validator(mode="after")
    def _both_judges(self) -> _Flip:
        if set(self.judges) - set(self.rates):
            raise ValueError("a judge order flip needs the rates of both judges")
        return self


class _Depths(_Open):
    """A row's prefill-depth curve: the k values and, per k, the mean safe rate and its interval."""

    k: list[int]
    mean: list[float | None]
    ci95: list[Annotated[list[float], Field(min_length=2, max_length=2)] | None]

    @model_validator(mode="after")
    def _aligned(self) -> _Depths:
        if not len(self.k) == len(self.mean) == len(self.ci95):
            raise ValueError("k, mean and ci95 must have one entry per depth")
        return self


class _Row(_Open):
    """A table row of ``results.json`` (a method's numbers over its seeds), as the report reads it."""

    method: str | None = None
    model: str | None = None
    interval: str | None = None
    n_seeds: int | None = None
    seeds: list[int] | None = None
    utility: float | None = None
    rsr: float | None = None
    jsr: float | None = None
    overrefusal: float | None = None
    ci95: dict[str, list[float] | None] | None = None
    per_seed: dict[str, list[float | None]] | None = None
    kl: list[float | None] | None = None
    depths: _Depths | None = None
    train_seconds: float | None = None
    tokens_trained: float | None = None
    answer_tokens_trained: float | None = None
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None
    instruments: dict[str, dict[str, float | None] | None] | None = None
    agreement: dict[str, _Agreement] | None = None
    by_task: dict[str, _Row] | None = None


class _Task(_Open):
    name: str
    kind: str | None = None


class _Evaluation(_Open):
    judge: str | None = None
    scorer: str | None = None
    prefill_tokens: int | None = None
    max_new_tokens: int | None = None
    n_safety: int | None = None


class _Machine(_Open):
    cpu: str | None = None
    cpu_features: list[str] | None = None
    torch: str | None = None
    cpu_kernels: str | None = None
    cuda_device: str | None = None


class _Commands(_Open):
    ran: str | None = None
    rerun: str | None = None


def _sweep_name(name: str) -> str:
    """A sweep row is named ``METHOD@KEY=VALUE`` (a numeric axis' value a number of its type: m whole)."""
    method, at, point = name.partition("@")
    key, eq, value = point.partition("=")
    if not (method and at and key and eq) or not _point_value(key, value):
        raise ValueError(f"a sweep row is named METHOD@KEY=VALUE (m a whole number), not {name!r}")
    return name


def _point_value(key: str, value: str) -> bool:
    axis = sweep_axis(key)
    if axis is None or not axis.numeric:
        return True
    try:  # as a row name writes it: f"{value}" of a value of the axis' type
        return str(TypeAdapter(axis.values).validate_python(axis.parse(value))) == value
    except ValueError:  # pydantic's ValidationError is one
        return False


class _Results(_Open):
    """The keys of a run's ``results.json`` the report reads, with their types."""

    name: str | None = None
    primary_task: str | None = None
    models: dict[str, _Row]
    tasks: list[_Task] | None = None
    seeds: list[int] | None = None
    sweeps: dict[Annotated[str, AfterValidator(_sweep_name)], _Row] | None = None
    sweep_base: dict[str, dict[str, Any]] | None = None
    judge_order_flips: list[_Flip] | None = None
    forecast: dict[str, StoredForecast] | None = None
    evaluation: _Evaluation | None = None
    seed_model: str | None = None
    seed_weights: str | None = None
    machines: list[_Machine] | None = None
    environment: dict[str, str | None] | None = None
    commands: _Commands | None = None
    config: str | None = None


def check_results(results: dict, path: str) -> None:
    """The parts of a ``results.json`` the report reads, so a hand-edited or foreign file is a
    one-line error naming the key rather than a crash half-way through the figures."""
    if isinstance(results, dict) and not isinstance(results.get("models"), dict):
        raise UserError("key 'models': expected an object of table rows (is it a run's results.json?)", path=path)
    check_document(results, path, _Results, "a run's results")


def _report(args: argparse.Namespace) -> int:
    from ..provenance import output_lock

    with output_lock(args.run_dir, "report", wait=args.wait):  # a run or rejudge rewriting it waits, or this does
        return _render(Path(args.run_dir))


def _render(run_dir: Path) -> int:
    from ..io import atomic_write_text
    from .writer import draw_figures, render_report

    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError("no results.json here (is it a run folder?)", path=str(run_dir))
    results = read_json(path, "a JSON object")
    check_results(results, str(path))
    atomic_write_text(run_dir / "report.md", render_report(results, draw_figures(results, run_dir)))
    print(run_dir / "report.md")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``report``."""
    r = subparsers.add_parser("report", help="re-render report.md and figures from a run's results.json")
    r.add_argument("run_dir")
    from ..provenance import add_lock_arguments

    add_lock_arguments(r)
    r.set_defaults(func=_report)
