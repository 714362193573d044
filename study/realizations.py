"""Two realizations of one recipe: the same cells computed from two seed models' weights.

    python study/realizations.py study/table1/cells study/table1-b/cells

``align`` is bit-reproducible on one machine, not across CPU kinds, so one recipe (one cache key,
one cell fingerprint) aligned on two machines gives two seed models; every cell trained from them
differs too. For each cell id both folders hold (same fingerprint), this prints each folder's RSR,
JSR, utility and over-refusal, the number of prompts whose RSR / JSR verdict differs between the
two, and the number of utility answers whose text differs: how far one cell's figures move when
only the arithmetic changes. Reads the cells' stored verdicts and answers; loads no model.
"""

from __future__ import annotations

import sys

from lookahead_tuning.errors import UserError
from lookahead_tuning.experiment.cells import CellResult, load_cells


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _differ(a: dict, b: dict) -> str:
    shared = set(a) & set(b)
    return f"{sum(a[k] != b[k] for k in shared)}/{len(shared)}" if shared else "–"


def _utility_differ(a: CellResult, b: CellResult) -> str:
    try:
        ua, ub = a.answers().get("utility") or [], b.answers().get("utility") or []
    except UserError:
        return "–"
    ours = {r["id"]: r["completion"] for r in ua}
    theirs = {r["id"]: r["completion"] for r in ub}
    shared = set(ours) & set(theirs)
    return f"{sum(ours[k] != theirs[k] for k in shared)}/{len(shared)}" if shared else "–"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    cells, _ = load_cells(argv)
    first, second = {}, {}
    for cell in cells:
        (first if cell.group == cells[0].group else second)[cell.cell_id] = cell
    groups = (cells[0].group, next((c.group for c in cells if c.group != cells[0].group), "?"))
    print(f"| cell | seed weights | RSR | JSR | utility | over-refusal | RSR verdicts differing | "
          f"JSR verdicts differing | utility answers differing |")
    print("|---|---|---|---|---|---|---:|---:|---:|")
    for cell_id in sorted(set(first) & set(second)):
        a, b = first[cell_id], second[cell_id]
        if a.fingerprint != b.fingerprint:
            print(f"{cell_id}: different fingerprints, not one recipe", file=sys.stderr)
            continue
        both = " / ".join
        print(f"| {cell_id} | {both((a.seed_weights or '?')[:8] for a in (a, b))} | "
              f"{both(_pct(c.value('rsr')) for c in (a, b))} | {both(_pct(c.value('jsr')) for c in (a, b))} | "
              f"{both(_pct(c.value('utility')) for c in (a, b))} | "
              f"{both(_pct(c.value('overrefusal')) for c in (a, b))} | "
              f"{_differ(a.verdicts('rsr'), b.verdicts('rsr'))} | {_differ(a.verdicts('jsr'), b.verdicts('jsr'))} | "
              f"{_utility_differ(a, b)} |")
    print(f"\nEach pair: {groups[0]} / {groups[1]}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
