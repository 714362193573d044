"""The training configuration: one pydantic model whose field names are the CLI flags.

A YAML file (``--config``) and the command line speak the same keys (``--lora-r`` is ``lora_r``), and
CLI flags override the file. A *method* is a named preset for four independent choices:

- ``rewrite``: none | sdft (the seed rewrites the gold answers first, SDFT),
- ``safety_share``: the share of built-in refusal pairs mixed into the task rows (0 = none),
- ``preview``: none | real | virtual (the LookAhead data transform),
- ``loss``: cross-entropy | constrained (Constrained SFT, METHOD.md section 4),

plus the adapter (``lora``: full fine-tune or LoRA). Any key set explicitly wins over the preset, so
"real preview with the constrained loss" is ``method: lookahead-real`` + ``loss: constrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import UserError

METHODS = ("vanilla", "lookahead-real", "lookahead-virtual", "constrained-sft", "sdft", "safety-mix")

# method -> the choices it stands for; keys left unset in the config take these values.
PRESETS: dict[str, dict[str, Any]] = {
    "vanilla": {"preview": "none", "loss": "cross-entropy", "rewrite": "none", "safety_share": 0.0},
    "lookahead-real": {"preview": "real", "loss": "cross-entropy", "rewrite": "none", "safety_share": 0.0},
    "lookahead-virtual": {"preview": "virtual", "loss": "cross-entropy", "rewrite": "none", "safety_share": 0.0},
    "constrained-sft": {"preview": "none", "loss": "constrained", "rewrite": "none", "safety_share": 0.0},
    "sdft": {"preview": "none", "loss": "cross-entropy", "rewrite": "sdft", "safety_share": 0.0},
    "safety-mix": {"preview": "none", "loss": "cross-entropy", "rewrite": "none", "safety_share": 0.05},
}


class TrainConfig(BaseModel):
    """Every setting of one training run. Unset preset keys (``None``) are filled by :meth:`resolved`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to train, on what, where
    model: str
    data: str
    out: str
    method: Literal["vanilla", "lookahead-real", "lookahead-virtual", "constrained-sft", "sdft", "safety-mix"] = (
        "vanilla"
    )
    limit: int | None = Field(default=None, ge=1, description="use the first N rows of the data")
    input_field: str | None = None
    output_field: str | None = None

    # the method's four choices (None = from the preset)
    preview: Literal["none", "real", "virtual"] | None = None
    loss: Literal["cross-entropy", "constrained"] | None = None
    rewrite: Literal["none", "sdft"] | None = None
    safety_share: float | None = Field(default=None, ge=0.0, le=1.0)

    # LookAhead preview
    m: int = Field(default=6, ge=0)
    prefix: str = "Let's solve this problem. "
    connector: str = " The answer begins with: "

    # Constrained SFT: beta_1 = base*first, beta_2..5 = base*first5, beta_t = base after (or an explicit list)
    beta_base: float = Field(default=0.1, gt=0)
    beta_first_multiplier: float = Field(default=5.0, gt=0)
    beta_first5_multiplier: float = Field(default=20.0, gt=0)
    beta_schedule: list[float] | None = None

    # SDFT
    sdft_batch_size: int = Field(default=16, ge=1)
    sdft_max_new_tokens: int | None = Field(default=None, ge=1)

    # adapter
    lora: bool = False
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: float = Field(default=32.0, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | str = "all-linear"
    merge_lora: bool = False
    freeze_embeddings: bool = False  # measured no speed gain on this CPU (docs/training.md)

    # optimisation
    epochs: float = Field(default=2.0, gt=0)
    lr: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=512, ge=8)
    seed: int = 0
    # The built-in task's problems come from data_seed, not seed: runs with different training seeds
    # then differ in initialisation order and shuffling only, so their spread measures training noise.
    data_seed: int = 0
    warmup_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    lr_scheduler: str = "linear"
    max_grad_norm: float = Field(default=1.0, ge=0.0)
    bf16: Literal["auto", "on", "off"] = "auto"
    answer_only_logits: bool = True  # project to the vocabulary only at answer positions

    # loading: pickled weights can run code when loaded, so they are refused unless allowed
    allow_pickle: bool = False

    # formatting
    system_prompt: str | None = None
    chat_template: str = "auto"

    # bookkeeping
    save_steps: int = Field(default=0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    save_total_limit: int | None = Field(default=2, ge=1)
    resume: bool = False
    log_every: int = Field(default=10, ge=1, description="log the per-position answer loss every N steps")
    # Where the Trainer also sends its logs (loss, lr, grad norm per step): <out>/tensorboard/ for
    # TensorBoard, the W&B project of WANDB_PROJECT for wandb. train_log.jsonl is written either way.
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    max_steps: int | None = Field(default=None, ge=1)
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

    def resolved(self) -> TrainConfig:
        """A copy with every preset key filled in (what the run folder's ``config.yaml`` records)."""
        values = self.model_dump()
        for key, default in PRESETS[self.method].items():
            if values[key] is None:
                values[key] = default
        return TrainConfig(**values)

    def betas(self, length: int) -> list[float]:
        """beta_t for answer positions t = 1..length (METHOD.md section 4)."""
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


def _explain(exc: ValidationError, source: str | None) -> UserError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err.get("loc", ())) or "config"
    if err.get("type") == "extra_forbidden":
        msg = f"unknown key '{key}'"
    elif err.get("type") == "missing":
        msg = f"missing key '{key}'"
    else:
        msg = f"key '{key}': {err.get('msg')} (got {err.get('input')!r})"
    return UserError(msg, path=source)


def make_config(values: TrainConfig | dict[str, Any], *, source: str | None = None) -> TrainConfig:
    """Validate a dict (from YAML, the CLI or Python) into a :class:`TrainConfig`; errors name the key."""
    if isinstance(values, TrainConfig):
        return values
    if not isinstance(values, dict):
        raise UserError(f"a training config must be a mapping, got {type(values).__name__}", path=source)
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise _explain(exc, source) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (keys as the CLI flags, dashes or underscores)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError("config file not found", path=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise UserError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=str(path),
                        line=None if line is None else line + 1) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError("a training config must be a mapping of keys to values", path=str(path))
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """YAML file values, then ``overrides`` (the CLI flags given) on top."""
    values = read_yaml(path) if path else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_config(values, source=str(path) if path else None)
