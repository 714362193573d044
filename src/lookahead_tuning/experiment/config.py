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
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ..data.tasks import TASKS, get_task
from ..errors import UserError, describe
from ..methods import DATA_AXES, MethodName, sweep_axes
from ..models import EMBEDDED_ALIAS
from ..validate import NonNegativeInt, Positive, PositiveInt, PrefillDepth, Seed, explain, floats
from .executors import ExecutorSpec

ParamCount = floats(0.0, 1e15, lo_open=True).field()
JudgeTemperature = floats(0.0, 2.0).field()
# Keys the runner sets for every cell itself: given in a layer of training keys they would be
# overridden without a word, so they are refused there (with where to set them instead).
RUNNER_KEYS = {
    "model": "the seed model is 'model'", "data": "a task's data is 'tasks: - train'",
    "out": "cells are written under the run folder ('output' or --out)",
    "method": "the method is the entry's 'name'", "seed": "training seeds are the top-level 'seeds' list",
    "resume": "the runner always resumes", "quiet": "use run --quiet",
    "overwrite": "use run --overwrite", "wait": "use run --wait",
}

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def folder_name(value: str, what: str) -> str:
    """``value`` if it can name a folder inside the run's own (letters, digits, '.', '_', '-'; no leading
    '.' or '-', so never '..', a hidden file or an option), else the ``ValueError`` saying so."""
    if not _SAFE_NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be letters, digits, '.', '_' or '-' and not start "
                         "with '.' or '-' (it names folders)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """The seed model: a ``--model`` value used as is, or one made by ``align`` (cached)."""

    seed: str | None = Field(default=None, min_length=1,
                             description="a model folder, .gguf, hub id or the embedded alias")
    align: dict[str, Any] | None = Field(
        default=None, description="align a base model first: {base: ..., epochs/lr/seed/... overrides}")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.seed is None) == (self.align is None):
            raise ValueError("give exactly one of 'seed' (a model) or 'align' (a base model to align)")
        if self.align is not None:
            _check_align(self.align)
        return self

    def identity(self) -> str:
        """What the seed is: the model as given, or the aligned seed's cache name, which hashes the
        base model, the alignment settings and the alignment data (so cells computed on a seed aligned
        with other data never pass as cells of this one)."""
        if self.seed is not None:
            return self.seed
        from .align import aligned_seed_id

        base, options = self.alignment()
        return aligned_seed_id(base, **options)

    def alignment(self) -> tuple[str, dict[str, Any]]:
        """``(base model, align's other settings)`` of an ``align:`` seed (the embedded model by default)."""
        options = dict(self.align or {})
        return options.pop("base", None) or EMBEDDED_ALIAS, options


class TaskSpec(_Strict):
    """A fine-tuning task: training data and the held-out test rows its utility is measured on."""

    name: str = Field(description="label in the tables; also the task's kind when it names one")
    kind: str | None = Field(
        default=None, description="a task of data/tasks.py (how rows are read, the utility metric); default: name")
    train: str | None = Field(default=None, description="training data: a file or a built-in task name")
    test: str | None = Field(default=None, description="test file for utility (not needed for math)")
    n_train: PositiveInt | None = Field(default=None, description="use the first N training rows")
    n_test: PositiveInt | None = Field(default=None, description="evaluate utility on the first N test rows")
    input_field: str | None = None
    output_field: str | None = None
    train_overrides: dict[str, Any] = Field(default_factory=dict,
                                            description="training keys for this task only (e.g. max_length)")
    max_new_tokens: PositiveInt | None = Field(default=None, description="utility generation budget")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # The name becomes part of folder and file names (work/<cell_id>, cells/<cell_id>.json): a
        # slash or a leading dot could put them outside the run folder.
        return folder_name(value, "task name")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str | None) -> str | None:
        if value is not None and value not in TASKS:
            raise ValueError(f"unknown task kind '{value}'; expected one of {', '.join(TASKS)}")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> TaskSpec:
        if self.kind is None:
            if self.name not in TASKS:
                raise ValueError(f"task '{self.name}': set 'kind' to one of {', '.join(TASKS)}")
            self.kind = self.name
        builtin = get_task(self.kind).builtin
        if self.train is None:
            if not builtin:
                raise ValueError(f"task '{self.name}': 'train' (a data file) is required")
            self.train = self.kind
        if not builtin and self.test is None:
            raise ValueError(f"task '{self.name}': 'test' (a data file) is required for {self.kind}")
        return self


