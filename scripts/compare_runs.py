"""Compare two run folders of the same config: cells, results and report, byte for byte and apart from the clock.

    python scripts/compare_runs.py RUN_A RUN_B

Prints, per cell file and per output, whether the bytes are identical and whether the content is identical
once the fields that only record the clock (timings, timestamps) are left out. Exit 1 on a content difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CLOCK = {"cell_seconds", "train_seconds", "total_seconds", "rewrite_seconds", "peak_rss_mb", "peak_cuda_mb",
         "created", "created_at", "finished_at"}


def without_clock(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: without_clock(v) for k, v in obj.items() if k not in CLOCK}
    if isinstance(obj, list):
        return [without_clock(v) for v in obj]
    return obj


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
    if isinstance(a, dict):
        out = [f"{path}/{k}: only on one side" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r:.60} vs {b!r:.60}"]


def main(a: Path, b: Path) -> int:
    bad = []
    json_files = [p.relative_to(a) for p in sorted((a / "cells").glob("*.json"))] + [Path("results.json")]
    for rel in json_files:
        same_bytes = (a / rel).read_bytes() == (b / rel).read_bytes()
        diff = differences(without_clock(json.loads((a / rel).read_text())),
                           without_clock(json.loads((b / rel).read_text())))
        print(f"{rel}: bytes {'identical' if same_bytes else 'differ'}; "
              f"{'identical apart from the clock' if not diff else 'CONTENT DIFFERS'}")
        bad += [f"  {rel}{d}" for d in diff]
    for rel in ("results.csv", "report.md", "figures/kl.png", "config.yaml"):
        print(f"{rel}: bytes {'identical' if (a / rel).read_bytes() == (b / rel).read_bytes() else 'differ'}")
    print("\n".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
