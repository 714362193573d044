"""A finished cell's result, read one way, and the one aggregation over training seeds.

``lookahead-tuning run`` writes one JSON per finished cell (``cells/<cell_id>.json``); everything that
reads those files — the run's ``results.json``, ``study-summary``, ``study/lr_rule.py``, ``rejudge`` —
reads them through :class:`CellResult`, and everything that averages cells over training seeds does so
with :func:`over_seeds`. ``report/`` never sees a cell: it renders the documents built from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..analyse.forecast import StoredForecast
from ..errors import UserError
from ..io import BadJSON, parse_json, read_json
from ..validate import check_document, explain

# Which number of a metric's block is the metric: rates for the safety metrics, the score for utility.
VALUE_KEY = {"rsr": "rate", "jsr": "rate", "overrefusal": "rate", "utility": "score"}


class _Block(BaseModel):
    """A metric as a cell stores it: a rate or a score in [0, 1], counts and the 95% interval."""

    model_config = ConfigDict(extra="allow", strict=True)
    rate: float | None = Field(default=None, ge=0, le=1)
    score: float | None = Field(default=None, ge=0, le=1)
    k: int | None = Field(default=None, ge=0)
    n: int | None = Field(default=None, ge=0)
    ci95: list[float] | None = Field(default=None, min_length=2, max_length=2)


class _Cost(BaseModel):
    """A trained cell's cost block (a seed cell has none)."""

    model_config = ConfigDict(extra="allow", strict=True)
    train_seconds: float = Field(ge=0)
    tokens_seen: dict[str, int | None] | None = None
    peak_rss_mb: float | None = None
    bf16: bool | None = None


class _DepthPoint(BaseModel):
    """One point of a cell's prefill-depth curve (``analyse.safety.depth_point``)."""

    model_config = ConfigDict(extra="allow", strict=True)
    k: int = Field(ge=0)
    safe_rate: float | None = Field(default=None, ge=0, le=1)
    ci95: list[float] | None = Field(default=None, min_length=2, max_length=2)
    n: int | None = Field(default=None, ge=0)


class _StoredCell(BaseModel):
    """The keys of a stored cell that summaries, re-judging and resuming read, with their types (a
    cell written by any version of the runner passes; a hand-edited or foreign file is refused)."""

    model_config = ConfigDict(extra="allow", strict=True)
    cell_id: str
    task: str
    method: str
    name: str
    seed: int | None
    fingerprint: str
    sweep: dict[str, Any] = {}
    train: dict[str, Any] = {}
    rsr: _Block | None = None
    jsr: _Block | None = None
    utility: _Block | None = None
    overrefusal: _Block | None = None
    instruments: dict[str, dict[str, _Block | None] | None] | None = None
    rsr_verdicts: dict[str, bool | None] | None = None
    jsr_verdicts: dict[str, bool | None] | None = None
    kl: list[float | None] | None = None
    depths: list[_DepthPoint] | None = None
    depth_verdicts: dict[str, dict[str, bool | None]] | None = None
    cost: _Cost | None = None
    answers: dict[str, str] | None = None
    provenance: dict[str, Any] | None = None


def read_forecast(path: str | Path) -> dict[str, Any]:
    """A stored forecast, checked like :func:`read_cell`."""
    return check_document(read_json(path, "a JSON object"), path, StoredForecast, "a forecast")


def read_cell(path: str | Path) -> dict[str, Any]:
    """A stored cell, checked: a file that is not one (wrong JSON, a missing key, a rate outside [0, 1])
    is a one-line error naming the file and the key, never a crash in whatever reads it later."""
    return check_cell(read_json(path, "a JSON object"), path)