class MethodSpec(_Strict):
    """One method of the table: a preset name plus training keys that differ for it."""

    name: MethodName
    overrides: dict[str, Any] = Field(default_factory=dict)


class _SweepsBase(BaseModel):
    # An axis registered after this schema was built (a plugin, a test) arrives as an extra key and is
    # checked against its own declared type here; any other key is refused.
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _registered(self) -> _SweepsBase:
        axes = {key: axis for key, (_, axis) in sweep_axes().items()} | {axis.key: axis for axis in DATA_AXES}
        for key, values in (self.model_extra or {}).items():
            if key not in axes:
                raise ValueError(f"unknown sweep '{key}'; expected one of {', '.join(axes)}")
            try:
                setattr(self, key, TypeAdapter(list[axes[key].values]).validate_python(values))
            except ValidationError as exc:
                raise ValueError(f"sweeps.{key}: {explain(exc, None).message}") from None
        return self


# Figure 4 analogs: extra cells along the methods' sweep axes (methods.py), one list of values per axis.
Sweeps = create_model("Sweeps", __base__=_SweepsBase, **{
    key: (list[axis.values], Field(default_factory=list, description=f"values of {key} for {method}"))
    for key, (method, axis) in sweep_axes().items()},
    **{axis.key: (list[axis.values], Field(default_factory=list, description=f"values of {axis.key} for every method"))
       for axis in DATA_AXES})


class GenerationSpec(_Strict):
    """How the evaluations generate: here (``hf``), or through an OpenAI-compatible server that the runner
    starts for each model of the grid (``openai``; every cell has its own weights, so one fixed server
    could not answer for them)."""

    backend: Literal["hf", "openai"] = "hf"
    server: str | None = Field(
        default=None, description="openai: command serving {model} on 127.0.0.1:{port} under the name {name}")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for the server")
    startup_timeout: float = Field(default=900.0, gt=0, description="seconds to wait for GET /v1/models")
    concurrency: int = Field(default=8, ge=1, description="requests in flight at once")
    request_timeout: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=4, ge=0)

    @model_validator(mode="after")
    def _server(self) -> GenerationSpec:
        from ..redact import register_command, register_named

        for name, value in self.env.items():  # masked in config.yaml, cells and messages from here on
            register_named(name, value)
        register_command(self.server)
        if self.backend == "openai":
            missing = [p for p in ("{model}", "{port}") if p not in (self.server or "")]
            if missing:
                raise ValueError("backend openai needs 'server': a command with {model} and {port} "
                                 f"(missing {', '.join(missing)}), e.g. python -m vllm.entrypoints.openai.api_server "
                                 "--model {model} --served-model-name {name} --host 127.0.0.1 --port {port}")
        elif self.server is not None:
            raise ValueError("'server' is for backend openai")
        return self


