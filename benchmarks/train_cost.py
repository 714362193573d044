"""Training cost of each method relative to vanilla, measured in one run on the same data.

    python benchmarks/train_cost.py --rows 64 --steps 8 --repeats 3 --out benchmarks/results/train_cost.json
    python benchmarks/train_cost.py --methods vanilla --sampling random,group_by_length --data align \
        --rows 0 --steps 173 --repeats 1 --max-length 256 --out benchmarks/results/train_cost_sampling_align.json
    python benchmarks/train_cost.py --methods vanilla,constrained-sft --reference-precision training,fp32 \
        --rows 64 --steps 8 --repeats 3 --out benchmarks/results/train_cost_reference_precision.json

``--sampling`` takes one or both batch orders (``random``; ``group_by_length``, the Trainer's
length-grouped sampler, the default); with both, every method runs in both orders and the figures
include each order's time relative to random. ``--data`` is the built-in ``math`` task (the demo's),
the built-in ``dialogue`` task or ``align`` (the built-in alignment set, as ``align`` trains on it).
``--reference-precision`` likewise takes one or both precisions of Constrained SFT's frozen reference
(``training``, the default; ``fp32``); the constrained-loss methods run in each (keys ``METHOD@PRECISION``
with both), the others once.

Targets (issue 4): lookahead-real and lookahead-virtual <= 1.05x vanilla (the floor is the ratio of
tokens, since only preview tokens are added to the prompt), constrained-sft <= 1.6x (one extra
forward pass of the reference model). SDFT adds a generation pass over the training set, reported
separately. Each figure is the median of ``--repeats`` runs; methods are interleaved so drift in
the machine's load affects all of them alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

# The paper's Table 1 methods by default; any registry name (lookahead_tuning.methods) is accepted.
METHODS = ["vanilla", "lookahead-real", "lookahead-virtual", "constrained-sft", "sdft"]
SAMPLINGS = ("random", "group_by_length")
PRECISIONS = ("training", "fp32")


def training_rows(data: str, rows: int) -> list[dict]:
    from lookahead_tuning.data.builtin import alignment_set
    from lookahead_tuning.data.tasks import load_task

    if data == "align":
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in alignment_set()][:rows or None]
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in load_task(data, n=rows, seed=0, split="train")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=64, help="training rows (0 with --data align: all of them)")
    parser.add_argument("--data", choices=("math", "dialogue", "align"), default="math")
    parser.add_argument("--sampling", default="group_by_length",
                        help="batch order(s), comma-separated: random, group_by_length (default)")
    parser.add_argument("--reference-precision", default="training",
                        help="Constrained SFT's frozen reference, comma-separated: training (default), fp32")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate examples to this many tokens (train's default; align uses 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from lookahead_tuning.io import write_records
    from lookahead_tuning.methods import get_method
    from lookahead_tuning.train.api import train

    methods = [get_method(m.strip()).name for m in args.methods.split(",") if m.strip()]
    samplings = [s.strip() for s in args.sampling.split(",") if s.strip()]
    if not samplings or any(s not in SAMPLINGS for s in samplings):
        parser.error(f"--sampling takes {', '.join(SAMPLINGS)}")
    precisions = [p.strip() for p in args.reference_precision.split(",") if p.strip()]
    if not precisions or any(p not in PRECISIONS for p in precisions):
        parser.error(f"--reference-precision takes {', '.join(PRECISIONS)}")
    if len(samplings) > 1 and len(precisions) > 1:
        parser.error("vary --sampling or --reference-precision, not both in one run")
    work = Path(tempfile.mkdtemp(prefix="train-cost-"))
    data = work / f"{args.data}.jsonl"
    write_records(data, training_rows(args.data, args.rows))
    # A run is (method, sampling, precision); named "method" alone when one of each is measured (the old
    # figures' keys), else with the one that varies. Only the constrained loss has a reference precision.
    def constrained(method: str) -> bool:
        return get_method(method).loss == "constrained"

    def run_name(method: str, sampling: str, precision: str) -> str:
        if len(samplings) > 1:
            return f"{method}@{sampling}"
        if len(precisions) > 1 and constrained(method):
            return f"{method}@{precision}"
        return method

    runs = [(m, s, p) for m in methods for s in samplings for p in (precisions if constrained(m) else precisions[:1])]
    name = {run: run_name(*run) for run in runs}
    times: dict[str, list[float]] = {name[r]: [] for r in runs}
    tokens: dict[str, dict] = {}
    rewrite: list[float] = []
    rss: dict[str, float] = {}
    for rep in range(args.repeats):
        for method, sampling, precision in runs:
            key = name[(method, sampling, precision)]
            out = work / f"{method}-{sampling}-{precision}-{rep}"
            summary = train({"model": args.model, "data": str(data), "out": str(out), "method": method,
                             "max_steps": args.steps, "batch_size": args.batch_size, "lr": 1e-5,
                             **({"max_length": args.max_length} if args.max_length else {}),
                             "lora": args.lora, "quiet": True, "seed": rep, "sampling": sampling,
                             **({"reference_precision": precision} if constrained(method) else {})})
            times[key].append(summary["train_seconds"])
            tokens[key] = summary["tokens_seen"]
            rss[key] = max(rss.get(key, 0.0), summary["peak_rss_mb"])
            if method == "sdft":
                rewrite.append(summary.get("sdft", {}).get("rewrite_seconds", float("nan")))
            print(f"repeat {rep} {key}: {summary['train_seconds']:.1f} s", file=sys.stderr, flush=True)
    med = {m: statistics.median(v) for m, v in times.items()}
    vanilla = name.get(("vanilla", samplings[0], precisions[0]))
    base = med.get(vanilla or "")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "command": "python benchmarks/train_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": args.data, "rows": args.rows, "steps": args.steps, "batch_size": args.batch_size,
        "max_length": args.max_length,
        "repeats": args.repeats, "adapter": "lora" if args.lora else "full", "sampling": samplings,
        "reference_precision": precisions,
        "median_train_seconds": med,
        "ratio_to_vanilla": {m: round(v / base, 3) for m, v in med.items()} if base else {},
        "tokens_seen": tokens,
        "token_ratio_to_vanilla": {
            m: round(t.get("total", 0) / tokens[vanilla]["total"], 3) for m, t in tokens.items()
        } if vanilla and tokens[vanilla].get("total") else {},
        "sdft_rewrite_seconds_median": statistics.median(rewrite) if rewrite else None,
        "peak_rss_mb": rss,
    }
    if len(samplings) == 2:  # each method's length-grouped time over its random-order time (same repeats)
        result["group_by_length_over_random"] = {
            m: round(statistics.median(g / r for g, r in zip(times[f"{m}@group_by_length"], times[f"{m}@random"],
                                                             strict=True)), 3) for m in methods}
    if len(precisions) == 2:  # each constrained method's fp32-reference time over its training-precision time
        result["fp32_over_training"] = {
            m: round(statistics.median(f / t for f, t in zip(times[f"{m}@fp32"], times[f"{m}@training"],
                                                             strict=True)), 3) for m in methods if constrained(m)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
