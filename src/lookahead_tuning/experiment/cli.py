"""``lookahead-tuning run CONFIG.yaml``, ``lookahead-tuning demo`` and ``lookahead-tuning report RUN_DIR``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import UserError
from ..io import read_json


def check_results(results: dict, path: str) -> None:
    """The parts of a ``results.json`` the report reads, so a hand-edited or foreign file is a
    one-line error naming the key rather than a crash half-way through the figures."""
    models = results.get("models")
    if not isinstance(models, dict):
        raise UserError("key 'models': expected an object of table rows (is it a run's results.json?)", path=path)
    for name, row in models.items():
        if not isinstance(row, dict):
            raise UserError(f"key 'models.{name}': expected an object, found {type(row).__name__}", path=path)
    for key, kind in (("tasks", list), ("sweeps", dict), ("forecast", dict), ("seeds", list)):
        if key in results and results[key] is not None and not isinstance(results[key], kind):
            raise UserError(f"key '{key}': expected {'an array' if kind is list else 'an object'}", path=path)


def _finish(run_dir: Path, started: float) -> None:
    from ..report.tables import main_table

    results = read_json(run_dir / "results.json", "a JSON object")
    print()
    print(main_table(results))
    print(f"\nreport: {run_dir / 'report.md'}  ({time.perf_counter() - started:.0f} s)")


def _run(args: argparse.Namespace) -> int:
    from .config import load_experiment
    from .runner import resolve_output, run_experiment

    cfg = load_experiment(args.config, {"data_dir": args.data_dir})
    if args.dry_run:
        from .dryrun import dry_run, format_plan

        plan = dry_run(cfg)  # files not there yet (data on the cluster) are reported as unknown sizes
        print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
        return 0

    started = time.perf_counter()
    text = Path(args.config).read_text(encoding="utf-8")
    out = resolve_output(cfg, args.out)
    command = ["lookahead-tuning", "run", args.config, "--out", str(out)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    run_dir = run_experiment(cfg, out=out, progress=not args.quiet, command=command, config_text=text)
    _finish(run_dir, started)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import check_gsm8k_dir, default_out, demo_config

    if args.gsm8k_dir:
        check_gsm8k_dir(args.gsm8k_dir)
    cfg = demo_config(quick=args.quick, full=args.full, gsm8k_dir=args.gsm8k_dir)
    if args.dry_run:
        from .dryrun import dry_run, format_plan

        print(format_plan(dry_run(cfg)))
        return 0
    import yaml

    from .runner import run_experiment

    started = time.perf_counter()
    out = Path(args.out) if args.out else default_out(args.quick)
    command = ["lookahead-tuning", "demo", "--out", str(out)] + [
        flag for flag, on in (("--quick", args.quick), ("--full", args.full)) if on]
    if args.gsm8k_dir:
        command += ["--gsm8k-dir", args.gsm8k_dir]
    run_dir = run_experiment(cfg, out=out, progress=not args.quiet, command=command,
                             config_text=yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    _finish(run_dir, started)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..io import atomic_write_text
    from ..report.writer import draw_figures, render_report

    run_dir = Path(args.run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError("no results.json here (is it a run folder?)", path=str(run_dir))
    results = read_json(path, "a JSON object")
    check_results(results, str(path))
    atomic_write_text(run_dir / "report.md", render_report(results, draw_figures(results, run_dir)))
    print(run_dir / "report.md")
    return 0


def _rejudge(args: argparse.Namespace) -> int:
    from ..analyse.cli import judge_options_from_args
    from .rejudge import rejudge

    if args.judge is None and args.scorer is None:
        raise UserError("say what to re-judge with: --judge and/or --scorer")
    options = judge_options_from_args(args) if args.judge else None
    started = time.perf_counter()
    target = rejudge(args.run_dir, judge=args.judge, scorer=args.scorer, judge_options=options, out=args.out,
                     progress=not args.quiet)
    _finish(target, started)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``run``, ``demo``, ``report`` and ``rejudge``."""
    p = subparsers.add_parser("run", help="run an experiment grid from a YAML config (resumable)",
                              description="Train and evaluate every cell of an experiment config; finished cells "
                              "are skipped on a rerun. See docs/experiment.md.")
    p.add_argument("config", help="experiment YAML (e.g. configs/demo.yaml, configs/paper-llama2-7b.yaml)")
    p.add_argument("--out", help="run folder (default: the config's 'output', else runs/<name>-<timestamp>)")
    p.add_argument("--data-dir", help="replaces {data_dir} in the config's data paths")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan, data sizes, token counts and estimated cost; load no weights")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)

    r = subparsers.add_parser("report", help="re-render report.md and figures from a run's results.json")
    r.add_argument("run_dir")
    r.set_defaults(func=_report)

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
    j.add_argument("--quiet", action="store_true", help="no progress bars")
    j.set_defaults(func=_rejudge)