class EvalSpec(_Strict):
    """Safety, utility and KL evaluation settings (fixed for a whole run)."""

    safety: str | None = Field(default=None, description="HEx-PHI-style JSONL; default: the built-in held-out set")
    harmful_answers: str | None = Field(default=None, description="chat lists for the prefill attack")
    prefill_tokens: PositiveInt = Field(default=3, description="K: harmful-answer tokens prefilled for JSR")
    prefill_depths: list[PrefillDepth] | None = Field(
        default=None, description="the prefill-depth curve's k values (0 = RSR), e.g. [0, 1, 3, 5, 10, 20, 40]")
    max_new_tokens: PositiveInt = 64
    judge: str = Field(default="keyword-reference",
                       description="primary safety judge, a name of judge/registry.py (every offline judge is "
                                   "recorded too)")
    scorer: Literal["reference", "numeric"] = Field(
        default="reference", description="GSM8K/math scorer of the utility column (both are recorded)")
    judge_options: dict[str, Any] = Field(default_factory=dict)
    limit: PositiveInt | None = Field(default=None, description="use the first N harmful prompts")
    batch_size: PositiveInt = 16
    system_prompt: str | None = None
    utility: bool = True
    overrefusal: bool = False
    overrefusal_limit: PositiveInt | None = None
    kl_positions: PositiveInt = 8
    kl_limit: PositiveInt | None = Field(default=None, description="harmful pairs used for the KL (default: all)")
    forecast: bool = True
    forecast_limit: PositiveInt | None = Field(default=64, description="task rows used for the forecast")
    generation: GenerationSpec = Field(default_factory=GenerationSpec)

    @field_validator("judge")
    @classmethod
    def _known_judge(cls, judge: str) -> str:
        from ..judge.registry import judge_names

        if judge not in judge_names():
            raise ValueError(f"unknown judge '{judge}'; expected one of {', '.join(judge_names())}")
        return judge

    @field_validator("prefill_depths")
    @classmethod
    def _depths(cls, value: list[int] | None) -> list[int] | None:
        from ..analyse.safety import check_depths

        if value is None:
            return None
        try:
            return check_depths(value)
        except UserError as exc:
            raise ValueError(exc.message) from None

    def identity(self) -> dict[str, Any]:
        """The settings that decide the evaluations' numbers, as fingerprints hash them.

        Keys added after cells were first committed are left out while they hold the value those cells
        were computed with (``generation`` at its default: transformers here; ``scorer: numeric``, the
        project scorer the runner used before it had a choice), so those cells keep their fingerprints;
        any other value changes the fingerprint. A judge URL enters without its credentials (a new key
        for the same endpoint computes the same numbers); a judge template enters by its content, not
        only its path.
        """
        from ..redact import redact_url

        values = self.model_dump()
        if self.generation == GenerationSpec():
            values.pop("generation")
        if values["prefill_depths"] is None:  # cells from before depth curves measured none
            del values["prefill_depths"]
        if values["scorer"] == "numeric":
            del values["scorer"]
        options = values.get("judge_options") or {}
        url = options.get("url")
        if isinstance(url, str) and redact_url(url) != url:
            values["judge_options"] = options = {**options, "url": redact_url(url)}
        template = options.get("template")
        if template and Path(str(template)).is_file():
            values["judge_template_sha256"] = hashlib.sha256(Path(str(template)).read_bytes()).hexdigest()
        return values


