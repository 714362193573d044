"""Greedy accuracy of a model on the built-in math levels (zero-shot, the question as the prompt).

Used once to calibrate ``mathgen.DEFAULT_LEVEL``; the figures are in docs/data.md:

    nice -n 10 python scripts/measure_mathgen.py --model smollm2-135m-instruct --n 60
"""

from __future__ import annotations

import argparse
import json

import torch
from tqdm import tqdm

from lookahead_tuning.chat import render_prompt, stop_token_ids
from lookahead_tuning.data.answers import final_number
from lookahead_tuning.data.mathgen import LEVELS, generate_problems
from lookahead_tuning.models import load_model


def accuracy(model, tokenizer, problems, *, batch_size: int, max_new_tokens: int) -> float:
    tokenizer.padding_side = "left"  # decoder-only batching: pad before the prompt
    correct = 0
    for start in tqdm(range(0, len(problems), batch_size), desc="batches"):
        batch = problems[start:start + batch_size]
        texts = [render_prompt(tokenizer, p["question"]) for p in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=stop_token_ids(tokenizer),
                                 pad_token_id=tokenizer.pad_token_id)
        for p, ids in zip(batch, out[:, enc["input_ids"].shape[1]:], strict=True):
            reply = tokenizer.decode(ids, skip_special_tokens=True)
            correct += final_number(reply, fallback_last=True) == final_number(p["answer"])
    return correct / len(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--levels", nargs="+", default=list(LEVELS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = load_model(args.model)
    results = {}
    for level in args.levels:
        problems = generate_problems(args.n, seed=0, level=level, split="test")
        results[level] = accuracy(model, tokenizer, problems, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens)
        print(json.dumps({"level": level, "n": args.n, "accuracy": results[level]}), flush=True)


if __name__ == "__main__":
    main()
