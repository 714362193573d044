"""``lookahead-tuning run CONFIG.yaml``, ``demo``, ``rejudge``, ``study-summary`` and ``align`` (the stage that stands above
training and evaluation: it drives both)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import UserError
from ..io import read_json
from ..methods import SEED_ROW
from ..provenance import add_lock_arguments
from ..validate import POSITIVE_INT
from .executors import EXECUTORS


def _finish(run_dir: Path, started: float) -> None:
    from ..report.tables import main_table

    results = read_json(run_dir / "results.json", "a JSON object")
    print()
    print(main_table(results))
    print(f"\nreport: {run_dir / 'report.md'}  ({time.perf_counter() - started:.0f} s)")


def _refused(plan: dict) -> int:
    """A dry run's exit: 0, or the one-line error of a data file that is here but that the run would refuse."""
    if plan["input_errors"]:
        raise UserError(f"{plan['input_errors'][0]} (the run would refuse it)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .config import load_experiment
    from .runner import resolve_output, run_experiment

    cfg = with_executor(load_experiment(args.config, {"data_dir": args.data_dir}), args)
    if args.dry_run:
        from .dryrun import dry_run, format_plan

        plan = dry_run(cfg)  # files not there yet (data on the cluster) are reported as unknown sizes
        print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
        return _refused(plan)

    started = time.perf_counter()
    text = Path(args.config).read_text(encoding="utf-8")
    out = resolve_output(cfg, args.out)
    command = ["lookahead-tuning", "run", args.config, "--out", str(out)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    run_dir = run_experiment(cfg, out=out, progress=not args.quiet, command=command, config_text=text,
                             overwrite=args.overwrite, wait=args.wait)
    _finish(run_dir, started)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import check_gsm8k_dir, default_out, demo_config

    if args.gsm8k_dir:
        check_gsm8k_dir(args.gsm8k_dir)
    cfg = with_executor(demo_config(quick=args.quick, full=args.full, gsm8k_dir=args.gsm8k_dir), args)
    if args.dry_run:
        from .dryrun import dry_run, format_plan

        plan = dry_run(cfg)
        print(format_plan(plan))
        return _refused(plan)
    import yaml

    from .runner import run_experiment

    started = time.perf_counter()
    out = Path(args.out) if args.out else default_out(args.quick)
    command = ["lookahead-tuning", "demo", "--out", str(out)] + [
        flag for flag, on in (("--quick", args.quick), ("--full", args.full)) if on]
    if args.gsm8k_dir:
        command += ["--gsm8k-dir", args.gsm8k_dir]
    run_dir = run_experiment(cfg, out=out, progress=not args.quiet, command=command,
                             config_text=yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
                             overwrite=args.overwrite, wait=args.wait)
    _finish(run_dir, started)
    return 0


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor --workers --threads --ray-address``: how the cells are spread (never what they compute)."""
    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help="local: one cell after another here (default); processes: --workers processes on "
                             "this machine; ray: Ray tasks (a local Ray, or the cluster at --ray-address)")
    parser.add_argument("--workers", type=POSITIVE_INT, default=None, help="cells computed at once (default 1)")
    parser.add_argument("--threads", type=POSITIVE_INT, default=None,
                        help="torch threads per worker (default: the cores divided among the workers)")
    parser.add_argument("--ray-address", default=None, help="with --executor ray: the cluster to join")


def with_executor(cfg, args: argparse.Namespace):
    """``cfg`` with the executor flags given on the command line over its ``executor:`` block."""
    flags = {"kind": args.executor, "workers": args.workers, "threads": args.threads, "address": args.ray_address}
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return cfg
    from pydantic import ValidationError

    from .executors import ExecutorSpec

    try:
        spec = ExecutorSpec(**{**cfg.executor.model_dump(), **given})
    except ValidationError as exc:  # the flags are checked by argparse: what is left is how they combine
        raise UserError(f"--workers {given.get('workers', cfg.executor.workers)}: "
                        f"{str(exc.errors()[0].get('msg', exc)).removeprefix('Value error, ')}") from None
    return cfg.model_copy(update={"executor": spec})


def _rejudge(args: argparse.Namespace) -> int:
    from ..analyse.cli import judge_options_from_args
    from .rejudge import rejudge

    if args.judge is None and args.scorer is None:
        raise UserError("say what to re-judge with: --judge and/or --scorer")
    options = judge_options_from_args(args) if args.judge else None
    started = time.perf_counter()
    target = rejudge(args.run_dir, judge=args.judge, scorer=args.scorer, judge_options=options, out=args.out,
                     progress=not args.quiet, wait=args.wait)
    _finish(target, started)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``run``, ``demo``, ``rejudge``, ``align`` and ``study-summary``."""
    p = subparsers.add_parser("run", help="run an experiment grid from a YAML config (resumable)",
                              description="Train and evaluate every cell of an experiment config; finished cells "
                              "are skipped on a rerun. See docs/experiment.md.")
    p.add_argument("config", help="experiment YAML (e.g. configs/demo.yaml, configs/paper-llama2-7b.yaml)")
    p.add_argument("--out", help="run folder (default: the config's 'output', else runs/<name>-<timestamp>)")
    p.add_argument("--data-dir", help="replaces {data_dir} in the config's data paths")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan, data sizes, token counts and estimated cost; load no weights")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that holds another command's files or a run (deletes the "
                        "files a run writes there)")
    add_lock_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_executor_arguments(p)
    p.set_defaults(func=_run)

    d = subparsers.add_parser("demo", help="the paper's experiment on the embedded model (offline, CPU)",
                              description="Align the embedded SmolLM2-135M-Instruct (cached), fine-tune it on a "
                              "GSM8K-style task with seed / vanilla / LookAhead (real, virtual), evaluate safety "
                              "and utility, write a report.")
    d.add_argument("--out", help="run folder (default runs/demo-<timestamp>); an existing one is resumed")
    d.add_argument("--quick", action="store_true", help="fewer examples and steps (minutes; checks the install)")
    d.add_argument("--full", action="store_true", help="add the second task (built-in dialogue summaries, ROUGE-1) with the same rows")
    d.add_argument("--gsm8k-dir", help="train and test on real GSM8K from this folder (train.jsonl, test.jsonl)")
    d.add_argument("--dry-run", action="store_true", help="print the plan only")
    d.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that holds another command's files or a run")
    add_lock_arguments(d)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    add_executor_arguments(d)
    d.set_defaults(func=_demo)

    from ..analyse.cli import add_judge_arguments
    from ..analyse.utility import SCORERS

    j = subparsers.add_parser("rejudge", help="judge a finished run's kept answers again (no model is loaded)",
                              description="Re-judge every finished cell of RUN_DIR from the answers the cells keep, "
                              "with another judge and/or scorer, and rewrite its cells, config.yaml, results and "
                              "report (in place, or into --out).")
    j.add_argument("run_dir")
    add_judge_arguments(j, default_text="the run's")
    j.add_argument("--scorer", choices=SCORERS, default=None, help="GSM8K/math scorer (default: the run's)")
    j.add_argument("--out", default=None, help="write the re-judged run here instead of rewriting RUN_DIR")
    add_lock_arguments(j)
    j.add_argument("--quiet", action="store_true", help="no progress bars")
    j.set_defaults(func=_rejudge)

    _add_align(subparsers)
    _add_study_summary(subparsers)


def _add_align(sub: argparse._SubParsersAction) -> None:
    from ..models import EMBEDDED_ALIAS
    from ..validate import EPOCHS, FRACTION, LEARNING_RATE, POSITIVE_INT, SEED
    from .align import BENIGN_REPEAT, DEFAULTS, HARM_ADJACENT, RECIPES, RECOVERY_K, RECOVERY_SHARE, SAMPLING

    p = sub.add_parser("align", help="make the safety-aligned seed model (cached)",
                       description="Safety-align a chat model on the built-in refusal data (cached).")
    p.add_argument("--model", default=EMBEDDED_ALIAS, help="base model (default: the embedded SmolLM2)")
    p.add_argument("--out", help="also link the aligned model here")
    # Every setting defaults to None: unset, it comes from --recipe, else from align's defaults (seed D).
    p.add_argument("--recipe", choices=tuple(RECIPES),
                   help="a named seed's settings (the flags below override them); default: align's defaults, "
                        "seed D's recipe; E adds the safety-recovery rows")
    p.add_argument("--epochs", type=EPOCHS, help=f"default {DEFAULTS['epochs']:g}")
    p.add_argument("--lr", type=LEARNING_RATE, help=f"default {DEFAULTS['lr']:g}")
    p.add_argument("--seed", type=SEED, help=f"default {DEFAULTS['seed']}")
    p.add_argument("--benign-repeat", type=POSITIVE_INT,
                   help=f"times each benign pair is seen per epoch (default {BENIGN_REPEAT})")
    p.add_argument("--no-template-matched", dest="template_matched", action="store_false", default=None,
                   help="leave out the benign requests asked in the harmful rows' templates (the first seeds' data)")
    p.add_argument("--harm-adjacent", action=argparse.BooleanOptionalAction, default=None,
                   help=f"include the benign requests in the vocabulary of harm (default {HARM_ADJACENT})")
    p.add_argument("--recovery-share", type=FRACTION,
                   help=f"share of the harmful requests that also get a safety-recovery row (default {RECOVERY_SHARE:g})")
    p.add_argument("--recovery-k", type=_k_range, metavar="MIN-MAX",
                   help="range of the recovery rows' opening lengths in tokens, inclusive "
                        f"(default {RECOVERY_K[0]}-{RECOVERY_K[1]})")
    p.add_argument("--sampling", choices=("random", "group_by_length"),
                   help=f"batch order: random (every seed so far; default {SAMPLING}) or group_by_length (less "
                        "padding, faster, but another seed)")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.add_argument("--no-eval", action="store_true", help="skip the RSR / over-refusal check")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_align)


