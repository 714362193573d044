"""The training configuration: one pydantic model whose field names are the CLI flags.

A YAML file (``--config``) and the command line speak the same keys (``--lora-r`` is ``lora_r``), and
CLI flags override the file. A *method* (``lookahead_tuning.methods``, the registry) names a choice of
``preview``, ``loss``, ``rewrite`` and ``safety_share``; the keys left unset here take the method's values,
and any key set explicitly wins, so "real preview with the constrained loss" is ``method:
lookahead-real`` + ``loss: constrained`` (the registry also names it ``lookahead-real-constrained``).
The adapter (``lora``: full fine-tune or LoRA) is independent of the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UserError
from ..methods import BASELINE, Loss, MethodName, Post, Preview, Rewrite, get_method
from ..validate import (
    Cosine,
    Epochs,
    Fraction,
    LearningRate,
    NonNegative,
    NonNegativeInt,
    PoisonCount,
    Positive,
    PositiveInt,
    Seed,
    Text,
    explain,
    floats,
    ints,
)

Dropout = floats(0.0, 1.0, hi_open=True).field()
MaxLength = ints(8).field()

class TrainConfig(BaseModel):
    """Every setting of one training run. Unset preset keys (``None``) are filled by :meth:`resolved`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to train, on what, where
    model: str
    # None only for the pure-harmful attack (poison_count), which trains on harmful rows alone
    data: str | None = None
    out: str
    method: MethodName = BASELINE
    limit: PositiveInt | None = Field(default=None, description="use the first N rows of the data")
    input_field: str | None = None
    output_field: str | None = None

    # the method's four choices (None = from the preset)
    preview: Preview | None = None
    loss: Loss | None = None
    rewrite: Rewrite | None = None
    safety_share: Fraction | None = None
    post: Post | None = None

    # Poisoned data (docs/training.md, "Poisoned data"): harmful rows from `poison` (a record file in any
    # supported format, or `builtin`, the built-in poison set) take the place of round(poison_ratio * n)
    # of the n task rows, or, with poison_count, are the whole training set (the pure-harmful attack,
    # no task data); drawn with data_seed, before the method's own transform.
    poison: Text | None = Field(default=None, min_length=1)
    poison_ratio: Fraction = 0.0
    poison_count: PoisonCount | None = None

    # LookAhead preview
    m: NonNegativeInt = 6
    prefix: Text = "Let's solve this problem. "
    connector: Text = " The answer begins with: "

    # Constrained SFT: beta_1 = base*first, beta_2..5 = base*first5, beta_t = base after (or an explicit list)
    beta_base: Positive = 0.1
    beta_first_multiplier: Positive = 5.0
    beta_first5_multiplier: Positive = 20.0
    beta_schedule: list[Positive] | None = Field(default=None, min_length=1)
    # The frozen reference of full fine-tuning runs in the trained model's precision (under its bf16
    # autocast when training uses one), so the two agree exactly before the first step; `fp32` is what
    # every cell before it used (docs/training.md). With LoRA the reference is the trained model with its
    # adapters off, which always runs in the training precision.
    reference_precision: Literal["training", "fp32"] = "training"

    # SafeLoRA (post: safelora; docs/method.md): layers whose update has cosine < threshold with its
    # projection are projected; the alignment matrix is the seed minus `safelora_base`, the model it was
    # aligned from (default: the base an aligned seed's align_summary.json records)
    safelora_threshold: Cosine = 0.5
    safelora_base: str | None = None

    # SDFT
    sdft_batch_size: PositiveInt = 16
    sdft_max_new_tokens: PositiveInt | None = None

    # adapter
    lora: bool = False
    lora_r: PositiveInt = 16
    lora_alpha: Positive = 32.0
    lora_dropout: Dropout = 0.0
    lora_target_modules: list[str] | str = "all-linear"
    merge_lora: bool = False
    freeze_embeddings: bool = False  # measured no speed gain on this CPU (docs/training.md)

    # optimisation
    epochs: Epochs = 2.0
    lr: LearningRate = 5e-5
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    max_length: MaxLength = 512
    seed: Seed = 0
    # The built-in task's problems come from data_seed, not seed: runs with different training seeds
    # then differ in initialisation order and shuffling only, so their spread measures training noise.
    data_seed: Seed = 0
    warmup_ratio: Fraction = 0.05
    weight_decay: NonNegative = 0.0
    lr_scheduler: str = "linear"
    max_grad_norm: NonNegative = 1.0
    bf16: Literal["auto", "on", "off"] = "auto"
    answer_only_logits: bool = True  # project to the vocabulary only at answer positions
    # Batches of similar length pad far less (built-in math data: 1.20x its real tokens in random
    # batches of 8, 1.04x grouped; docs/training.md); the Trainer's own LengthGroupedSampler.
    sampling: Literal["group_by_length", "random"] = "group_by_length"

    # loading: pickled weights can run code when loaded, so they are refused unless allowed
    allow_pickle: bool = False

    # formatting
    system_prompt: Text | None = None
    chat_template: str = "auto"

    # bookkeeping
    save_steps: NonNegativeInt = Field(default=0, description="checkpoint every N steps (0 = only at the end)")
    save_total_limit: PositiveInt | None = 2
    resume: bool = False
    # Start afresh in an --out that holds something else (another run, a model, other files): the
    # files a run writes and every model file there are deleted first. Never recorded in config.yaml.
    overwrite: bool = False
    wait: bool = False  # another process writing --out: wait for it instead of stopping (never recorded)
    log_every: PositiveInt = Field(default=10, description="log the per-position answer loss every N steps")
    # Where the Trainer also sends its logs (loss, lr, grad norm per step): <out>/tensorboard/ for
    # TensorBoard, the W&B project of WANDB_PROJECT for wandb. train_log.jsonl is written either way.
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    max_steps: PositiveInt | None = None
    quiet: bool = False

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str) and "," in value:
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        from transformers import SchedulerType

        names = [s.value for s in SchedulerType]
        if value not in names:
            raise ValueError(f"expected one of {', '.join(names)}")
        return value

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        from ..chat import TEMPLATES

        if value not in TEMPLATES:
            raise ValueError(f"expected one of {', '.join(TEMPLATES)}")
        return value

    @model_validator(mode="after")
    def _data_or_pure_attack(self) -> TrainConfig:
        if self.poison_count is not None:
            if self.data is not None:
                raise ValueError("poison_count trains on that many harmful rows alone (the pure-harmful attack) "
                                 "and takes no data; to mix harmful rows into the task data use poison_ratio")
            if self.poison_ratio:
                raise ValueError("give poison_ratio (a share of the task rows) or poison_count (harmful rows "
                                 "alone, no task data), not both")
        elif self.data is None:
            raise ValueError("data: required (a record file, folder or built-in task; only the pure-harmful "
                             "attack, poison_count, trains without it)")
        return self

    @property
    def poisoned(self) -> bool:
        """Whether harmful rows enter the training set (a ratio above 0 or a count)."""
        return self.poison_ratio > 0 or self.poison_count is not None

    @model_validator(mode="after")
    def _reference_of_lora(self) -> TrainConfig:
        if self.lora and self.reference_precision == "fp32":
            raise ValueError("reference_precision: fp32 needs full fine-tuning: with LoRA the reference is the "
                             "trained model with its adapters off, which runs in the training precision")
        return self

    def resolved(self) -> TrainConfig:
        """A copy with every preset key filled in (what the run folder's ``config.yaml`` records)."""
        values = self.model_dump()
        for key, default in get_method(self.method).parts().items():
            if values[key] is None:
                values[key] = default
        return TrainConfig(**values)

    def check_post(self) -> None:
        """Refuse a ``post`` step the adapter cannot take (on a resolved config, before any training)."""
        if self.post == "safelora" and not self.lora:
            raise UserError("SafeLoRA projects a LoRA update: set lora: true (--lora) for it")

    def betas(self, length: int) -> list[float]:
        """beta_t for answer positions t = 1..length (docs/method.md, section 3: Constrained SFT)."""
        out = []
        for t in range(1, length + 1):
            if self.beta_schedule is not None:
                out.append(self.beta_schedule[t - 1] if t <= len(self.beta_schedule) else self.beta_base)
            elif t == 1:
                out.append(self.beta_base * self.beta_first_multiplier)
            elif t <= 5:
                out.append(self.beta_base * self.beta_first5_multiplier)
            else:
                out.append(self.beta_base)
        return out