class Launcher(_Strict):
    """Train through ``accelerate launch`` (multi-GPU, DeepSpeed) instead of in-process."""

    accelerate_config: str
    num_processes: PositiveInt = 1
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
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    output: str | None = Field(default=None, description="run folder (default runs/<name>-<timestamp>)")
    cells_dir: str | None = Field(default=None, description="where cell JSONs go (default <output>/cells)")
    keep_models: Literal["all", "table"] = Field(
        default="table", description="table: delete a cell's weights after evaluation unless a table row links it")
    launcher: Launcher | None = None
    # How the cells are spread over processes or a Ray cluster: decides no number, so it is left out of
    # the recorded config.yaml and of every fingerprint (docs/experiment.md, "Many workers").
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, exclude=True)
    params: ParamCount | None = Field(default=None, description="parameter count for the dry run's cost estimate")
    assumed_tflops: Positive = Field(default=400.0, description="sustained bf16 TFLOP/s per GPU assumed by the dry run")

    @field_validator("name")
    @classmethod
    def _safe_experiment_name(cls, value: str) -> str:
        # The default run folder is runs/<name>-<timestamp>: a slash or '..' would put it elsewhere.
        return folder_name(value, "the experiment name")

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
        for keys in [self.train, *(m.overrides for m in self.methods), *(t.train_overrides for t in self.tasks)]:
            if isinstance(keys.get("poison"), str):  # a data path like the tasks' (train_settings reads it as is)
                keys["poison"] = _fill(keys["poison"], self.data_dir)
        names = [m.name for m in self.methods]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"method listed twice: {', '.join(dup)}")
        tasks = [t.name for t in self.tasks]
        if len(set(tasks)) != len(tasks):
            raise ValueError("task names must be unique")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be unique")
        for key, (method, _) in sweep_axes().items():
            if getattr(self.sweeps, key, None) and method not in names:  # it would add no cell, silently
                raise ValueError(f"sweeps.{key} sweeps {method}, which is not in methods; add it or drop the sweep")
        layers = [("train", self.train)] + [(f"methods.{m.name}", m.overrides) for m in self.methods] \
            + [(f"tasks.{t.name}.train_overrides", t.train_overrides) for t in self.tasks]
        for where, keys in layers:
            _check_training_keys(where, keys)
        for task in self.tasks:
            for where, keys in [("train", self.train), (f"tasks.{task.name}.train_overrides", task.train_overrides)] \
                    + [(f"methods.{m.name}", m.overrides) for m in self.methods]:
                names = {str(k).replace("-", "_") for k in keys}
                for key, mine in (("limit", "n_train"), ("input_field", "input_field"),
                                  ("output_field", "output_field")):
                    if key in names and getattr(task, mine) is not None:
                        raise ValueError(f"{where}: '{key}' and task '{task.name}''s '{mine}' both set it; keep "
                                         f"the task's '{mine}'")
        _check_judge_options(self.eval.judge_options, self.eval.judge)
        return self

    def method(self, name: str) -> MethodSpec | None:
        return next((m for m in self.methods if m.name == name), None)


def _check_training_keys(where: str, keys: dict[str, Any], taken_keys: dict[str, str] = RUNNER_KEYS) -> None:
    """One layer of training keys: known keys, none the runner sets itself, every value valid."""
    from ..train.config import TrainConfig, make_config

    names = {str(k).replace("-", "_"): k for k in keys}
    unknown = sorted(set(names) - set(TrainConfig.model_fields))
    if unknown:
        raise ValueError(f"{where}: unknown training key '{unknown[0]}'")
    taken = sorted(set(names) & set(taken_keys))
    if taken:
        raise ValueError(f"{where}: '{taken[0]}' is set by the runner for every cell ({taken_keys[taken[0]]}); "
                         "remove it")
    try:
        pure = keys.get("poison_count", keys.get("poison-count")) is not None  # the pure attack has no data
        make_config({**keys, "model": "-", "data": None if pure else "-", "out": "-"})
    except UserError as exc:
        raise ValueError(f"{where}: {exc.message}") from None


class _JudgeOptions(_Strict):
    """What ``eval.judge_options`` may hold: the model judges' settings (judge/llm.py, judge/guard.py)."""

    url: str | None = None
    model: str | None = None
    model_path: str | None = Field(default=None, description="a guard judge's local model (folder, .gguf, hub id)")
    device: str | None = Field(default=None, description="a local guard judge's device, e.g. cuda")
    chat_template: str | None = Field(default=None, description="a guard judge's chat template file (Jinja)")
    api_key_env: str | None = None
    concurrency: PositiveInt | None = None
    cache_path: str | None = None
    max_retries: NonNegativeInt | None = None
    parse_retries: NonNegativeInt | None = None
    backoff: Positive | None = None
    timeout: Positive | None = None
    temperature: JudgeTemperature | None = None
    max_tokens: PositiveInt | None = None
    template: str | None = Field(default=None, description="a text file with {instruction} and {response}")
    score_line: str | None = Field(default=None, description="any | thescore | a regular expression with one group")
    unsafe_threshold: int | None = Field(default=None, ge=1, le=5, description="scores from this value up are unsafe")


