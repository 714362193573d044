"""``lookahead-tuning run CONFIG --dry-run``: the plan, data sizes, token counts and cost, without weights.

Before renting four GPUs for a day a user wants to know what will run and roughly what it costs.
Everything here reads only configs, tokenizers and data files:

- token counts come from the model's own tokenizer when it is on this machine (a local folder or the
  Hugging Face cache, never the network), else from the embedded SmolLM2 tokenizer — then every
  count is labelled an *estimate*, because another tokenizer splits text differently;
- training FLOPs use the standard ``6 x parameters x tokens`` per epoch (forward + backward), plus
  ``2 x parameters x tokens`` for Constrained SFT's reference forward pass; GPU-hours divide by an
  *assumed* sustained throughput (``assumed_tflops``), stated in the output.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..data.tasks import BUILTIN_TEST_N, get_task, load_task
from ..errors import UserError
from ..io import read_json
from ..methods import SEED_ROW
from ..train.methods import Poison, Recipe, effective, harmful_rows, method_examples
from .config import ExperimentConfig, TaskSpec
from .plan import plan_cells


def _tokenizer(cfg: ExperimentConfig) -> tuple[Any, str, bool]:
    """``(tokenizer, where it came from, exact?)`` without touching the network or any weights."""
    from ..models import EMBEDDED_ALIAS, is_embedded, load_tokenizer

    name = cfg.model.seed or (cfg.model.align or {}).get("base") or EMBEDDED_ALIAS
    path = Path(str(name)).expanduser()
    try:
        if is_embedded(name) or path.exists():
            return load_tokenizer(str(name)), str(name), True
        if "/" in str(name):
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(name), local_files_only=True)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            return tok, str(name), True
    except (OSError, ValueError, UserError):
        pass
    return load_tokenizer(EMBEDDED_ALIAS), f"{EMBEDDED_ALIAS} (stand-in for {name})", False


def _params(cfg: ExperimentConfig) -> tuple[float | None, str]:
    """Parameter count: the config's ``params``, else estimated from a local ``config.json``."""
    if cfg.params:
        return cfg.params, "from the config's 'params'"
    name = cfg.model.seed or (cfg.model.align or {}).get("base") or ""
    candidates = [Path(str(name)).expanduser() / "config.json"]
    from ..models import embedded_model_path, is_embedded

    if is_embedded(name):
        candidates.append(embedded_model_path() / "config.json")
    for cand in candidates:
        if cand.is_file():
            c = read_json(cand, "a JSON object")
            h, layers, vocab = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
            inter = c.get("intermediate_size") or 4 * (h or 0)
            if h and layers and vocab:
                heads, kv = c.get("num_attention_heads") or 1, c.get("num_key_value_heads") or c.get(
                    "num_attention_heads") or 1
                attn = 2 * h * h + 2 * h * (h * kv // heads)
                per_layer = attn + 3 * h * inter
                emb = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
                return float(layers * per_layer + emb), f"estimated from {cand}"
    return None, "unknown (set 'params' in the config)"


def _train_rows(cfg: ExperimentConfig, task: TaskSpec) -> tuple[list[dict] | None, str | None]:
    from .runner import task_examples

    try:
        return task_examples(cfg, task), None
    except UserError as exc:
        return None, exc.render()


def _test_size(task: TaskSpec) -> tuple[int | None, str | None]:
    try:
        if get_task(task.kind).builtin:
            return task.n_test or BUILTIN_TEST_N, None
        rows = load_task(f"{task.kind}:{task.test}", split="test")
        return min(len(rows), task.n_test or len(rows)), None
    except UserError as exc:
        return None, exc.render()


SAMPLE_ROWS = 1000  # rows tokenized per task; larger sets are scaled up from this sample


# Training keys besides the recipe that decide a method's token counts (and its FLOPs: the loss).
TOKEN_KEYS = ("max_length", "system_prompt", "chat_template", "loss")


def _data_key(values: dict[str, Any]) -> str:
    """The settings that change what a method's training data looks like (not the seed)."""
    recipe = dataclasses.asdict(Recipe.of(values))
    del recipe["seed"]
    poison = Poison.of(values)
    return json.dumps({**recipe, **{k: effective(values, k) for k in TOKEN_KEYS},
                       **({"poison": dataclasses.asdict(poison)} if poison else {})}, sort_keys=True, default=str)


def _tokens(examples: list[dict], values: dict[str, Any], tokenizer) -> dict[str, Any]:
    """Tokens one epoch of a method trains on (its data as training builds it, ``method_examples``).

    Sets larger than :data:`SAMPLE_ROWS` are counted on an evenly spaced sample of the task rows and
    scaled up, which keeps the dry run to seconds on a 7k-row set; the result says so. SDFT's answers
    are the seed's rewrites, made at run time: they are counted as the gold answers they replace.
    """
    import warnings

    from ..train.collator import count_tokens, tokenize_examples

    setting = {k: effective(values, k) for k in (*TOKEN_KEYS, "epochs")}
    poison = Poison.of(values)
    if poison is not None:  # the rows a poisoned cell trains on (harmful rows alone for the pure attack)
        examples = poison.mix([] if poison.count is not None else examples, harmful_rows(poison.source))
    step = max(1, -(-len(examples) // SAMPLE_ROWS))
    sample = examples[::step]
    rows = method_examples(sample, Recipe.of(values), tokenizer, rewritten=sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoded = tokenize_examples(rows, tokenizer, max_length=setting["max_length"],
                                    system_prompt=setting["system_prompt"], template=setting["chat_template"])
    counts = count_tokens(encoded)
    scale = len(examples) / len(sample)
    kept = round(len(encoded) * scale)
    return {"total": round(counts["total"] * scale), "answer": round(counts["answer"] * scale), "rows": kept,
            "epochs": setting["epochs"], "sampled": len(sample) if step > 1 else None, "loss": setting["loss"]}


def dry_run(cfg: ExperimentConfig) -> dict[str, Any]:
    """The plan as a dict: cells, data sizes, tokens and estimated cost per cell and in total."""
    tokenizer, tok_source, exact = _tokenizer(cfg)
    params, params_source = _params(cfg)
    gpus = cfg.launcher.num_processes if cfg.launcher else 1
    cells = plan_cells(cfg)
    tasks: dict[str, Any] = {}
    examples: dict[str, list[dict] | None] = {}
    for task in cfg.tasks:
        rows, train_err = _train_rows(cfg, task)
        n_test, test_err = _test_size(task)
        examples[task.name] = rows
        tasks[task.name] = {"kind": task.kind, "train": task.train, "test": task.test,
                            "train_rows": None if rows is None else len(rows), "train_error": train_err,
                            "test_rows": n_test, "test_error": test_err}
    planned = []
    total_flops = 0.0
    flops_known = True
    token_cache: dict[str, dict[str, int]] = {}
    for cell in cells:
        entry: dict[str, Any] = {"cell_id": cell.cell_id, "method": cell.method, "task": cell.task,
                                 "seed": cell.seed, "sweep": dict(cell.sweep)}
        rows = examples[cell.task]
        if cell.trained and rows is not None:
            key = cell.task + _data_key(cell.train)
            if key not in token_cache:
                token_cache[key] = _tokens(rows, cell.train, tokenizer)
            tokens = token_cache[key]
            entry["tokens_per_epoch"] = tokens["total"]
            entry["answer_tokens_per_epoch"] = tokens["answer"]
            entry["train_rows"] = tokens["rows"]
            entry["epochs"] = tokens["epochs"]
            entry["sampled_rows"] = tokens["sampled"]
            if params:
                # Constrained SFT's loss adds a forward pass of the frozen seed (2 x params x tokens).
                factor = 8.0 if tokens["loss"] == "constrained" else 6.0
                flops = factor * params * tokens["total"] * tokens["epochs"]
                entry["train_flops"] = flops
                total_flops += flops
            else:
                flops_known = False
        elif cell.trained:
            flops_known = False
        planned.append(entry)
    gpu_hours = total_flops / (cfg.assumed_tflops * 1e12) / 3600 if params else None
    present = [err for task in cfg.tasks
               for path, err in ((task.train, tasks[task.name]["train_error"]), (task.test, tasks[task.name]["test_error"]))
               if err and path and os.path.exists(os.path.expanduser(path))]
    return {
        "name": cfg.name,
        "input_errors": present,  # files that are here but cannot be read: the run would refuse them
        "cells": planned,
        "n_cells": len(planned),
        "tasks": tasks,
        "tokenizer": tok_source,
        "tokens_exact": exact,
        "params": params,
        "params_source": params_source,
        "gpus": gpus,
        "launcher": None if cfg.launcher is None else cfg.launcher.model_dump(),
        "assumed_tflops_per_gpu": cfg.assumed_tflops,
        "train_flops": total_flops if params else None,
        "cost_complete": flops_known and params is not None,
        "gpu_hours": gpu_hours,
        "wall_hours": None if gpu_hours is None else gpu_hours / gpus,
        "evaluation": {"safety": cfg.eval.safety or "built-in held-out harmful set",
                       "safety_files_present": _present(cfg.eval.safety, cfg.eval.harmful_answers),
                       "judge": cfg.eval.judge, "prefill_tokens": cfg.eval.prefill_tokens,
                       "max_new_tokens": cfg.eval.max_new_tokens,
                       **({"prefill_depths": cfg.eval.prefill_depths} if cfg.eval.prefill_depths else {})},
    }


def _present(*paths: str | None) -> bool:
    return all(p is None or os.path.exists(p) for p in paths)


def format_plan(plan: dict[str, Any]) -> str:
    """The dry run as text for the terminal."""
    est = "" if plan["tokens_exact"] else " (ESTIMATE: the model's tokenizer is not on this machine)"
    lines = [f"experiment '{plan['name']}': {plan['n_cells']} cells (no weights loaded)", "", "data:"]
    for name, t in plan["tasks"].items():
        train = t["train_rows"] if t["train_rows"] is not None else f"unknown ({t['train_error']})"
        test = t["test_rows"] if t["test_rows"] is not None else f"unknown ({t['test_error']})"
        lines.append(f"  {name} [{t['kind']}]: train rows {train}; test rows {test}")
    ev = plan["evaluation"]
    lines.append(f"  safety: {ev['safety']}" + ("" if ev["safety_files_present"] else " (FILES MISSING)")
                 + f"; judge {ev['judge']}; JSR prefill {ev['prefill_tokens']} tokens"
                 + (f"; depth curve at k = {', '.join(map(str, ev['prefill_depths']))}" if ev.get("prefill_depths")
                    else ""))
    lines += ["", f"tokens counted with: {plan['tokenizer']}{est}", "", "cells:"]
    for c in plan["cells"]:
        if c["method"] == SEED_ROW:
            lines.append(f"  {c['cell_id']}: no training (evaluation only)")
        elif "tokens_per_epoch" in c:
            flops = f", {c['train_flops']:.3g} FLOPs" if "train_flops" in c else ""
            lines.append(f"  {c['cell_id']}: {c['train_rows']} rows x {c['epochs']:g} epochs, "
                         f"{c['tokens_per_epoch']:,} tokens/epoch ({c['answer_tokens_per_epoch']:,} answer){flops}")
        else:
            lines.append(f"  {c['cell_id']}: training data unavailable, size unknown")
    lines.append("")
    params = "unknown" if plan["params"] is None else f"{plan['params']:.3g}"
    lines.append(f"parameters: {params} ({plan['params_source']})")
    sampled = [c for c in plan["cells"] if c.get("sampled_rows")]
    if sampled:
        est += f" (scaled up from {sampled[0]['sampled_rows']} sampled rows per set)"
    if plan["gpu_hours"] is None:
        lines.append("estimated cost: unknown (set 'params' in the config)")
    else:
        if not plan["cost_complete"]:
            lines.append("estimated cost covers ONLY the cells whose training data was found:")
        lines.append(f"estimated training compute: {plan['train_flops']:.3g} FLOPs = 6 x params x tokens x epochs "
                     f"(8 x with the constrained loss){est}")
        lines.append(f"  = {plan['gpu_hours']:.3g} GPU-hours at an ASSUMED {plan['assumed_tflops_per_gpu']:g} TFLOP/s "
                     f"sustained per GPU; {plan['wall_hours']:.3g} h wall on {plan['gpus']} GPU(s); evaluation "
                     "and SDFT rewriting not included")
    if plan["launcher"]:
        lines.append(f"training launched with: accelerate launch --config_file {plan['launcher']['accelerate_config']}"
                     f" --num_processes {plan['launcher']['num_processes']}")
    return "\n".join(lines)