# Keys of one invocation, not of the run: left out of config.yaml, which stays what it always was.
INVOCATION_KEYS = frozenset({"overwrite", "wait"})
# Keys that decide no number of a run: where it is, how it is driven, where logs and checkpoints go.
# Everything else decides the weights, so a resume under another value of it is refused.
BOOKKEEPING_KEYS = frozenset({"out", "resume", "quiet", "report_to", "save_steps", "save_total_limit", "log_every",
                              "allow_pickle", *INVOCATION_KEYS})
# Keys added after runs and cells were made, with the behaviour those were trained with: a run folder's
# config.yaml without the key ran with this value, and a cell's fingerprint leaves the key out at this
# value (committed cells keep their fingerprints; any other effective value is hashed, a new default
# included, so work done the old way is never reused for the new).
LEGACY_TRAIN = {"sampling": "random", "reference_precision": "fp32"}
# Keys that decide no number, left out of cell fingerprints (only keys a run config may set).
_UNHASHED_TRAIN = ("report_to",)
POISON_KEYS = ("poison", "poison_ratio", "poison_count")
# The name of the built-in poison set as a ``poison`` source (a file of that name is ``./builtin``).
BUILTIN_POISON = "builtin"


def train_identity(values: dict[str, Any]) -> dict[str, Any]:
    """Training settings as they decide numbers: without the keys that decide none, with the effective
    value of every key newer than the committed cells (:data:`LEGACY_TRAIN`) and ``reference_precision``
    only where a frozen reference exists (the constrained loss with full fine-tuning) and it is not the
    fp32 every committed cell ran. Cell fingerprints hash this of a cell's keys; a training resume
    compares it (:func:`settings_difference`)."""
    def effective(key: str) -> Any:
        return out.get(key, TrainConfig.model_fields[key].default)

    out = {k: v for k, v in values.items() if k not in _UNHASHED_TRAIN}
    for key, legacy in LEGACY_TRAIN.items():
        if effective(key) == legacy:
            out.pop(key, None)
        else:
            out[key] = effective(key)
    # Poisoning decides numbers only where it is on (clean cells, and those that spell out a ratio of 0,
    # keep their fingerprints), and then with its effective source (the built-in set when none is named).
    if not effective("poison_ratio") and effective("poison_count") is None:
        for key in POISON_KEYS:
            out.pop(key, None)
    else:
        out["poison"] = effective("poison") or BUILTIN_POISON
    frozen_copy = (effective("loss") or get_method(effective("method")).loss) == "constrained" and not effective("lora")
    if not frozen_copy:
        out.pop("reference_precision", None)
    return out


