"""``train(config)``: one training run from data to a finished run folder.

Run folder layout (``config.out``)::

    config.yaml          the resolved configuration (written first)
    sdft_rewrites.jsonl  SDFT only: the seed's rewrites (resumable), sdft.json: share kept
    checkpoints/         Trainer checkpoints (every --save-steps), used by --resume
    train_log.jsonl      one line per optimizer step; every --log-every steps the answer_pos_loss 1..8
    tensorboard/         --report-to tensorboard: the Trainer's event files (train/loss, train/learning_rate, ...)
    model files          safetensors weights (or a LoRA adapter) + tokenizer, written at the end
    summary.json         written last: its presence means the run finished
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError, shorten
from ..provenance import cpu_info
from .config import TrainConfig, make_config, recorded

SUMMARY_FILE = "summary.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINTS = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
REPORT_PACKAGES = {"tensorboard": "tensorboard==2.21.0", "wandb": "wandb==0.31.0"}


def check_report_to(report_to: str) -> None:
    """Fail before any work when ``--report-to`` names a logger that is not installed."""
    if report_to == "none":
        return
    from transformers.integrations import is_tensorboard_available, is_wandb_available

    if not (is_tensorboard_available() if report_to == "tensorboard" else is_wandb_available()):
        raise UserError(f"--report-to {report_to} needs the {report_to} package; install it with: "
                        f"pip install '{REPORT_PACKAGES[report_to]}' (or the [{report_to}] extra)")


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX); without it autocast emulates."""
    capability = ""
    try:
        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # older torch
        pass
    if "AMX" in capability:
        return True
    return bool(cpu_info()[1] & {"avx512_bf16", "amx_bf16"})


def use_bf16(mode: str) -> bool:
    """Resolve ``--bf16 auto|on|off``: auto uses bf16 autocast only where the hardware runs it natively."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_supports_bf16()


def last_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint folder with the highest step, if any."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and _complete(p)]
    return max(found)[1] if found else None


def _complete(checkpoint: Path) -> bool:
    # Trainer writes trainer_state.json last; a kill before or during that write leaves no valid one.
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _apply_adapter(model, cfg: TrainConfig):
    """Wrap ``model`` in LoRA, or freeze the embedding matrix of a full fine-tune when asked."""
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        try:
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
            return get_peft_model(model, lora)
        except (ValueError, TypeError, KeyError) as exc:  # PEFT's message spans lines and lists internals
            linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                             if isinstance(module, torch.nn.Linear)})
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"key 'lora_target_modules': {shorten(detail, 120)}; this model's linear layers are "
                            f"{', '.join(linear) or 'none'} (or use all-linear)") from None
    if cfg.freeze_embeddings:
        # The input embedding (and, when tied, the output projection) is the largest matrix of a
        # small model; freezing it skips its weight gradient and optimizer state.
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def safelora_base(cfg: TrainConfig) -> str:
    """The model the seed was aligned from, for SafeLoRA's alignment matrix: ``safelora_base``, else the
    base an aligned seed's ``align_summary.json`` (beside its model folder) records."""
    if cfg.safelora_base:
        return cfg.safelora_base
    record = Path(cfg.model).expanduser().parent / "align_summary.json"
    if record.is_file():
        from ..io import read_json

        base = read_json(record, "a JSON object").get("base")
        if isinstance(base, str) and base:
            return base
    raise UserError("SafeLoRA needs the model before alignment to compute the alignment matrix: set "
                    f"safelora_base (--safelora-base); {cfg.model} is not an aligned seed that records its base")


def _safelora(trainer, cfg: TrainConfig) -> dict[str, Any]:
    """Project the trained LoRA update (in place, before it is saved) and return what was done."""
    from ..models import load_model
    from .safelora import project_lora, summary

    base = safelora_base(cfg)
    base_model, _ = load_model(base, allow_pickle=cfg.allow_pickle)
    weights = base_model.state_dict()
    del base_model
    try:
        decisions = project_lora(trainer.accelerator.unwrap_model(trainer.model), weights, cfg.safelora_threshold)
    except (KeyError, ValueError) as exc:
        raise UserError(f"safelora_base {base}: {exc.args[0]}") from None
    return {**summary(decisions, cfg.safelora_threshold), "base": base}


def _check_finite(model, cfg: TrainConfig) -> None:
    """Refuse to save weights that hold NaN or infinity: the Trainer logs such steps' loss as 0 by
    default, so a diverged run would otherwise look finished (and `final_loss` fine)."""
    for name, param in model.named_parameters():
        if param.numel() and not bool(torch.isfinite(param.detach()).all()):
            raise UserError(f"training diverged: parameter {shorten(name, 60)} holds NaN or infinity after "
                            f"training at lr {cfg.lr:g}; nothing was saved; lower --lr (or --max-grad-norm)")


