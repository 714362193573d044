"""The experiment config: which seed model, which tasks, which methods, which sweeps and seeds.

One YAML file describes a whole grid. Its cells are ``methods x tasks x sweep points x seeds``, plus
one seed-model cell per task (the untuned model is a row of the table too). Every key is validated;
an unknown key is a :class:`UserError` naming it, because a typo such as ``epoch:`` silently falling
back to a default would make a result look like it came from settings it did not use.

Paths in the file are relative to the current working directory (where the command runs), like the
paths given on the command line.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UserError

METHOD_NAMES = ("vanilla", "lookahead-real", "lookahead-virtual", "constrained-sft", "sdft", "safety-mix")
TABLE_NAMES = ("seed", *METHOD_NAMES)
UTILITY_TASKS = ("math", "gsm8k", "samsum")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """The seed model: a ``--model`` value used as is, or one made by ``align`` (cached)."""

    seed: str | None = Field(default=None, description="a model folder, .gguf, hub id or the embedded alias")
    align: dict[str, Any] | None = Field(
        default=None, description="align a base model first: {base: ..., epochs/lr/seed/... overrides}")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.seed is None) == (self.align is None):
            raise ValueError("give exactly one of 'seed' (a model) or 'align' (a base model to align)")
        return self

    def identity(self) -> str:
        """What the seed is: the model as given, or the aligned seed's cache name, which hashes the
        base model, the alignment settings and the alignment data (so cells computed on a seed aligned
        with other data never pass as cells of this one)."""
        if self.seed is not None:
            return self.seed
        from ..train.align import aligned_seed_id

        options = dict(self.align or {})
        return aligned_seed_id(options.pop("base", None) or "smollm2-135m-instruct", **options)


class TaskSpec(_Strict):
    """A fine-tuning task: training data and the held-out test rows its utility is measured on."""

    name: str = Field(description="label in the tables; also the utility metric when it is math|gsm8k|samsum")
    kind: Literal["math", "gsm8k", "samsum"] | None = Field(
        default=None, description="utility metric (accuracy after ####, or ROUGE-1); default: name")
    train: str | None = Field(default=None, description="training data: a file or a built-in task name")
    test: str | None = Field(default=None, description="test file for utility (not needed for math)")
    n_train: int | None = Field(default=None, ge=1, description="use the first N training rows")
    n_test: int | None = Field(default=None, ge=1, description="evaluate utility on the first N test rows")
    input_field: str | None = None
    output_field: str | None = None
    train_overrides: dict[str, Any] = Field(default_factory=dict,
                                            description="training keys for this task only (e.g. max_length)")
    max_new_tokens: int | None = Field(default=None, ge=1, description="utility generation budget")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # The name becomes part of folder and file names (work/<cell_id>, cells/<cell_id>.json): a
        # slash or a leading dot could put them outside the run folder.
        if not _SAFE_NAME.fullmatch(value):
            raise ValueError(f"task name {value!r} must be letters, digits, '.', '_' or '-' and not start "
                             "with '.' or '-' (it names folders)")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> TaskSpec:
        if self.kind is None:
            if self.name not in UTILITY_TASKS:
                raise ValueError(f"task '{self.name}': set 'kind' to one of {', '.join(UTILITY_TASKS)}")
            self.kind = self.name  # type: ignore[assignment]
        if self.train is None:
            if self.kind != "math":
                raise ValueError(f"task '{self.name}': 'train' (a data file) is required")
            self.train = "math"
        if self.kind != "math" and self.test is None:
            raise ValueError(f"task '{self.name}': 'test' (a data file) is required for {self.kind}")
        return self


class MethodSpec(_Strict):
    """One method of the table: a preset name plus training keys that differ for it."""

    name: Literal["vanilla", "lookahead-real", "lookahead-virtual", "constrained-sft", "sdft", "safety-mix"]
    overrides: dict[str, Any] = Field(default_factory=dict)


class Sweeps(_Strict):
    """Figure 4 analogs: extra cells for other preview lengths / prefix strings."""

    m: list[int] = Field(default_factory=list, description="preview lengths for lookahead-real")
    prefix: list[str] = Field(default_factory=list, description="prefix strings for lookahead-virtual")


class EvalSpec(_Strict):
    """Safety, utility and KL evaluation settings (fixed for a whole run)."""

    safety: str | None = Field(default=None, description="HEx-PHI-style JSONL; default: the built-in held-out set")
    harmful_answers: str | None = Field(default=None, description="chat lists for the prefill attack")
    prefill_tokens: int = Field(default=3, ge=1, description="K: harmful-answer tokens prefilled for JSR")
    max_new_tokens: int = Field(default=64, ge=1)
    judge: Literal["keyword-reference", "keyword", "llm", "both"] = Field(
        default="keyword-reference", description="primary safety judge (every offline judge is recorded too)")
    scorer: Literal["reference", "numeric"] = Field(
        default="reference", description="GSM8K/math scorer of the utility column (both are recorded)")
    judge_options: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(default=None, ge=1, description="use the first N harmful prompts")
    batch_size: int = Field(default=16, ge=1)
    system_prompt: str | None = None
    utility: bool = True
    overrefusal: bool = False
    overrefusal_limit: int | None = Field(default=None, ge=1)
    kl_positions: int = Field(default=8, ge=1)
    kl_limit: int | None = Field(default=None, ge=1, description="harmful pairs used for the KL (default: all)")
    forecast: bool = True
    forecast_limit: int | None = Field(default=64, ge=1, description="task rows used for the forecast")

    def identity(self) -> dict[str, Any]:
        """What of these settings enters a cell's fingerprint.

        Keys added after cells were first committed are left out while they hold the value the old
        cells were computed with (``scorer: numeric``, the project scorer the runner used before it had
        a choice), so those cells keep their fingerprints; any other value changes the fingerprint. A
        judge template enters by its content, not only its path.
        """
        values = self.model_dump()
        if values["scorer"] == "numeric":
            del values["scorer"]
        template = (values.get("judge_options") or {}).get("template")
        if template and Path(str(template)).is_file():
            values["judge_template_sha256"] = hashlib.sha256(Path(str(template)).read_bytes()).hexdigest()
        return values


class Launcher(_Strict):
    """Train through ``accelerate launch`` (multi-GPU, DeepSpeed) instead of in-process."""

    accelerate_config: str
    num_processes: int = Field(default=1, ge=1)
    extra_args: list[str] = Field(default_factory=list)


class ExperimentConfig(_Strict):
    """A whole experiment grid (see docs/experiment.md for every key)."""

    name: str = "experiment"
    data_dir: str = Field(default="data", description="replaces {data_dir} in data paths (CLI: --data-dir)")
    model: ModelSpec
    tasks: list[TaskSpec] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig keys shared by every cell")
    sweeps: Sweeps = Field(default_factory=Sweeps)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    output: str | None = Field(default=None, description="run folder (default runs/<name>-<timestamp>)")
    cells_dir: str | None = Field(default=None, description="where cell JSONs go (default <output>/cells)")
    keep_models: Literal["all", "table"] = Field(
        default="table", description="table: delete a cell's weights after evaluation unless a table row links it")
    launcher: Launcher | None = None
    params: float | None = Field(default=None, gt=0, description="parameter count for the dry run's cost estimate")
    assumed_tflops: float = Field(default=400.0, gt=0,
                                  description="sustained bf16 TFLOP/s per GPU assumed by the dry run")

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"seed": value} if isinstance(value, str) else value

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        """``- vanilla`` or ``- {name: lookahead-real, m: 6}`` (keys besides name are overrides)."""
        if not isinstance(value, list):
            return value
        out = []
        for v in value:
            if isinstance(v, str):
                out.append({"name": v})
            elif isinstance(v, dict) and "overrides" not in v:
                out.append({"name": v.get("name"), "overrides": {k: x for k, x in v.items() if k != "name"}})
            else:
                out.append(v)
        return out

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        for task in self.tasks:
            task.train = _fill(task.train, self.data_dir)
            task.test = _fill(task.test, self.data_dir)
        self.eval.safety = _fill(self.eval.safety, self.data_dir)
        self.eval.harmful_answers = _fill(self.eval.harmful_answers, self.data_dir)
        names = [m.name for m in self.methods]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"method listed twice: {', '.join(dup)}")
        tasks = [t.name for t in self.tasks]
        if len(set(tasks)) != len(tasks):
            raise ValueError("task names must be unique")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be unique")
        forbidden = {"model", "data", "out", "method", "seed", "resume"} & set(self.train)
        if forbidden:
            raise ValueError(f"train: '{sorted(forbidden)[0]}' is set by the runner per cell; remove it")
        from ..train.config import TrainConfig

        known = set(TrainConfig.model_fields)
        for where, keys in [("train", self.train)] + [(f"methods.{m.name}", m.overrides) for m in self.methods] \
                + [(f"tasks.{t.name}.train_overrides", t.train_overrides) for t in self.tasks]:
            bad = sorted(set(k.replace("-", "_") for k in keys) - known)
            if bad:
                raise ValueError(f"{where}: unknown training key '{bad[0]}'")
        return self

    def method(self, name: str) -> MethodSpec | None:
        return next((m for m in self.methods if m.name == name), None)


def _fill(path: str | None, data_dir: str) -> str | None:
    return None if path is None else path.replace("{data_dir}", data_dir)


def _explain(exc: ValidationError, source: str | None) -> UserError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err.get("loc", ()))
    kind = err.get("type")
    if kind == "extra_forbidden":
        msg = f"unknown key '{key}'"
    elif kind == "missing":
        msg = f"missing key '{key}'"
    else:
        text = str(err.get("msg", "")).removeprefix("Value error, ")
        msg = f"key '{key}': {text}" if key else text
    return UserError(msg, path=source)


def make_experiment(values: ExperimentConfig | dict[str, Any], *, source: str | None = None) -> ExperimentConfig:
    """Validate a dict into an :class:`ExperimentConfig`; errors name the key and the file."""
    if isinstance(values, ExperimentConfig):
        return values
    if not isinstance(values, dict):
        raise UserError("an experiment config must be a mapping of keys to values", path=source)
    try:
        return ExperimentConfig(**values)
    except ValidationError as exc:
        raise _explain(exc, source) from None


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML file; ``overrides`` (top-level keys) win over the file."""
    from ..train.config import read_yaml

    data = read_yaml(path)  # the same YAML reading (and error lines) as `train --config`
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_experiment(data, source=str(path))


