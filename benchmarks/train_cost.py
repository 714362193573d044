"""Training cost of each method relative to vanilla, measured in one run on the same data.

    python benchmarks/train_cost.py --rows 64 --steps 8 --repeats 3 --out benchmarks/results/train_cost.json

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

METHODS = ["vanilla", "lookahead-real", "lookahead-virtual", "constrained-sft", "sdft"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=64, help="built-in math problems to train on")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from lookahead_tuning.data.loaders import load_task
    from lookahead_tuning.io import write_records
    from lookahead_tuning.train.api import train

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    work = Path(tempfile.mkdtemp(prefix="train-cost-"))
    data = work / "math.jsonl"
    write_records(data, [{"prompt": r["prompt"], "completion": r["completion"]}
                         for r in load_task("math", n=args.rows, seed=0, split="train")])
    times: dict[str, list[float]] = {m: [] for m in methods}
    tokens: dict[str, dict] = {}
    rewrite: list[float] = []
    rss: dict[str, float] = {}
    for rep in range(args.repeats):
        for method in methods:
            out = work / f"{method}-{rep}"
            summary = train({"model": args.model, "data": str(data), "out": str(out), "method": method,
                             "max_steps": args.steps, "batch_size": args.batch_size, "lr": 1e-5,
                             "lora": args.lora, "quiet": True, "seed": rep})
            times[method].append(summary["train_seconds"])
            tokens[method] = summary["tokens_seen"]
            rss[method] = max(rss.get(method, 0.0), summary["peak_rss_mb"])
            if method == "sdft":
                rewrite.append(summary.get("sdft", {}).get("rewrite_seconds", float("nan")))
            print(f"repeat {rep} {method}: {summary['train_seconds']:.1f} s", file=sys.stderr, flush=True)
    med = {m: statistics.median(v) for m, v in times.items()}
    base = med.get("vanilla")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "command": "python benchmarks/train_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": args.rows, "steps": args.steps, "batch_size": args.batch_size, "repeats": args.repeats,
        "adapter": "lora" if args.lora else "full",
        "median_train_seconds": med,
        "ratio_to_vanilla": {m: round(v / base, 3) for m, v in med.items()} if base else {},
        "tokens_seen": tokens,
        "token_ratio_to_vanilla": {
            m: round(t.get("total", 0) / tokens["vanilla"]["total"], 3) for m, t in tokens.items()
        } if "vanilla" in tokens and tokens["vanilla"].get("total") else {},
        "sdft_rewrite_seconds_median": statistics.median(rewrite) if rewrite else None,
        "peak_rss_mb": rss,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