def prepare_data(cfg: TrainConfig, model, tokenizer, run_dir: Path, *, progress: bool = True,
                 examples: list[dict[str, Any]] | None = None,
                 ) -> tuple[list[dict[str, Any]], list[dict[str, list[int]]], dict[str, Any]]:
    """Rows as the method sees them (:func:`~lookahead_tuning.train.methods.method_examples`) and
    their token ids.

    ``examples`` are the task rows already read by :func:`load_examples` (read here when omitted).
    """
    from .collator import tokenize_examples
    from .methods import Poison, load_examples, method_examples

    if examples is None:
        examples = load_examples(cfg)
    info: dict[str, Any] = {"task_rows": sum(1 for ex in examples if not ex.get("poison"))}
    poison = Poison.of(cfg)
    if poison is not None:  # clean runs' summaries keep their keys
        info["poison"] = poison.record(examples)
    rewritten = None
    if cfg.rewrite == "sdft":
        rewritten, info["sdft"] = _sdft_rewrites(cfg, model, tokenizer, examples, run_dir, progress)
    examples = method_examples(examples, cfg, tokenizer, rewritten=rewritten)
    info["safety_rows"] = sum(1 for ex in examples if ex.get("safety"))
    rows = tokenize_examples(examples, tokenizer, max_length=cfg.max_length,
                             system_prompt=cfg.system_prompt, template=cfg.chat_template)
    info["data_rows"] = len(rows)
    return examples, rows, info


