"""A thin ``transformers.Trainer`` subclass: answer-only loss, optional Constrained SFT, per-position logging.

The Hugging Face ``Trainer`` keeps checkpointing, resume (optimizer, scheduler, RNG, data position),
logging, gradient accumulation and accelerate/DeepSpeed/FSDP; this class only replaces the loss.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..io import writing
from ..methods import LOSSES
from .losses import (
    answer_logprobs,
    beta_tensor,
    constrained_sft_loss,
    cross_entropy,
    position_loss_sums,
)

LOGGED_POSITIONS = 8


class AnswerLossTrainer(Trainer):
    """Trainer whose loss is computed on answer tokens only.

    ``loss``: ``"cross-entropy"`` or ``"constrained"``. For the constrained loss the reference is
    ``ref_model`` (a frozen copy, full fine-tuning; ``reference_precision`` ``"training"`` runs it under
    the trained model's autocast, ``"fp32"`` without) or, when ``ref_model`` is None, the trained PEFT
    model with its adapters disabled (the seed, with no second copy in memory, in the training precision).
    """

    # compute_loss returns a per-micro-batch mean; Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, loss: str = "cross-entropy", beta_schedule: list[float] | None = None,
                 beta_base: float = 0.1, ref_model: torch.nn.Module | None = None, answer_only: bool = True,
                 reference_precision: str = "training", log_every: int = 10, log_path: str | Path | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}")
        self.loss_kind = loss
        self.beta_schedule = list(beta_schedule or [])
        self.beta_base = beta_base
        self.answer_only = answer_only
        self.log_every = log_every
        self.log_path = Path(log_path) if log_path else None
        self.ref_model = ref_model
        self.reference_precision = reference_precision
        if ref_model is not None:
            ref_model.to(self.args.device).eval().requires_grad_(False)
        self._pos_sums = [0.0] * LOGGED_POSITIONS
        self._pos_counts = [0] * LOGGED_POSITIONS

    def _reference_logprobs(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            if self.ref_model is not None:
                # The trained model runs under accelerate's autocast (bf16 where training uses it); the
                # frozen copy is not accelerate's, so it gets that autocast here ("training") or none (fp32).
                precision = (self.accelerator.autocast() if self.reference_precision == "training"
                             else contextlib.nullcontext())
                with precision:
                    return answer_logprobs(self.ref_model, inputs, answer_only=self.answer_only).logp
            inner = self.accelerator.unwrap_model(model)
            if not hasattr(inner, "disable_adapter"):
                raise RuntimeError("the constrained loss needs a reference: a frozen copy or a PEFT model")
            with inner.disable_adapter():
                return answer_logprobs(inner, inputs, answer_only=self.answer_only).logp

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        tokens = answer_logprobs(model, inputs, answer_only=self.answer_only)
        if self.loss_kind == "constrained":
            ref = self._reference_logprobs(model, inputs)
            betas = beta_tensor(tokens.position, self.beta_schedule, self.beta_base)
            loss = constrained_sft_loss(tokens.logp, ref, betas)
        else:
            loss = cross_entropy(tokens)
        if model.training:
            sums, counts = position_loss_sums(tokens, LOGGED_POSITIONS)
            self._pos_sums = [a + b for a, b in zip(self._pos_sums, sums, strict=True)]
            self._pos_counts = [a + b for a, b in zip(self._pos_counts, counts, strict=True)]
        return (loss, {"logp": tokens.logp}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        step = self.state.global_step
        if "loss" in logs and step % self.log_every == 0 and any(self._pos_counts):
            logs["answer_pos_loss"] = [round(s / c, 5) if c else None
                                       for s, c in zip(self._pos_sums, self._pos_counts, strict=True)]
            self._pos_sums = [0.0] * LOGGED_POSITIONS
            self._pos_counts = [0] * LOGGED_POSITIONS
        # Loggers (TensorBoard, W&B) take scalars: each position is its own series there, while
        # train_log.jsonl keeps the list.
        scalars = {k: v for k, v in logs.items() if k != "answer_pos_loss"}
        for i, value in enumerate(logs.get("answer_pos_loss") or [], start=1):
            if value is not None:
                scalars[f"answer_pos_loss/{i}"] = value
        super().log(scalars, start_time)
        if "loss" in logs and self.log_path is not None and self.is_world_process_zero():
            record = {"step": step, **{k: v for k, v in logs.items() if k != "total_flos"}}
            with writing(self.log_path), open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
                fh.flush()

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, with a failed write (a full disk: safetensors, torch.save and JSON
        all fail their own way) as the one-line error naming the checkpoint, and the checkpoint removed:
        a resume must never find half of one."""
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        try:
            with writing(folder):
                super()._save_checkpoint(model, trial)
        except BaseException:
            if self.is_world_process_zero():
                shutil.rmtree(folder, ignore_errors=True)
            raise


class LossBar(ProgressCallback):
    """One training bar with the latest loss in its postfix.

    The stock bar writes every log dictionary (``{'loss': ..., 'answer_pos_loss/1': ...}``) above itself,
    one line a step; those records belong in ``train_log.jsonl`` (and TensorBoard when asked), not in
    the terminal of someone watching a run.
    """

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(self.desc, refresh=False)
            self.training_bar.unit = "step"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and isinstance(logs.get("loss"), (int, float)):
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines past ``last_step`` (written after the checkpoint a resumed run restarts from).

    A line cut short by a kill is dropped too; the file is replaced atomically.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if record.get("step", 0) <= last_step:
                kept.append(line)
    from ..io import atomic_write_text

    atomic_write_text(path, "".join(k + "\n" for k in kept))
