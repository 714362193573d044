"""The grid an experiment config describes: its cells (``methods x tasks x sweep points x seeds``, plus one
seed-model cell per task), each cell's training keys, and the fingerprint that ties a stored cell to the
settings it was computed with. The config's schema is :mod:`.config`; this module plans from it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..methods import SEED_ROW, axes_of, get_method, point_name, sweep_axis
from ..provenance import settings_fingerprint
from ..train.config import train_identity
from .config import ExperimentConfig, MethodSpec, TaskSpec


def _slug(text: str) -> str:
    """A short filesystem-safe tag for a prefix string (readable start + hash so two never collide)."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:24] or "empty"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


class Cell(BaseModel):
    """One unit of work: train (unless it is the seed's row, :data:`methods.SEED_ROW`) then evaluate."""

    model_config = ConfigDict(frozen=True)

    task: str
    method: str  # SEED_ROW or a registered method (lookahead_tuning.methods)
    seed: int
    sweep: dict[str, Any] = Field(default_factory=dict)  # one axis' point ({"m": 12}); {} = the table cell
    train: dict[str, Any] = Field(default_factory=dict)  # the TrainConfig keys for this cell (no paths)

    @property
    def trained(self) -> bool:
        return self.method != SEED_ROW

    @property
    def cell_id(self) -> str:
        parts = [self.task, self.method]
        parts += [sweep_axis(key).tag(value, _slug) for key, value in self.sweep.items()]
        if self.trained:
            parts.append(f"seed{self.seed}")
        return "--".join(parts)

    @property
    def row_name(self) -> str:
        """The results.json name: a table NAME, or ``NAME@m=12`` / ``NAME@prefix=...`` for sweeps."""
        return point_name(self.method, self.sweep)

    def eval_system_prompt(self, cfg: ExperimentConfig) -> str | None:
        """The system prompt this cell is evaluated with: its method's own (PTST's safety prompt) or
        the run's ``eval.system_prompt``."""
        own = get_method(self.method).eval_system_prompt if self.trained else None
        return own if own is not None else cfg.eval.system_prompt

    def fingerprint(self, cfg: ExperimentConfig) -> str:
        """Hash of everything that decides this cell's numbers: a stored cell with another
        fingerprint was computed under different settings and must not be reused silently."""
        task = next(t for t in cfg.tasks if t.name == self.task)
        # The seed enters through its identity alone (the model as given, or the aligned seed's cache
        # name, which hashes every alignment setting and the data), so spelling out a default in the
        # config's ``align`` block does not change the fingerprint.
        blob = {
            "seed_model": cfg.model.identity(),
            "task": task.model_dump(), "method": self.method,
            # The seed model's cell does not depend on the training seeds (a grid run with seeds
            # [1, 2] reuses the one computed by a run with [0]).
            "seed": self.seed if self.trained else None,
            "train": train_identity(self.train) if self.trained else {},
            "eval": cfg.eval.identity(),
        }
        if self.trained and get_method(self.method).eval_system_prompt is not None:
            blob["eval_system_prompt"] = self.eval_system_prompt(cfg)  # PTST's prompt text decides its numbers

        return settings_fingerprint(blob)


def train_settings(cfg: ExperimentConfig, task: TaskSpec, method: MethodSpec, seed: int,
                   sweep: dict[str, Any]) -> dict[str, Any]:
    """Shared keys, then the task's, then the method's, then the sweep point (later wins)."""
    values: dict[str, Any] = {}
    for layer in (cfg.train, task.train_overrides, method.overrides, sweep):
        values.update({k.replace("-", "_"): v for k, v in layer.items()})
    values["method"] = method.name
    values["seed"] = seed
    if task.n_train is not None:
        values["limit"] = task.n_train
    for key in ("input_field", "output_field"):
        if getattr(task, key) is not None:
            values[key] = getattr(task, key)
    return values


def plan_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell of the grid, the table rows first (so a short run fills the main table early).

    A method's table cell trains with its configured value of each of its sweep axes (lookahead-real's
    ``m``, default 6); a sweep point equal to it is the same cell, not a second one.
    """
    from ..train.config import TrainConfig

    defaults = TrainConfig.model_fields
    table: list[Cell] = []
    sweeps: list[Cell] = []
    for task in cfg.tasks:
        table.append(Cell(task=task.name, method=SEED_ROW, seed=cfg.seeds[0]))
        for seed in cfg.seeds:
            for method in cfg.methods:
                base = train_settings(cfg, task, method, seed, {})
                table.append(Cell(task=task.name, method=method.name, seed=seed, train=base))
                points: list[dict[str, Any]] = []
                for axis in axes_of(method.name):
                    current = base.get(axis.key, defaults[axis.key].default)
                    points += [{axis.key: v} for v in getattr(cfg.sweeps, axis.key, None) or [] if v != current]
                for point in points:
                    sweeps.append(Cell(task=task.name, method=method.name, seed=seed, sweep=point,
                                       train=train_settings(cfg, task, method, seed, point)))
    return table + sweeps


def sweep_values(cfg: ExperimentConfig, method: str, key: str) -> list[Any]:
    """The values a sweep figure plots for ``method``: the table cell's value plus the sweep points."""
    from ..train.config import TrainConfig

    spec = cfg.method(method)
    if spec is None:
        return []
    base = {**cfg.train, **spec.overrides}
    current = base.get(key, TrainConfig.model_fields[key].default)
    points = list(getattr(cfg.sweeps, key, None) or [])
    if not points:
        return []
    # A table cell without a value of the axis (no poison_count: clean data) is not one of its points.
    values = points if current is None or current in points else [current, *points]
    return sorted(values) if sweep_axis(key).numeric else values