def _k_range(text: str) -> list[int]:
    """``MIN-MAX`` (or one number) as ``[min, max]``, checked by ``align.recovery_settings``."""
    from .align import recovery_settings

    parts = text.split("-")
    try:
        k = [int(parts[0]), int(parts[-1])] if len(parts) <= 2 else None
        return recovery_settings(0.0, k)["recovery_k"]
    except (ValueError, UserError) as exc:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX token counts, e.g. 1-30 ({exc})") from None


def _align(args: argparse.Namespace) -> int:
    from .align import REPORT, aligned_seed

    keys = ("recipe", "epochs", "lr", "seed", "benign_repeat", "template_matched", "harm_adjacent",
            "recovery_share", "recovery_k", "sampling")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    path = aligned_seed(args.model, force=args.force, evaluate=not args.no_eval, quiet=args.quiet, **overrides)
    report_path = path.parent / REPORT
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_symlink():
            raise UserError(f"{out}: exists; choose a new --out")
        if out.is_symlink():
            out.unlink()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.symlink_to(path.resolve(), target_is_directory=True)
    print(f"aligned seed: {path}")
    if report_path.is_file():
        report = read_json(report_path, "a JSON object")
        print(f"RSR (keyword, built-in held-out set): {report['rsr']:.2%}  "
              f"over-refusal (benign set): {report['overrefusal']:.2%}")
        if report.get("rsr_reference") is not None:
            print(f"RSR (keyword-reference): {report['rsr_reference']:.2%}  " + "  ".join(
                f"safe at k={p['k']}: {p['safe_rate']:.2%}" for p in report.get("depths") or []
                if p.get("safe_rate") is not None))
    return 0


