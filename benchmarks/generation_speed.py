"""Generation throughput: batched (default batch 16) vs one prompt at a time, same prompts, one run.

    nice -n 10 python benchmarks/generation_speed.py [--model smollm2-135m-instruct] [--prompts 32]
        [--max-new-tokens 64] [--batch-size 16] [--threads N] [--out result.json]

Greedy decoding makes both modes produce the same tokens, so the tokens/s ratio is a like-for-like
speed-up; the script checks that the completions match. Peak RSS is the process's maximum resident
set size (model + both runs). Prompts are the built-in over-refusal set (benign, varied lengths).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time


def _timed(model, tokenizer, items, batch_size: int, max_new_tokens: int) -> tuple[list[dict], float]:
    from lookahead_tuning.generate import generate

    start = time.perf_counter()
    results = generate(model, tokenizer, items, batch_size=batch_size, max_new_tokens=max_new_tokens,
                       progress=False)
    return results, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32, help="how many built-in prompts")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from lookahead_tuning.data.builtin import overrefusal_set
    from lookahead_tuning.io import atomic_write_json
    from lookahead_tuning.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = overrefusal_set()[: args.prompts]
    items = [{"id": r["id"], "prompt": r["instruction"]} for r in rows]
    model, tokenizer = load_model(args.model)
    _timed(model, tokenizer, items[:2], 2, 4)  # warm-up: first-call allocations and lazy imports

    batched, t_batched = _timed(model, tokenizer, items, args.batch_size, args.max_new_tokens)
    single, t_single = _timed(model, tokenizer, items, 1, args.max_new_tokens)
    tokens = sum(r["completion_tokens"] for r in batched)
    same = sum(a["completion"] == b["completion"] for a, b in zip(batched, single, strict=True))
    figures = {
        "model": args.model,
        "prompts": len(items),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "generated_tokens": tokens,
        "batched_seconds": round(t_batched, 2),
        "single_seconds": round(t_single, 2),
        "batched_tokens_per_s": round(tokens / t_batched, 1),
        "single_tokens_per_s": round(sum(r["completion_tokens"] for r in single) / t_single, 1),
        "speedup": round(t_single / t_batched * tokens / max(sum(r["completion_tokens"] for r in single), 1), 2),
        "identical_completions": f"{same}/{len(items)}",
        # ru_maxrss is in KiB on Linux, bytes on macOS.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                             / (1024 * 1024 if sys.platform == "darwin" else 1024), 1),
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        atomic_write_json(args.out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