def _sdft_rewrites(cfg: TrainConfig, model, tokenizer, examples: list[dict[str, Any]], run_dir: Path,
                   progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The seed's rewrites of the gold answers (resumable in the run folder) and their statistics."""
    from accelerate import PartialState

    from .sdft import rewrite_examples

    started = time.perf_counter()
    # Rank 0 generates; the others then find every rewrite in the resumable file.
    with PartialState().main_process_first():
        rewritten, stats = rewrite_examples(
            model, tokenizer, examples, run_dir, batch_size=cfg.sdft_batch_size,
            max_new_tokens=cfg.sdft_max_new_tokens, system_prompt=cfg.system_prompt,
            template=cfg.chat_template, progress=progress)
    stats["rewrite_seconds"] = round(time.perf_counter() - started, 2)
    if PartialState().is_main_process:
        from ..io import atomic_write_json

        atomic_write_json(run_dir / "sdft.json", stats)
    return rewritten, stats


def _save_final(trainer, tokenizer, cfg: TrainConfig, run_dir: Path, state) -> None:
    """Write the model and tokenizer to a staging folder, then move the files into the run folder.

    Every process takes part in ``save_model`` (DeepSpeed ZeRO-3 and FSDP gather shards there);
    only the main process writes and moves files.
    """
    from ..io import follow_umask, writing

    staging = run_dir / ".final-model"
    if state.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    state.wait_for_everyone()
    moved: list[Path] = []
    try:
        # A full disk, a read-only or forbidden folder: the one-line error naming the run folder, and
        # neither the staging folder nor some of the model files left in the run folder.
        with writing(run_dir):
            if cfg.lora and cfg.merge_lora:
                if state.is_main_process:
                    merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
                    merged.save_pretrained(str(staging))
            else:
                trainer.save_model(str(staging))
            state.wait_for_everyone()
            if state.is_main_process:
                tokenizer.save_pretrained(str(staging))
                for name in os.listdir(staging):
                    if name == "training_args.bin":  # a pickle; the resolved config.yaml says the same
                        continue
                    os.replace(staging / name, run_dir / name)
                    moved.append(run_dir / name)
                    follow_umask(run_dir / name)  # safetensors writes through a private temporary file (0600)
    except BaseException:
        if state.is_main_process:
            for path in moved:
                path.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if state.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    state.wait_for_everyone()


def train(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Train one model as ``config`` says and return the run summary (also in ``summary.json``).

    ``--out`` is locked for the whole run (:func:`lookahead_tuning.provenance.take_output`) and must be
    new, empty or a training run folder; ``overwrite`` starts afresh in any folder. A finished run is
    returned as is with ``resume``, and a checkpoint resumed, only when the folder's config.yaml agrees
    on every setting that decides the weights; without ``resume`` an existing run is an error, so
    results are never overwritten by accident.
    """
    from accelerate import PartialState

    from ..provenance import take_output

    started = time.perf_counter()
    cfg = make_config(config).resolved()
    run_dir = Path(cfg.out).expanduser()
    state = PartialState()
    # Only the main process locks (the others are its workers). Before the Trainer sets up the process
    # group every rank of a CPU launch may still call itself main, so the launcher's rank decides too.
    lock = (take_output(run_dir, "train", wait=cfg.wait, folder=False) if state.is_main_process and launch_rank() == 0
            else contextlib.nullcontext())
    with lock:
        return _checked_train(cfg, run_dir, state, started)


def launch_rank() -> int:
    """This process's global rank as its launcher set it (torchrun/accelerate ``RANK``, MPI's), 0 alone."""
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _checked_train(cfg: TrainConfig, run_dir: Path, state, started: float) -> dict[str, Any]:
    from ..chat import render_prompt
    from ..io import output_folder, refuse_overwrite
    from ..models import check_model, load_tokenizer
    from ..provenance import check_owner
    from .methods import load_examples

    # A missing model, unsafe weights, an --out that is one of the inputs or that holds something else,
    # a tokenizer that cannot format chats or bad data fail before the run folder is made (or, with
    # --overwrite, emptied): no half-made run is left behind.
    cfg.check_post()
    source = check_model(cfg.model, allow_pickle=cfg.allow_pickle)
    if cfg.post == "safelora":
        check_model(safelora_base(cfg), allow_pickle=cfg.allow_pickle)
    refuse_overwrite([("--out", run_dir)], run_inputs(cfg, source))
    replace = check_owner(run_dir, "train", overwrite=cfg.overwrite)
    checkpoint = None
    if not replace:
        finished = _resume_point(cfg, run_dir)
        if finished is not None:
            return finished
        checkpoint = last_checkpoint(run_dir) if cfg.resume else None
    check_report_to(cfg.report_to)
    tokenizer = load_tokenizer(cfg.model)
    render_prompt(tokenizer, "check", system_prompt=cfg.system_prompt, template=cfg.chat_template)
    task_rows = load_examples(cfg, tokenizer)
    if replace and state.is_main_process and launch_rank() == 0:
        clear_run_folder(run_dir)
    state.wait_for_everyone()
    # Checks that need the model (an unknown LoRA target module) come after the folder is made; if one
    # fails, or the run stops before it saved anything to resume from, a new folder is removed again.
    folder = output_folder(run_dir, durable=_resumable) if state.is_main_process else contextlib.nullcontext()
    with folder:
        return _train(cfg, run_dir, state, checkpoint, task_rows, started)


def _resume_point(cfg: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The finished run's summary when ``resume`` returns it; ``None`` when training goes ahead. Work
    in the folder (a summary, checkpoints, SDFT rewrites) is reused only when its config.yaml agrees
    with ``cfg`` on every key that decides the weights (:func:`~lookahead_tuning.train.config.settings_difference`),
    else the first differing key is the error."""
    from ..io import has_content, read_json, read_yaml
    from .config import settings_difference

    summary_path = run_dir / SUMMARY_FILE
    finished = summary_path.is_file()
    unfinished = (run_dir / CHECKPOINTS).is_dir() and any((run_dir / CHECKPOINTS).iterdir())
    if finished and not cfg.resume:
        raise UserError(f"{run_dir} already holds a finished run; choose another --out (or pass --resume to "
                        "return it, --overwrite to train afresh)")
    if unfinished and not cfg.resume:
        raise UserError(f"{run_dir} holds checkpoints of an unfinished run; pass --resume, or choose another --out "
                        "(--overwrite trains afresh)")
    reused = finished or unfinished or has_content(run_dir / "sdft_rewrites.jsonl")
    stored_path = run_dir / "config.yaml"
    if reused and stored_path.is_file():
        stored = read_yaml(stored_path)
        diff = (settings_difference(stored, cfg, source=str(stored_path)) if isinstance(stored, dict)
                else "a config.yaml that is not a mapping")
        if diff is not None:
            what = "its summary" if finished else "its checkpoints" if unfinished else "its SDFT rewrites"
            raise UserError(f"this run was trained with other settings ({diff}); {what} would be reused under "
                            "a false label: choose another --out, or pass --overwrite to train afresh",
                            path=str(stored_path))
    if finished:
        return read_json(summary_path, "a JSON object")
    return None


# What a run writes into its folder (besides the model files), all deleted by --overwrite.
RUN_FILES = ("config.yaml", SUMMARY_FILE, LOG_FILE, CHECKPOINTS, TENSORBOARD_DIR, "sdft_rewrites.jsonl", "sdft.json",
             ".final-model")


def clear_run_folder(run_dir: Path) -> None:
    """``--overwrite``: delete what a run writes and every model file (another model's shards would be
    loaded with this one's), nothing else."""
    from ..provenance import is_model_file

    for name in os.listdir(run_dir):
        entry = run_dir / name
        if name not in RUN_FILES and not is_model_file(name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_inputs(cfg: TrainConfig, source) -> list[tuple[str, Any]]:
    """What a run reads, for :func:`lookahead_tuning.io.refuse_overwrite`: the model (and an adapter's
    base), the data, and the folders holding them (the run writes many files into its folder)."""
    inputs: list[tuple[str, Any]] = []
    if source.kind in ("folder", "adapter"):
        inputs.append(("--model", source.path))
    elif source.kind == "gguf":
        inputs += [("--model", Path(source.path) / source.gguf_file), ("the folder of --model", source.path)]
    if source.kind == "adapter" and Path(str(source.base)).expanduser().exists():
        inputs.append(("the base model of --model", source.base))
    for flag, value in (("--data", cfg.data), ("--poison", cfg.poison)):
        data = Path(value).expanduser() if value is not None else None
        if data is not None and data.exists():
            inputs.append((flag, data))
            if data.is_file():
                inputs.append((f"the folder of {flag}", data.parent))
    return inputs


def _resumable(run_dir: Path) -> bool:
    from ..io import has_content

    return has_content(run_dir / CHECKPOINTS, run_dir / "sdft_rewrites.jsonl", run_dir / SUMMARY_FILE)


def _train(cfg: TrainConfig, run_dir: Path, state, checkpoint: Path | None, task_rows: list[dict[str, Any]],
           started: float) -> dict[str, Any]:
    import yaml
    from transformers import TrainingArguments, set_seed

    from ..io import atomic_write_json, atomic_write_text
    from ..models import load_model
    from .collator import PadCollator, count_tokens
    from .trainer import AnswerLossTrainer, LossBar, truncate_log

    summary_path = run_dir / SUMMARY_FILE
    if state.is_main_process:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(recorded(cfg), sort_keys=False))
        if checkpoint is None:
            (run_dir / LOG_FILE).unlink(missing_ok=True)
        else:
            truncate_log(run_dir / LOG_FILE, int(checkpoint.name.split("-")[1]))
    state.wait_for_everyone()

    set_seed(cfg.seed)
    model, tokenizer = load_model(cfg.model, allow_pickle=cfg.allow_pickle)
    progress = not cfg.quiet and state.is_main_process
    examples, rows, info = prepare_data(cfg, model, tokenizer, run_dir, progress=progress, examples=task_rows)

    ref_model = None
    if cfg.loss == "constrained" and not cfg.lora:
        ref_model = copy.deepcopy(model)  # the frozen seed; with LoRA the disabled adapters are the seed
    model = _apply_adapter(model, cfg)
    model.config.use_cache = False
    bf16 = use_bf16(cfg.bf16)

    args = TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_ratio,  # < 1 reads as a ratio of the total steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        bf16=bf16,
        logging_steps=1,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to,
        train_sampling_strategy=cfg.sampling,
        disable_tqdm=not progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = AnswerLossTrainer(
        model=model, args=args, train_dataset=rows, data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer, loss=cfg.loss, beta_schedule=cfg.betas(5) if cfg.beta_schedule is None
        else cfg.beta_schedule, beta_base=cfg.beta_base, ref_model=ref_model,
        answer_only=cfg.answer_only_logits, reference_precision=cfg.reference_precision, log_every=cfg.log_every,
        log_path=run_dir / LOG_FILE if state.is_main_process else None,
    )
    if cfg.report_to == "tensorboard":
        from transformers.integrations import TensorBoardCallback

        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback):  # one fixed folder, not checkpoints/runs/<date_host>
                callback.logging_dir = str(run_dir / TENSORBOARD_DIR)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # The stock callbacks print every log dict (with bars: above the bar; without: to stdout); the
    # records are in train_log.jsonl, the terminal gets one bar with the loss, or nothing when quiet.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(LossBar(f"train {cfg.method}"))
    train_started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - train_started
    if cfg.post == "safelora":
        info["safelora"] = _safelora(trainer, cfg)
    _check_finite(trainer.model, cfg)

    from ..models import quiet_hf_progress

    with quiet_hf_progress() if not progress else contextlib.nullcontext():
        _save_final(trainer, tokenizer, cfg, run_dir, state)

    per_epoch = count_tokens(rows)
    epochs_done = float(trainer.state.epoch or 0.0)
    summary = {
        "run_dir": str(run_dir),
        "method": cfg.method,
        "preview": cfg.preview,
        "loss": cfg.loss,
        "rewrite": cfg.rewrite,
        "safety_share": cfg.safety_share,
        "adapter": "lora" if cfg.lora else "full",
        "merged": bool(cfg.lora and cfg.merge_lora),
        **info,
        "steps": trainer.state.global_step,
        "epochs": round(epochs_done, 4),
        "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        "train_seconds": round(train_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "resumed_from": checkpoint.name if checkpoint else None,
        "tokens_seen": {k: round(v * epochs_done) for k, v in per_epoch.items()},
        "peak_rss_mb": _peak_rss_mb(),
        "bf16": bf16,
        "processes": state.num_processes,
    }
    if torch.cuda.is_available():
        summary["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if state.is_main_process:
        atomic_write_json(summary_path, summary)
    state.wait_for_everyone()
    return summary
