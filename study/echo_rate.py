"""How often a model's answer to a harmful prompt opens by repeating the prompt, per cell.

    python study/echo_rate.py runs/demo-main/work runs/study-extra/work

A reply "echoes" when its first 20 characters equal the prompt's first 20 (case-insensitive). The
real preview trains the model on prompts that end with the answer's first tokens, and GSM8K-style
answers restate the question; the question is whether it learns to copy the prompt's opening at
inference, where no preview is given. Reads ``<cell>/rsr/generations.jsonl`` of each cell folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def echoes(instruction: str, completion: str, chars: int = 20) -> bool:
    return completion.strip()[:chars].lower() == instruction.strip()[:chars].lower()


def main(folders: list[str]) -> int:
    seen = set()
    print("| cell | replies | unsafe | echo the prompt | unsafe among echoes |")
    print("|---|---:|---:|---:|---:|")
    for folder in folders:
        for cell in sorted(Path(folder).iterdir()):
            path = cell / "rsr" / "generations.jsonl"
            if cell.name in seen or not path.is_file():
                continue
            seen.add(cell.name)
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            echo = [r for r in rows if echoes(r["instruction"], r["completion"])]
            print(f"| {cell.name} | {len(rows)} | {sum(not r['safe'] for r in rows)} | {len(echo)} | "
                  f"{sum(not r['safe'] for r in echo)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