def check_cell(data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``data`` (read from ``path``) if it has a cell's keys and types, else the one-line error."""
    return check_document(data, path, _StoredCell, "a cell result")


def pack_answers(answers: dict[str, Any]) -> dict[str, str]:
    """A cell's answers, compressed (zlib, base64) so cell files stay small enough to commit."""
    import base64
    import zlib

    raw = json.dumps(answers, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return {"encoding": "json+zlib+base64", "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


class _SafetyAnswer(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: str | int
    instruction: str | None = None
    category: str | None = None
    prefill: str | None = None
    completion: str | None = None


class _UtilityAnswer(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: str | int
    completion: str
    reference: str


class _Answers(BaseModel):
    """What a cell keeps of its evaluations (see the runner's ``safety_answers``/``utility_answers``)."""

    model_config = ConfigDict(extra="allow", strict=True)
    rsr: list[_SafetyAnswer] | None = None
    jsr: list[_SafetyAnswer] | None = None
    utility: list[_UtilityAnswer] | None = None
    system_prompt: str | None = None


def unpack_answers(block: dict[str, str]) -> dict[str, Any]:
    """The inverse of :func:`pack_answers`; a block that does not decode to answers of the kept shape is a
    ``ValueError`` saying what is wrong."""
    import base64
    import binascii
    import zlib

    if not isinstance(block, dict) or block.get("encoding") != "json+zlib+base64":
        raise ValueError("its answers block has an unknown encoding (expected json+zlib+base64)")
    if not isinstance(block.get("data"), str):
        raise ValueError("its answers block has no data")
    try:
        answers = parse_json(zlib.decompress(base64.b64decode(block["data"], validate=True)))
    except BadJSON as exc:  # a repeated key included: the answers a cell keeps are read like any JSON
        raise ValueError(f"its answers block does not decode ({exc.message})") from None
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"its answers block does not decode ({type(exc).__name__})") from None
    try:
        _Answers.model_validate(answers)
    except ValidationError as exc:
        raise ValueError(f"its answers are not what a cell keeps: {explain(exc, None).message}") from None
    return answers


class CellResult:
    """One cell's stored result: what it is (cell id, task, method, seed, sweep point, training keys),
    its fingerprint, its numbers (:meth:`value`, :meth:`interval`), per-prompt verdicts, KL, cost and
    answers. ``data`` is the JSON document itself (written back unchanged); ``group`` is the folder it
    was read from, which ``study-summary`` keeps apart (a learning rate, an adapter)."""

    __slots__ = ("data", "group")

    def __init__(self, data: dict[str, Any], group: str | None = None):
        self.data = data
        self.group = group

    @classmethod
    def load(cls, path: str | Path, group: str | None = None) -> CellResult:
        return cls(read_cell(path), group)

    # identity
    @property
    def cell_id(self) -> str:
        return self.data["cell_id"]

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def name(self) -> str:
        """The table row: the method, or ``method@key=value`` for a sweep point."""
        return self.data["name"]

    @property
    def method(self) -> str:
        return self.data["method"]

    @property
    def seed(self) -> int | None:
        return self.data["seed"]

    @property
    def sweep(self) -> dict[str, Any]:
        return self.data.get("sweep") or {}

    @property
    def train(self) -> dict[str, Any]:
        return self.data.get("train") or {}

    @property
    def fingerprint(self) -> str | None:
        return self.data.get("fingerprint")

    @property
    def seed_weights(self) -> str | None:
        """The hash of the seed model's files the cell was trained from and compared with (its
        provenance's ``seed_model``); ``None`` for cells from before provenance or a hub seed."""
        return ((self.data.get("provenance") or {}).get("seed_model") or {}).get("sha256")

    # numbers
    def block(self, metric: str) -> dict[str, Any] | None:
        """The metric's stored block (``rate``/``score``, ``k``, ``n``, ``ci95``), ``None`` if not measured."""
        return self.data.get(metric)

    def value(self, metric: str) -> float | None:
        """The metric as a fraction (RSR, JSR, over-refusal: the rate; utility: the score)."""
        block = self.block(metric)
        return None if block is None else block.get(VALUE_KEY[metric])

    def interval(self, metric: str) -> list[float] | None:
        """The run's own 95% interval of the metric (Wilson for rates), as the evaluation reported it."""
        block = self.block(metric)
        return None if block is None else block.get("ci95")

    def verdicts(self, metric: str) -> dict[str, bool | None]:
        """Per-prompt safe/unsafe verdicts of ``rsr`` or ``jsr`` (for paired tests)."""
        return self.data.get(f"{metric}_verdicts") or {}

    @property
    def kl(self) -> list[float | None] | None:
        return self.data.get("kl")

    @property
    def depths(self) -> dict[int, float | None]:
        """The prefill-depth curve, ``{k: safe rate}`` (empty for a cell that measured none)."""
        return {p["k"]: p.get("safe_rate") for p in self.data.get("depths") or []}

    @property
    def cost(self) -> dict[str, Any]:
        return self.data.get("cost") or {}

    def instrument(self, metric: str, name: str) -> float | None:
        """The metric under another judge or scorer recorded beside the primary one."""
        block = ((self.data.get("instruments") or {}).get(metric) or {}).get(name) or {}
        return block.get(VALUE_KEY[metric])

    def agreement(self, metric: str) -> dict[str, dict[str, Any]]:
        """Each pair of judges' verdict table on the metric's answers (``A vs B``: flips, kappa); empty for
        cells made before cells recorded it."""
        return (self.data.get("agreement") or {}).get(metric) or {}

    def instrument_block(self, metric: str, name: str) -> dict[str, Any]:
        """The metric's whole record under one judge (``rate``, ``k``, ``n``, ``ci95``)."""
        return ((self.data.get("instruments") or {}).get(metric) or {}).get(name) or {}

    def instrument_names(self, metric: str) -> list[str]:
        return list((self.data.get("instruments") or {}).get(metric) or {})

    def answers(self) -> dict[str, Any]:
        """The answers the cell keeps (so later judges can re-score them); a one-line error if it has none."""
        if "answers" not in self.data:
            raise UserError(f"cell {self.cell_id} keeps no answers (made before cells kept them)")
        try:
            return unpack_answers(self.data["answers"])
        except ValueError as exc:
            raise UserError(f"cell {self.cell_id}: {exc}") from None


def over_seeds(cells: Sequence[CellResult], metric: str, *, run_interval: bool = True
               ) -> tuple[list[float | None], dict[str, Any] | None]:
    """The one aggregation over training seeds: ``(per-seed values, stats)``.

    ``stats`` is :func:`analyse.stats.mean_ci` of the measured values (``mean``, ``n``, ``std``, ``ci95``):
    a 95% Student-t interval over seeds, the spread a user re-running the recipe would see. With a
    single measured seed there is no spread; ``run_interval`` then takes that run's own interval (Wilson
    for rates), otherwise ``ci95`` stays ``None``. ``stats`` is ``None`` when no seed measured it.
    """
    from ..analyse.stats import mean_ci

    values = [c.value(metric) for c in cells]
    present = [v for v in values if v is not None]
    if not present:
        return values, None
    if len(present) == 1:
        only = next(c for c in cells if c.value(metric) is not None)
        return values, {"mean": present[0], "n": 1, "std": None,
                        "ci95": only.interval(metric) if run_interval else None}
    return values, mean_ci(present)


def check_one_seed(cells: Iterable[CellResult], where: str, *, current: str | None = None,
                   current_name: str = "the seed model") -> None:
    """One table, one seed model: every cell of ``where`` (and every cell a run adds to it, trained from
    weights hashing to ``current``) was trained from and compared with the same seed weights.

    The settings fingerprint names a recipe, not weights: ``align`` is reproducible bit for bit on one
    machine but not across CPUs or library versions, so one recipe can give two different seeds (and a
    ``seed:`` folder can be replaced in place). Cells of two seeds in one table would be compared as
    one experiment; that is a one-line error naming a cell of each.
    """
    first: CellResult | None = None
    for cell in cells:
        sha = cell.seed_weights
        if sha is None:
            continue
        if current is not None and sha != current:
            raise UserError(f"{where}: cell {cell.cell_id} was computed from other seed weights ({sha[:12]}) than "
                            f"{current_name} here ({current[:12]}; align is not bit-identical across CPUs or "
                            "library versions): new cells would not be comparable with it, so use another "
                            "output folder (or cells_dir), or delete its cells to recompute them")
        if first is None:
            first = cell
        elif sha != first.seed_weights:
            raise UserError(f"{where}: cells {first.cell_id} ({first.group or '-'}) and {cell.cell_id} "
                            f"({cell.group or '-'}) were computed from different seed weights "
                            f"({first.seed_weights[:12]} vs {sha[:12]}), so they are not one table")


def check_one_precision(cells: Iterable[CellResult], where: str, *,
                        resolve: Callable[[str], bool] | None = None) -> None:
    """One table, one training precision. ``bf16: auto`` (the default) resolves per machine under one
    fingerprint: bf16 autocast where the CPU runs it natively (AVX-512 BF16, AMX) or on a bf16 GPU, fp32
    elsewhere; each cell records what it resolved to. Cells that recorded different precisions are
    refused, naming one of each; with ``resolve`` (how this machine resolves a ``bf16`` setting, for a
    run about to add cells) so is a cell whose own setting would train in the other precision here."""
    name = {True: "bf16", False: "fp32"}
    first: CellResult | None = None
    for cell in cells:
        used = cell.cost.get("bf16")
        if used is None:  # cells from before the record: not known
            continue
        setting = cell.train.get("bf16", "auto")
        if resolve is not None and resolve(setting) != used:
            raise UserError(f"{where}: cell {cell.cell_id} was trained in {name[used]}, and bf16: {setting} trains in "
                            f"{name[not used]} on this machine, so new cells would not be comparable with it: resume "
                            f"on a machine that trains in {name[used]}, or use another output folder (train.bf16: "
                            "on/off pins the precision of a new study)")
        if first is None:
            first = cell
        elif used != first.cost["bf16"]:
            raise UserError(f"{where}: cells {first.cell_id} ({name[first.cost['bf16']]}) and {cell.cell_id} "
                            f"({name[used]}) were trained in different precisions, so they are not one table")


def group_name(folder: str | Path) -> str:
    """The name a folder of cells goes by in a study summary: its own, or its parent's when it is a
    ``cells`` folder (``study/seedD-lr5e-5/cells`` -> ``seedD-lr5e-5``)."""
    folder = Path(folder).resolve()
    return folder.parent.name if folder.name == "cells" else folder.name


def load_cells(folders: Iterable[str | Path]) -> tuple[list[CellResult], dict[str, dict]]:
    """Cell results and forecasts (``TASK--forecast.json``) from the given folders; each cell's ``group``
    is its folder's :func:`group_name`."""
    from ..io import same_place

    folders = [Path(f) for f in folders]
    cells, forecasts = [], {}
    for i, folder in enumerate(folders):
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder of cell results")
        if any(same_place(folder, earlier) for earlier in folders[:i]):
            raise UserError(f"{folder}: this folder of cell results is given twice; its cells would count twice")
        group = group_name(folder)
        held: dict[str, Path] = {}
        for path in sorted(folder.glob("*.json")):
            if path.name.endswith("--forecast.json"):
                forecasts[f"{group}/{path.name[: -len('--forecast.json')]}"] = read_forecast(path)
                continue
            cell = CellResult.load(path, group)
            if cell.cell_id in held:
                raise UserError(f"{path}: holds cell {cell.cell_id}, as does {held[cell.cell_id].name} in the same "
                                "folder; remove the copy, or its seed would count twice")
            held[cell.cell_id] = path
            cells.append(cell)
    if not cells:
        raise UserError(f"no cell results in {', '.join(str(f) for f in folders)}")
    return cells, forecasts


def check_distinct_groups(folders: Iterable[str | Path]) -> None:
    """Folders summarised apart must have distinct group names (:func:`group_name`): two folders named alike would
    pool silently (and a cell both hold would count twice); ``--group`` pools them on purpose."""
    seen: dict[str, Path] = {}
    for folder in map(Path, folders):
        name = group_name(folder)
        if name in seen:
            raise UserError(f"{folder}: its cells would form group '{name}', as do those of {seen[name]}; "
                            "pass --group NAME to pool the two folders, or summarise them one at a time")
        seen[name] = folder


def pool_groups(cells: list[CellResult], forecasts: dict[str, dict], group: str) -> tuple[list[CellResult], dict]:
    """The cells of several folders as one ``group`` (one study split over configs, e.g. its main rows
    and its extra methods, so every method is compared with the same vanilla cells). A cell present in
    two folders must be the same computation (same fingerprint): it is kept once; otherwise refused."""
    seen: dict[str, CellResult] = {}
    for cell in cells:
        key = cell.cell_id
        if key in seen:
            if seen[key].fingerprint != cell.fingerprint:
                raise UserError(f"cell {key} is in two folders with different fingerprints ({seen[key].group}, "
                                f"{cell.group}): they are not one study; summarise them without --group")
            check_one_seed([seen[key], cell], f"--group {group}")
            continue
        seen[key] = CellResult(cell.data, group)
    pooled = {}
    for name, data in forecasts.items():
        pooled.setdefault(f"{group}/{name.split('/', 1)[1]}", data)
    return list(seen.values()), pooled
