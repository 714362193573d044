"""Padding overhead of the training batches: random order vs length-grouped (the Trainer's sampler).

    python benchmarks/padding.py --batch-size 8 --epochs 3 --out benchmarks/results/padding.json

For each data set (the built-in math task as the demo trains on it, the built-in dialogue task, the
alignment set), the examples are tokenized exactly as training tokenizes them and batched by the
samplers the Hugging Face Trainer uses (``RandomSampler`` for ``sampling: random``,
``LengthGroupedSampler`` for ``sampling: group_by_length``) with the same seeds; the figure is the
tokens of the padded batches over the real tokens (1.00 = no padding). A pure token count: no model runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def padded_ratio(lengths: list[int], batch_size: int, sampling: str, seed: int) -> float:
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    if sampling == "group_by_length":
        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    padded = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        padded += max(batch) * len(batch)
    return padded / sum(lengths)


def data_sets(tokenizer, math_rows: int, max_length: int) -> dict[str, list[int]]:
    from lookahead_tuning.data.builtin import alignment_set
    from lookahead_tuning.data.tasks import load_task
    from lookahead_tuning.train.collator import tokenize_examples

    def lengths(rows: list[dict]) -> list[int]:
        examples = [{"prompt": [{"role": "user", "content": r["prompt"]}], "completion": r["completion"]}
                    for r in rows]
        return [len(x["input_ids"]) for x in tokenize_examples(examples, tokenizer, max_length=max_length)]

    return {
        f"math ({math_rows} rows, the demo's)": lengths(load_task("math", n=math_rows, split="train")),
        f"dialogue ({math_rows} rows)": lengths(load_task("dialogue", n=math_rows, split="train")),
        "alignment set": lengths(alignment_set()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rows", type=int, default=64, help="task rows (the demo trains on 64)")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds averaged")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from lookahead_tuning.models import EMBEDDED_ALIAS, load_tokenizer

    tokenizer = load_tokenizer(EMBEDDED_ALIAS)
    results = {}
    for name, lengths in data_sets(tokenizer, args.rows, args.max_length).items():
        row = {"rows": len(lengths), "mean_tokens": round(statistics.mean(lengths), 1)}
        for sampling in ("random", "group_by_length"):
            ratios = [padded_ratio(lengths, args.batch_size, sampling, seed) for seed in range(args.seeds)]
            row[sampling] = round(statistics.mean(ratios), 3)
        results[name] = row
        print(json.dumps({"data": name, **row}), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"batch_size": args.batch_size, "results": results}, indent=2) + "\n",
                                  encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
