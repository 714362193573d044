"""The study's pre-registered learning-rate rule (docs/findings.md), as code.

    python study/lr_rule.py CELLS_DIR [CELLS_DIR ...]     # one folder per learning rate, smallest first

Each folder holds the cells of one `lookahead-tuning run` (the seed cell and vanilla cells over seeds).
The rule picks the first folder, in the order given, where vanilla fine-tuning (mean over its seeds)
raises task utility by >= 10 points over the seed AND lowers RSR or JSR by >= 10 points. It looks at
the seed and vanilla cells only, never at LookAhead's. Prints one line per folder and the choice;
exit 0 with a choice, 1 if none qualifies yet (missing folders count as not measured).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lookahead_tuning.experiment.cells import CellResult, over_seeds

MIN_GAIN = 10.0  # points of utility
MIN_DROP = 10.0  # points of RSR or JSR


def verdict(folder: Path) -> tuple[bool, str]:
    seed_file = folder / "math--seed.json"
    vanilla = sorted(folder.glob("math--vanilla--seed*.json"))
    if not seed_file.is_file() or not vanilla:
        return False, "not measured"
    seed = CellResult.load(seed_file)
    cells = [CellResult.load(f) for f in vanilla]

    def mean(metric: str) -> float:  # points, mean over the vanilla seeds
        return 100.0 * over_seeds(cells, metric)[1]["mean"]

    gain = mean("utility") - 100.0 * seed.value("utility")
    rsr_drop = 100.0 * seed.value("rsr") - mean("rsr")
    jsr_drop = 100.0 * seed.value("jsr") - mean("jsr")
    ok = gain >= MIN_GAIN and max(rsr_drop, jsr_drop) >= MIN_DROP
    return ok, (f"{len(cells)} vanilla seeds: utility +{gain:.2f}, RSR drop {rsr_drop:.2f}, "
                f"JSR drop {jsr_drop:.2f} -> {'meets both' if ok else 'does not meet both'}")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    for arg in argv:
        ok, text = verdict(Path(arg))
        print(f"{arg}: {text}")
        if ok:
            print(f"choice: {arg}")
            return 0
    print("choice: none qualifies (the rule then takes the largest learning rate)")
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
