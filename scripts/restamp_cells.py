"""Re-stamp committed study cells after a change of the fingerprint *formula* (not of any setting).

    python scripts/restamp_cells.py            # check, then rewrite the fingerprints
    python scripts/restamp_cells.py --check    # only report

A cell is re-stamped only when its stored fingerprint equals the previous formula's for the same
config, so a cell computed under other settings is never made to pass. The previous formula hashed the
config's ``model`` block as well as the seed's identity; the ``align`` block counted with or without the
keys that later pinned the earlier seeds' data and lr (``harm_adjacent``, ``lr``), which were the
defaults when those cells ran (their identity, which covers them, is unchanged: tests/test_align.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from lookahead_tuning.experiment.config import load_experiment, plan_cells
from lookahead_tuning.experiment.demo import shipped_config
from lookahead_tuning.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PINNED = ("harm_adjacent", "lr")


def previous_fingerprints(cell, cfg) -> set[str]:
    task = next(t for t in cfg.tasks if t.name == cell.task)
    dumps = [cfg.model.model_dump()]
    if cfg.model.align:
        dumps.append({**cfg.model.model_dump(), "align": {k: v for k, v in cfg.model.align.items() if k not in PINNED}})
    out = set()
    for model in dumps:
        blob = {
            "model": model, "seed_model": cfg.model.identity(),
            "task": task.model_dump(), "method": cell.method,
            "seed": cell.seed if cell.method != "seed" else None,
            "train": cell.train if cell.method != "seed" else {},
            "eval": cfg.eval.model_dump(),
        }
        out.add(hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("configs", nargs="*", help="config names (default: every shipped config with cells)")
    args = parser.parse_args()
    names = args.configs or sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    bad = done = 0
    for name in names:
        cfg = load_experiment(shipped_config(name))
        if not cfg.cells_dir:
            continue
        for cell in plan_cells(cfg):
            path = ROOT / cfg.cells_dir / f"{cell.cell_id}.json"
            if not path.is_file():
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            new = cell.fingerprint(cfg)
            if data["fingerprint"] == new:
                continue
            if data["fingerprint"] not in previous_fingerprints(cell, cfg):
                print(f"MISMATCH {path}: computed under other settings; left alone", file=sys.stderr)
                bad += 1
                continue
            done += 1
            if not args.check:
                text = path.read_text(encoding="utf-8").replace(data["fingerprint"], new, 1)
                atomic_write_text(path, text)
    print(f"{'would re-stamp' if args.check else 're-stamped'} {done} cells; {bad} mismatches", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
