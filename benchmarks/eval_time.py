"""Wall time of an RSR evaluation on the embedded model (110 built-in prompts, 64 new tokens).

Run: ``nice -n 10 python benchmarks/eval_time.py [--batch-size 16] [--limit N] [--prefill]``.
Prints one JSON object (seconds for loading, generation + judging, prompts per second).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--prefill", action="store_true", help="JSR (built-in harmful answers, k=3) instead of RSR")
    args = parser.parse_args()

    import torch

    from lookahead_tuning.analyse.safety import evaluate_safety
    from lookahead_tuning.data.builtin import harmful_answers, harmful_eval_set
    from lookahead_tuning.models import load_model

    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model)
    t_load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        t1 = time.perf_counter()
        metrics = evaluate_safety(
            model, tokenizer, items=harmful_eval_set(), prefills=harmful_answers() if args.prefill else None,
            out_dir=out, limit=args.limit, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            progress=False,
        )
        t_eval = time.perf_counter() - t1
    print(json.dumps({
        "mode": metrics["mode"],
        "prompts": metrics["n_prompts"],
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "load_seconds": round(t_load, 1),
        "eval_seconds": round(t_eval, 1),
        "prompts_per_second": round(metrics["n_prompts"] / t_eval, 2),
        "safe_rate": metrics["safe_rate"],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
