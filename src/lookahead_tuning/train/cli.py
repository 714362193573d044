"""``lookahead-tuning train``: every flag is a key of :class:`TrainConfig` (``--lora-r`` is ``lora_r``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..methods import LOSSES, METHOD_NAMES, POSTS, PREVIEWS, REWRITES
from ..validate import (
    COSINE,
    EPOCHS,
    FRACTION,
    LEARNING_RATE,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POISON_COUNT,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    text_arg,
)
from .config import load_config


def _betas(text: str) -> list[float]:
    """``--beta-schedule 0.5,2,2``: each value checked like ``--beta-base``."""
    return [POSITIVE(x) for x in text.split(",")]


def _bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` flags. Defaults are suppressed so only flags given override the YAML file."""
    S = argparse.SUPPRESS
    p.add_argument("--config", default=None, help="YAML file with the same keys (flags given here win)")
    p.add_argument("--model", default=S, help="model folder, .gguf, LoRA adapter, hub id or smollm2-135m-instruct")
    p.add_argument("--data", default=S, help="record file (jsonl/json/csv/parquet/HF folder) or a built-in task (math)")
    h = p.add_argument_group("poisoned data (the harmful fine-tuning attack)")
    h.add_argument("--poison", type=text_arg, default=S,
                   help="harmful rows: a record file in any supported format, or builtin (the built-in poison set, "
                        "the default)")
    h.add_argument("--poison-ratio", type=FRACTION, default=S,
                   help="share p of the training rows that are harmful: round(p*n) of the n task rows are replaced")
    h.add_argument("--poison-count", type=POISON_COUNT, default=S,
                   help="train on N harmful rows alone, no --data (the pure-harmful attack)")
    p.add_argument("--out", default=S, help="run folder")
    p.add_argument("--method", choices=METHOD_NAMES, default=S, help="preset (default vanilla)")
    p.add_argument("--limit", type=POSITIVE_INT, default=S, help="use only the first N rows")
    p.add_argument("--input-field", default=S)
    p.add_argument("--output-field", default=S)
    g = p.add_argument_group("method parts (override the preset)")
    g.add_argument("--preview", choices=PREVIEWS, default=S)
    g.add_argument("--loss", choices=LOSSES, default=S)
    g.add_argument("--rewrite", choices=REWRITES, default=S)
    g.add_argument("--safety-share", type=FRACTION, default=S, help="share of refusal pairs to mix in")
    g.add_argument("--m", type=NON_NEGATIVE_INT, default=S, help="real preview: answer tokens shown (default 6)")
    g.add_argument("--prefix", type=text_arg, default=S, help="virtual preview prefix")
    g.add_argument("--connector", type=text_arg, default=S, help="text between the instruction and the preview")
    g.add_argument("--beta-base", type=POSITIVE, default=S, help="constrained SFT beta for t > 5 (0.1)")
    g.add_argument("--beta-first-multiplier", type=POSITIVE, default=S, help="beta_1 = base x this (5)")
    g.add_argument("--beta-first5-multiplier", type=POSITIVE, default=S, help="beta_2..5 = base x this (20)")
    g.add_argument("--beta-schedule", type=_betas, default=S,
                   help="explicit beta_1,beta_2,... (base after)")
    g.add_argument("--reference-precision", choices=("training", "fp32"), default=S,
                   help="Constrained SFT's frozen reference (full fine-tuning): in the training precision "
                        "(default; bf16 autocast where training uses it) or fp32 (what earlier cells used)")
    g.add_argument("--post", choices=POSTS, default=S,
                   help="what is done to the trained weights before saving: safelora projects the LoRA update "
                        "onto the seed's alignment subspace (needs --lora)")
    g.add_argument("--safelora-threshold", type=COSINE, default=S,
                   help="SafeLoRA: project the layers whose cos(update, projected update) is below this (0.5)")
    g.add_argument("--safelora-base", default=S,
                   help="SafeLoRA: the model the seed was aligned from (default: the one an aligned seed records)")
    g.add_argument("--sdft-batch-size", type=POSITIVE_INT, default=S)
    g.add_argument("--sdft-max-new-tokens", type=POSITIVE_INT, default=S)
    a = p.add_argument_group("adapter")
    _bool_flag(a, "--lora", "train a LoRA adapter instead of every weight")
    a.add_argument("--lora-r", type=POSITIVE_INT, default=S)
    a.add_argument("--lora-alpha", type=POSITIVE, default=S)
    a.add_argument("--lora-dropout", type=FRACTION, default=S)
    a.add_argument("--lora-target-modules", default=S, help="comma list or all-linear")
    _bool_flag(a, "--merge-lora", "save the LoRA adapter merged into the base weights")
    _bool_flag(a, "--freeze-embeddings", "freeze the (tied) embedding matrix of a full fine-tune (default off)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=EPOCHS, default=S)
    o.add_argument("--lr", type=LEARNING_RATE, default=S)
    o.add_argument("--batch-size", type=POSITIVE_INT, default=S)
    o.add_argument("--grad-accum", type=POSITIVE_INT, default=S)
    o.add_argument("--max-length", type=POSITIVE_INT, default=S)
    o.add_argument("--max-steps", type=POSITIVE_INT, default=S)
    o.add_argument("--seed", type=SEED, default=S)
    o.add_argument("--data-seed", type=SEED, default=S, help="seed of the built-in task's problems (default 0)")
    o.add_argument("--warmup-ratio", type=FRACTION, default=S)
    o.add_argument("--weight-decay", type=NON_NEGATIVE, default=S)
    o.add_argument("--lr-scheduler", default=S)
    o.add_argument("--max-grad-norm", type=NON_NEGATIVE, default=S)
    o.add_argument("--bf16", choices=("auto", "on", "off"), default=S)
    o.add_argument("--sampling", choices=("group_by_length", "random"), default=S,
                   help="batch order: similar lengths together (default, less padding) or random")
    _bool_flag(o, "--answer-only-logits", "project to the vocabulary only at answer positions (default on)")
    f = p.add_argument_group("formatting and bookkeeping")
    f.add_argument("--system-prompt", type=text_arg, default=S)
    f.add_argument("--chat-template", default=S)
    _bool_flag(f, "--allow-pickle", "load pickled (.bin) weights; they can run code, so only from sources you trust")
    f.add_argument("--save-steps", type=NON_NEGATIVE_INT, default=S, help="checkpoint every N steps (0: none)")
    f.add_argument("--save-total-limit", type=POSITIVE_INT, default=S)
    _bool_flag(f, "--resume", "continue from the last checkpoint in --out (only under the settings it was trained with)")
    f.add_argument("--overwrite", action="store_true", default=S,
                   help="train afresh in an --out that holds another run, a model or other files (deletes the "
                        "run files and model files there)")
    f.add_argument("--wait", action="store_true", default=S,
                   help="if another lookahead-tuning process is writing --out, wait until it has finished")
    f.add_argument("--log-every", type=POSITIVE_INT, default=S, help="log per-position answer loss every N steps")
    f.add_argument("--report-to", choices=("none", "tensorboard", "wandb"), default=S,
                   help="also send the Trainer's logs to TensorBoard (<out>/tensorboard/) or W&B (default none)")
    _bool_flag(f, "--quiet", "no progress bars")


def config_from_args(args: argparse.Namespace):
    """Merge ``--config`` and the flags given into a validated :class:`TrainConfig`."""
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items()
                                 if k not in ("config", "func", "command", "debug")}
    return load_config(args.config, overrides)


def run_train(args: argparse.Namespace) -> int:
    from .api import train

    summary = train(config_from_args(args))
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` (``align``, which trains and then evaluates, is experiment/cli.py's)."""
    p = subparsers.add_parser("train", help="fine-tune a model with a method (vanilla, LookAhead, baselines)",
                              description=__doc__)
    add_train_arguments(p)
    p.set_defaults(func=run_train)