def _add_study_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study-summary", help="tables and figures of a multi-seed study from its cell files",
                       description="Summarise the cells of one or more `run` grids (e.g. study/lr2e-4/cells): "
                                   "means and 95% t-intervals over seeds, drops vs the seed, paired McNemar "
                                   "tests vs vanilla, KL vs drop and forecast vs drop figures.")
    p.add_argument("cells", nargs="+", help="folders of cell JSONs (a config's cells_dir)")
    p.add_argument("--out", required=True, help="folder for summary.json, summary.md and the figures")
    p.add_argument("--group", default=None, metavar="NAME",
                   help="pool the folders into one group NAME (one study split over configs: every method is "
                        "compared with the same vanilla and seed cells); default: one group per folder")
    p.add_argument("--seeds", type=_seed_list, default=None, metavar="S,S,...",
                   help="only these training seeds (e.g. 0: the seed every method has finished)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out that holds other files")
    add_lock_arguments(p)
    p.set_defaults(func=_study_summary)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected training seeds such as 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected training seeds such as 0,1,2, got {text!r}")
    return seeds


def _study_summary(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json, atomic_write_text, output_folder, refuse_overwrite
    from ..provenance import take_output
    from ..report.study import figures, markdown
    from .cells import check_distinct_groups, load_cells, pool_groups
    from .summary import summarise

    refuse_overwrite([("--out", args.out)], [("the cells folder", folder) for folder in args.cells])
    cells, forecasts = load_cells(args.cells)
    if args.group:
        cells, forecasts = pool_groups(cells, forecasts, args.group)
    else:
        check_distinct_groups(args.cells)
    if args.seeds is not None:  # the training seeds every compared method has (the seed model's cell stays)
        cells = [c for c in cells if c.method == SEED_ROW or c.seed in args.seeds]
        if not any(c.method != SEED_ROW for c in cells):
            raise UserError(f"no trained cell has a training seed in --seeds {','.join(map(str, args.seeds))}")
    summary = summarise(cells, forecasts)
    out = Path(args.out)
    text = markdown(summary)
    with take_output(out, "study-summary", wait=args.wait, overwrite=args.overwrite), output_folder(out):
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "summary.md", text)
        names = figures(summary, out)
    print(text)
    print(f"{summary['n_cells']} cells -> {out}/summary.json, summary.md, " + ", ".join(names))
    return 0