def recorded(cfg: TrainConfig) -> dict[str, Any]:
    """What a run folder's config.yaml records of ``cfg``."""
    return cfg.model_dump(exclude=set(INVOCATION_KEYS))


def settings_difference(stored: dict[str, Any], wanted: TrainConfig, *, source: str) -> str | None:
    """The first key that decides numbers on which a run folder's config.yaml (``stored``; keys missing
    from older folders take :data:`LEGACY_TRAIN`) and the resolved ``wanted`` disagree, as words;
    ``None`` when they agree. ``model`` and ``data`` agree when they name one file or folder."""
    from ..io import same_place

    values = {k: v for k, v in stored.items() if k not in INVOCATION_KEYS}
    for key, legacy in LEGACY_TRAIN.items():
        # LoRA's reference was always the adapters-off model in the training precision: no fp32 there
        if key not in values and not (key == "reference_precision" and values.get("lora")):
            values[key] = legacy
    try:
        old = make_config(values, source=source).resolved()
    except UserError as exc:
        return f"a config.yaml this version does not read ({exc.message})"
    full_a, full_b = old.model_dump(), wanted.model_dump()
    a = {k: v for k, v in train_identity(full_a).items() if k not in BOOKKEEPING_KEYS}
    b = {k: v for k, v in train_identity(full_b).items() if k not in BOOKKEEPING_KEYS}
    for key in TrainConfig.model_fields:
        if key not in a and key not in b or a.get(key) == b.get(key):
            continue
        if key in ("model", "data") and same_place(str(a[key]), str(b[key])):
            continue
        return f"{key}: {_show(full_a[key])} in this folder, {_show(full_b[key])} now"  # effective values
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]


def make_config(values: TrainConfig | dict[str, Any], *, source: str | None = None) -> TrainConfig:
    """Validate a dict (from YAML, the CLI or Python) into a :class:`TrainConfig`; errors name the key."""
    if isinstance(values, TrainConfig):
        return values
    if not isinstance(values, dict):
        raise UserError(f"a training config must be a mapping, got {type(values).__name__}", path=source)
    values = flag_keys(values, source)
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise explain(exc, source) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (keys as the CLI flags, dashes or underscores).

    Read by :func:`lookahead_tuning.io.read_yaml` (UTF-8, no duplicate keys, bounded aliases and
    nesting, every problem a ``FILE:LINE:`` error).
    """
    from ..io import read_yaml as read

    path = Path(path)
    if not path.exists():  # a FIFO or a device there is the reader's to refuse
        raise UserError("config file not found", path=str(path))
    data = read(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError("a training config must be a mapping of keys to values", path=str(path))
    return flag_keys(data, str(path))


def flag_keys(values: dict[Any, Any], source: str | None = None) -> dict[str, Any]:
    """Keys spelled as flags (``lora-r``) or fields (``lora_r``) as field names; one key given in both
    spellings is an error, since one of the two values would be dropped without a word."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in out:
            raise UserError(f"key '{name}' is given twice (as '{spelled[name]}' and '{key}')", path=source)
        out[name], spelled[name] = value, str(key)
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """YAML file values, then ``overrides`` (the CLI flags given) on top."""
    values = read_yaml(path) if path else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_config(values, source=str(path) if path else None)