def _check_judge_options(options: dict[str, Any], judge: str) -> None:
    """Checked here, not when the first cell is judged hours later. A URL's credentials are
    registered as secrets, so config.yaml, results.json and messages show them masked."""
    from ..redact import register_url

    try:
        checked = _JudgeOptions(**{str(k): v for k, v in options.items()})
    except ValidationError as exc:
        raise ValueError(explain(exc, None, prefix="eval.judge_options.").message) from None
    register_url(checked.url)
    from ..judge.registry import option_problem

    problem = option_problem(judge, checked.model_dump(exclude_none=True))
    if problem:  # before any file an option names is read
        raise ValueError(f"eval.judge_options.{problem}")
    if checked.template is not None:
        from ..judge.llm import load_template

        load_template(checked.template)
    if checked.score_line is not None:
        from ..judge.llm import score_parser

        score_parser(checked.score_line)
    from ..judge.registry import missing_options

    missing = missing_options(judge, checked.model_dump(exclude_none=True))
    if missing:
        raise ValueError(f"eval.judge {judge} needs eval.judge_options.{missing}")


ALIGN_DATA_KEYS = {"base", "benign_repeat", "template_matched", "harm_adjacent", "recipe", "recovery_share",
                   "recovery_k"}


def _check_align(options: dict[str, Any]) -> None:
    """``model.align``: the base model, the alignment data switches and training keys, each checked."""
    from ..validate import POSITIVE_INT

    keys = {str(k).replace("-", "_"): v for k, v in options.items()}
    if "base" in keys and not isinstance(keys["base"], str):
        raise ValueError("model.align.base: expected a model (a folder, .gguf, hub id or alias)")
    if "benign_repeat" in keys:
        try:
            POSITIVE_INT.check(keys["benign_repeat"])
        except ValueError as exc:
            raise ValueError(f"model.align.benign_repeat: {exc}") from None
    for flag in ("template_matched", "harm_adjacent"):
        if flag in keys and not isinstance(keys[flag], bool):
            raise ValueError(f"model.align.{flag}: expected true or false, got {keys[flag]!r:.40}")
    from .align import RECIPES, RECOVERY_K, RECOVERY_SHARE, recovery_settings

    if "recipe" in keys and (not isinstance(keys["recipe"], str) or keys["recipe"] not in RECIPES):
        raise ValueError(f"model.align.recipe: expected one of {', '.join(RECIPES)}, got {describe(keys['recipe'])}")
    try:
        recovery_settings(keys.get("recovery_share", RECOVERY_SHARE), keys.get("recovery_k", list(RECOVERY_K)))
    except UserError as exc:
        raise ValueError(f"model.align.{exc.message}") from None
    # The alignment's own seed is honoured (it is part of the aligned seed's cache name).
    _check_training_keys("model.align", {k: v for k, v in keys.items() if k not in ALIGN_DATA_KEYS},
                         {k: v for k, v in RUNNER_KEYS.items() if k != "seed"})


def _fill(path: str | None, data_dir: str) -> str | None:
    return None if path is None else path.replace("{data_dir}", data_dir)


def make_experiment(values: ExperimentConfig | dict[str, Any], *, source: str | None = None) -> ExperimentConfig:
    """Validate a dict into an :class:`ExperimentConfig`; errors name the key and the file."""
    if isinstance(values, ExperimentConfig):
        return values
    if not isinstance(values, dict):
        raise UserError("an experiment config must be a mapping of keys to values", path=source)
    try:
        return ExperimentConfig(**values)
    except ValidationError as exc:
        raise explain(exc, source) from None


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML file; ``overrides`` (top-level keys) win over the file."""
    from ..train.config import read_yaml

    data = read_yaml(path)  # the same YAML reading (and error lines) as `train --config`
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_experiment(data, source=str(path))
