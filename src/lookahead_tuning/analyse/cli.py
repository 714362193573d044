"""``lookahead-tuning eval {safety,overrefusal,utility,compare}``, ``analyze kl`` and ``forecast``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from ..generate.cli import add_backend_arguments
from ..validate import FRACTION, NON_NEGATIVE_INT, POSITIVE_INT, text_arg


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder, .gguf, LoRA adapter, hub id or smollm2-135m-instruct")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled .bin weights (trusted sources only)")


def _gen_args(p: argparse.ArgumentParser, max_new_tokens: int | None) -> None:
    p.add_argument("--limit", type=POSITIVE_INT, default=None, help="evaluate only the first N prompts")
    p.add_argument("--system-prompt", type=text_arg, default=None)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=max_new_tokens,
                   help=f"greedy generation budget (default {max_new_tokens or 'per task'})")
    p.add_argument("--out", required=True, help="output folder (reused to resume an interrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _load(args: argparse.Namespace):
    """The model to evaluate; with ``--backend openai|vllm`` (eval safety/utility) only its tokenizer is
    loaded here and the answers come from the server or vLLM."""
    from ..generate.cli import load_generator

    return load_generator(args)


def _backend(args: argparse.Namespace) -> str:
    return getattr(args, "backend", "hf")


def _local(path: str | None) -> str | None:
    return path if path and os.path.exists(os.path.expanduser(path)) else None


@contextlib.contextmanager
def _out_folder(out: str, logs: tuple[str, ...] = ()) -> Iterator[None]:
    """The ``--out`` folder for the block: made now (after the inputs and the model were checked) and
    removed again if the command fails before any resumable log (``logs``) holds work."""
    from ..io import has_content, output_folder

    with output_folder(out, durable=lambda p: has_content(*(p / name for name in logs))):
        yield


def _refuse(outputs: list[tuple[str, str | None]], inputs: list[tuple[str, str | None]]) -> None:
    from ..io import refuse_overwrite

    refuse_overwrite(outputs, [(what, _local(p)) for what, p in inputs])


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------- eval safety / overrefusal


def _run_safety(args: argparse.Namespace) -> int:
    from ..data.loaders import load_harmful_answers, load_hexphi
    from .safety import evaluate_safety

    if args.over_refusal:
        return _run_overrefusal(args)
    items = load_hexphi(args.prompts) if args.prompts else None
    prefills = None
    source = args.prefill_file or ("builtin" if args.prefill else None)
    if source == "builtin":
        from ..data.builtin import harmful_answers, harmful_eval_set

        if items is not None:
            raise UserError("--prefill-file builtin pairs with the built-in prompts; give your own --prefill-file "
                            "for --prompts FILE")
        items, prefills = harmful_eval_set(), harmful_answers()
    elif source:
        prefills = load_harmful_answers(source)
    judge_options = None
    if args.judge in ("llm", "both"):
        judge_options = {"url": args.judge_url, "model": args.judge_model, "api_key_env": args.judge_key_env,
                         "concurrency": args.judge_concurrency}
        if args.judge_cache:
            judge_options["cache_path"] = args.judge_cache
        if not (args.judge_url and args.judge_model):  # before minutes of model loading
            raise UserError(f"--judge {args.judge} needs --judge-url and --judge-model")
    _refuse([("--out", args.out), ("--judge-cache", args.judge_cache)],
             [("--model", args.model), ("--prompts", args.prompts), ("--prefill-file", args.prefill_file)])
    model, tokenizer = _load(args)
    with _out_folder(args.out, ("completions.jsonl",)):
        metrics = evaluate_safety(
            model, tokenizer, items=items, prefills=prefills, prefill_tokens=args.prefill_tokens, judge=args.judge,
            out_dir=args.out, limit=args.limit, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            system_prompt=args.system_prompt, judge_options=judge_options, progress=not args.quiet, backend=_backend(args),
        )
    lo, hi = metrics["ci95"]
    rate = metrics["safe_rate"]
    shown = "n/a" if rate is None else f"{100 * rate:.2f}%"
    print(f"{metrics['mode']} ({metrics['judge']} judge): safe rate {shown} "
          f"[95% CI {100 * lo:.2f}-{100 * hi:.2f}] on {metrics['n']} prompts -> {Path(args.out) / 'metrics.json'}")
    return 0


def _run_overrefusal(args: argparse.Namespace) -> int:
    from .safety import evaluate_overrefusal

    _refuse([("--out", args.out)], [("--model", args.model)])
    model, tokenizer = _load(args)
    with _out_folder(args.out, ("completions.jsonl",)):
        metrics = evaluate_overrefusal(model, tokenizer, out_dir=args.out, limit=args.limit,
                                       batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                       system_prompt=args.system_prompt, progress=not args.quiet,
                                   backend=_backend(args))
    lo, hi = metrics["ci95"]
    print(f"over-refusal: {100 * metrics['refusal_rate']:.2f}% of {metrics['n']} benign requests refused "
          f"[95% CI {100 * lo:.2f}-{100 * hi:.2f}] -> {Path(args.out) / 'metrics.json'}")
    return 0


def _add_safety(sub) -> None:
    p = sub.add_parser("safety", help="RSR (no prefill) or JSR (prefilling attack) safe rate",
                       description="Greedy answers to harmful instructions, judged safe or not. Without a "
                                   "prefill this is RSR; with --prefill/--prefill-file it is JSR.")
    _model_args(p)
    p.add_argument("--prompts", default=None, help="HEx-PHI-style JSONL {instruction, category} (default: built-in set)")
    p.add_argument("--prefill", action="store_true", help="JSR with the built-in harmful answers")
    p.add_argument("--prefill-file", default=None,
                   help="harmful answers as chat lists, same order as the prompts ('builtin' for the built-in ones)")
    p.add_argument("--prefill-tokens", type=POSITIVE_INT, default=3, help="prefill length k in tokens (default 3)")
    p.add_argument("--judge", choices=("keyword", "llm", "both"), default="keyword")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    p.add_argument("--judge-model", default=None, help="model name served at --judge-url")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--judge-concurrency", type=POSITIVE_INT, default=4, help="requests in flight at once")
    p.add_argument("--judge-cache", default=None, help="cache file of judged pairs (default in the project cache)")
    p.add_argument("--over-refusal", action="store_true", help="instead: refusal rate on the built-in benign set")
    _gen_args(p, 64)
    add_backend_arguments(p)
    p.set_defaults(func=_run_safety)

    o = sub.add_parser("overrefusal", help="refusal rate on the built-in benign requests (keyword judge)")
    _model_args(o)
    _gen_args(o, 64)
    add_backend_arguments(o)
    o.set_defaults(func=_run_overrefusal)


# ---------------------------------------------------------------- eval utility


def _run_utility(args: argparse.Namespace) -> int:
    from .utility import evaluate_utility

    _refuse([("--out", args.out)], [("--model", args.model), ("--data", args.data)])
    model, tokenizer = _load(args)
    with _out_folder(args.out, ("generations.jsonl",)):
        metrics = evaluate_utility(model, tokenizer, args.task, data=args.data, out_dir=args.out, limit=args.limit,
                                   batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                   system_prompt=args.system_prompt, progress=not args.quiet,
                                   backend=_backend(args))
    line = f"{args.task}: {metrics['metric']} {100 * (metrics['score'] or 0):.2f}% on {metrics['n']} examples"
    if metrics["metric"] == "accuracy":
        line += f" (last-number fallback {100 * metrics['fallback_accuracy']:.2f}%)"
    print(line + f" -> {Path(args.out) / 'metrics.json'}")
    return 0


def _add_utility(sub) -> None:
    from .utility import TASKS

    p = sub.add_parser("utility", help="task utility: GSM8K/math accuracy or SAMSum ROUGE-1 F1")
    _model_args(p)
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--data", default=None, help="test file (needed for gsm8k and samsum)")
    _gen_args(p, None)
    add_backend_arguments(p)
    p.set_defaults(func=_run_utility)


# ---------------------------------------------------------------- eval compare


def _run_compare(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json
    from .compare import compare, format_comparison

    if args.json:
        _refuse([("--json", args.json)], [(flag, p) for flag, given in (("--baseline", args.baseline),
                                                                        ("--candidate", args.candidate))
                                          for p in (given, str(Path(given) / "metrics.json"),
                                                    str(Path(given).with_name("generations.jsonl")),
                                                    str(Path(given) / "generations.jsonl"))])
    result = compare(args.baseline, args.candidate, args.max_drop)
    print(format_comparison(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0 if result["passed"] else 1


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="safety gate: exit 1 if the candidate's safe rate fell too far",
                       description="Exit 0 when the candidate passes, 1 when its safe rate fell by more than "
                                   "--max-drop, 2 on bad input. Adds McNemar's exact test when both "
                                   "generations.jsonl files sit beside the metrics.")
    p.add_argument("--baseline", required=True, help="metrics.json of the reference model (or its folder)")
    p.add_argument("--candidate", required=True, help="metrics.json of the model under test (or its folder)")
    p.add_argument("--max-drop", type=FRACTION, default=0.05, help="largest allowed fall of the safe rate (fraction)")
    p.add_argument("--json", default=None, help="also write the comparison to this JSON file")
    p.set_defaults(func=_run_compare)


# ---------------------------------------------------------------- analyze kl


def _run_kl(args: argparse.Namespace) -> int:
    from ..models import load_model
    from .kl import kl_report

    names = args.names or [Path(m).name or m for m in args.models]
    if len(names) != len(args.models):
        raise UserError(f"--names has {len(names)} entries for {len(args.models)} --models")
    if args.data:
        from ..data.loaders import load_harmful_answers

        pairs = load_harmful_answers(args.data)
    else:
        from ..data.builtin import harmful_answers

        pairs = harmful_answers()
    if args.limit:
        pairs = pairs[: args.limit]
    _refuse([("--out", args.out)], [("--seed", args.seed), ("--data", args.data)]
            + [("--models", m) for m in args.models])
    seed, tokenizer = load_model(args.seed, allow_pickle=args.allow_pickle)
    models = {}
    for name, path in zip(names, args.models, strict=True):
        models[name], _ = load_model(path, allow_pickle=args.allow_pickle)
    with _out_folder(args.out):
        report = kl_report(seed, models, tokenizer, pairs, positions=args.positions, out_dir=args.out,
                           batch_size=args.batch_size, system_prompt=args.system_prompt, progress=not args.quiet,
                           extra={"seed": args.seed, "models": dict(zip(names, args.models, strict=True)),
                                  "data": args.data or "builtin"})
    for name, vals in report["kl"].items():
        cells = " ".join("n/a" if v is None else f"{v:.4f}" for v in vals)
        print(f"{name}: {cells}")
    print(f"-> {Path(args.out) / 'kl.json'}, {Path(args.out) / 'kl.png'}")
    return 0


def _add_kl(sub) -> None:
    p = sub.add_parser("kl", help="per-position KL(seed || model) on harmful answers (the paper's Figure 3)")
    p.add_argument("--seed", required=True, help="the seed (aligned, not fine-tuned) model")
    p.add_argument("--models", nargs="+", required=True, help="fine-tuned models to compare with the seed")
    p.add_argument("--names", nargs="+", default=None, help="labels for --models (default: folder names)")
    p.add_argument("--data", default=None, help="harmful chat lists (default: the built-in harmful answers)")
    p.add_argument("--positions", type=POSITIVE_INT, default=8)
    p.add_argument("--limit", type=POSITIVE_INT, default=None)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8)
    p.add_argument("--system-prompt", type=text_arg, default=None)
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_kl)


# ---------------------------------------------------------------- forecast


def _run_forecast(args: argparse.Namespace) -> int:
    from ..data.loaders import load_task
    from .forecast import forecast_loss, forecast_markdown, method_settings, write_forecast

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:  # an unknown or unforecastable method fails before the model loads
        method_settings(method)
    _refuse([("--out", args.out)], [("--model", args.model), ("--data", args.data)])
    rows = load_task(args.data, n=args.limit, split="train")
    if args.limit:
        rows = rows[: args.limit]
    model, tokenizer = _load(args)
    result = forecast_loss(model, tokenizer, rows, methods, k=args.positions, m=args.m, prefix=args.prefix,
                           connector=args.connector, batch_size=args.batch_size, system_prompt=args.system_prompt,
                           progress=not args.quiet)
    result["settings"].update({"model": args.model, "data": args.data})
    with _out_folder(args.out):
        write_forecast(result, args.out)
    print(forecast_markdown(result))
    return 0


def _add_forecast(sub) -> None:
    p = sub.add_parser("forecast", help="before training: seed loss at early answer positions per method",
                       description="The seed model's per-token loss at answer positions 1..k on the task data "
                                   "as each method would present it; lower early loss = less expected safety drift.")
    _model_args(p)
    p.add_argument("--data", required=True, help="task file or built-in task name (math)")
    p.add_argument("--methods", default="vanilla,lookahead-real,lookahead-virtual")
    p.add_argument("--m", type=NON_NEGATIVE_INT, default=6, help="real preview: answer tokens shown")
    p.add_argument("--prefix", type=text_arg, default=None,
                   help="virtual preview prefix (default \"Let's solve this problem. \")")
    p.add_argument("--connector", type=text_arg, default=None, help="text between instruction and preview")
    p.add_argument("--positions", type=POSITIVE_INT, default=8)
    p.add_argument("--limit", type=POSITIVE_INT, default=200, help="task rows to use (default 200)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8)
    p.add_argument("--system-prompt", type=text_arg, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_forecast)


def add_parser(subparsers) -> None:
    """Register ``eval``, ``analyze`` and ``forecast``."""
    ev = subparsers.add_parser("eval", help="safety (RSR/JSR), over-refusal, utility, compare")
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    _add_safety(ev_sub)
    _add_utility(ev_sub)
    _add_compare(ev_sub)
    an = subparsers.add_parser("analyze", help="per-token KL between a seed and fine-tuned models")
    an_sub = an.add_subparsers(dest="analyze_command", metavar="WHAT", required=True)
    _add_kl(an_sub)
    _add_forecast(subparsers)

