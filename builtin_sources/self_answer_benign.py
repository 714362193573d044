"""Answer the harm-adjacent benign requests with the embedded model itself (before alignment).

    python builtin_sources/self_answer_benign.py            # writes builtin_sources/builtin_harm_adjacent_answers.jsonl

The answers are the model's own greedy answers to builtin_sources/builtin_harm_adjacent.py's prompts (no
system prompt, the chat template the toolkit uses everywhere). An answer is kept only when the keyword
judge does not count it as a refusal and it still holds a full sentence of at least 40 characters
after cutting at the last sentence end (an answer cut by the token limit would teach the seed to stop
mid-sentence). The output is committed, so building the data files needs no model; one line per
prompt, with ``kept`` and the reason when dropped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import builtin_harm_adjacent as source  # noqa: E402

OUT = HERE / "builtin_harm_adjacent_answers.jsonl"
MIN_CHARS = 40
SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def trim(text: str) -> str:
    """Text up to its last sentence end (the whole text when it ends in one)."""
    text = text.strip()
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def verdict(completion: str) -> tuple[str, str | None]:
    from lookahead_tuning.judge.keyword import is_refusal

    if is_refusal(completion):
        return "", "refusal"
    kept = trim(completion)
    if len(kept) < MIN_CHARS:
        return "", "too short after trimming"
    return kept, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from lookahead_tuning.generate.engine import generate
    from lookahead_tuning.io import write_records
    from lookahead_tuning.models import load_model

    prompts = source.HARM_ADJACENT_PROMPTS
    if len(set(prompts)) != len(prompts):
        raise SystemExit("duplicate prompt in builtin_harm_adjacent.py")
    # Prompts answered before keep their answer (greedy decoding gives the same one); only new or
    # reworded prompts are generated.
    known = {}
    if args.out.is_file():
        known = {r["prompt"]: r["raw"] for r in map(json.loads, args.out.read_text(encoding="utf-8").splitlines())}
    items = [{"id": f"adjacent-{i:03d}", "prompt": p} for i, p in enumerate(prompts, 1)]
    todo = [it for it in items if it["prompt"] not in known]
    if todo:
        model, tokenizer = load_model(args.model)
        for result in generate(model, tokenizer, todo, batch_size=32, max_new_tokens=args.max_new_tokens):
            known[result["prompt"]] = result["completion"]
    records = []
    for item in items:
        raw = known[item["prompt"]]
        answer, reason = verdict(raw)
        records.append({"prompt": item["prompt"], "completion": answer, "kept": reason is None,
                        "dropped_because": reason, "raw": raw})
    write_records(args.out, records)
    kept = sum(r["kept"] for r in records)
    print(f"wrote {args.out}: {kept} of {len(records)} answers kept ({len(todo)} generated now)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
