"""What refusing repeated JSON keys costs per row: orjson alone, ``io.parse_json`` (orjson plus the
key count that proves no key was lost) and the standard library with a duplicate-detecting
``object_pairs_hook`` (what every row would cost without the count).

The figures are in docs/reliability.md ("Strict JSON, regular files only, write errors"):

    python scripts/measure_json_reading.py --rows 20000
"""

from __future__ import annotations

import argparse
import json
import os
import timeit

import orjson

from lookahead_tuning.io import parse_json

ROWS = {
    "prompt-completion": {"id": "7", "prompt": "Question 7: " + "why " * 40, "completion": "Because " * 20},
    "alpaca": {"instruction": "Do X " * 20, "input": "", "output": "Y " * 50, "category": "c"},
    "messages with a tool call": {"messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "hi " * 30},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"a": 1, "b": "x"})}}]},
        {"role": "tool", "content": json.dumps({"r": 2}), "tool_call_id": "c1"},
        {"role": "assistant", "content": "ok " * 30}]},
}


def _unique(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="calls timed per reader and row kind")
    ap.add_argument("--repeats", type=int, default=5, help="the fastest of this many timings is kept")
    args = ap.parse_args()
    readers = {"orjson.loads": orjson.loads, "io.parse_json": parse_json,
               "json.loads + hook": lambda raw: json.loads(raw, object_pairs_hook=_unique)}
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| row | " + " | ".join(f"{name} (µs per row)" for name in readers) + " |")
    print("|---|" + "---:|" * len(readers))
    for kind, row in ROWS.items():
        raw = orjson.dumps(row)
        assert parse_json(raw) == row
        cells = [min(timeit.repeat(lambda read=read, raw=raw: read(raw), number=args.rows, repeat=args.repeats))
                 / args.rows * 1e6 for read in readers.values()]
        print(f"| {kind} ({len(raw)} bytes) | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