# --------------------------------------------------------------------------- the grid


def _slug(text: str) -> str:
    """A short filesystem-safe tag for a prefix string (readable start + hash so two never collide)."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:24] or "empty"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


class Cell(BaseModel):
    """One unit of work: train (unless ``method == 'seed'``) then evaluate."""

    model_config = ConfigDict(frozen=True)

    task: str
    method: str  # "seed" or a METHOD_NAMES entry
    seed: int
    sweep: dict[str, Any] = Field(default_factory=dict)  # {"m": 12} or {"prefix": "..."}; {} = the table cell
    train: dict[str, Any] = Field(default_factory=dict)  # the TrainConfig keys for this cell (no paths)

    @property
    def cell_id(self) -> str:
        parts = [self.task, self.method]
        if "m" in self.sweep:
            parts.append(f"m{self.sweep['m']}")
        if "prefix" in self.sweep:
            parts.append(f"prefix-{_slug(self.sweep['prefix'])}")
        if self.method != "seed":
            parts.append(f"seed{self.seed}")
        return "--".join(parts)

    @property
    def row_name(self) -> str:
        """The results.json name: a table NAME, or ``NAME@m=12`` / ``NAME@prefix=...`` for sweeps."""
        if "m" in self.sweep:
            return f"{self.method}@m={self.sweep['m']}"
        if "prefix" in self.sweep:
            return f"{self.method}@prefix={self.sweep['prefix']}"
        return self.method

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
            "seed": self.seed if self.method != "seed" else None,
            "train": self.train if self.method != "seed" else {},
            "eval": cfg.eval.identity(),
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


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

    The table cell of lookahead-real uses its configured ``m`` (default 6); a sweep point equal to it
    is the same cell, not a second one. The same holds for lookahead-virtual's ``prefix``.
    """
    from ..train.config import TrainConfig

    defaults = TrainConfig.model_fields
    table: list[Cell] = []
    sweeps: list[Cell] = []
    for task in cfg.tasks:
        table.append(Cell(task=task.name, method="seed", seed=cfg.seeds[0]))
        for seed in cfg.seeds:
            for method in cfg.methods:
                base = train_settings(cfg, task, method, seed, {})
                table.append(Cell(task=task.name, method=method.name, seed=seed, train=base))
                points: list[dict[str, Any]] = []
                if method.name == "lookahead-real":
                    current = base.get("m", defaults["m"].default)
                    points = [{"m": m} for m in cfg.sweeps.m if m != current]
                elif method.name == "lookahead-virtual":
                    current = base.get("prefix", defaults["prefix"].default)
                    points = [{"prefix": p} for p in cfg.sweeps.prefix if p != current]
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
    points = list(getattr(cfg.sweeps, key))
    if not points:
        return []
    values = points if current in points else [current, *points]
    return sorted(values) if key == "m" else values
