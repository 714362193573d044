"""The paper's own Table 1, printed beside a run's numbers so a reader can set the two side by side.

Liu et al., *LookAhead Tuning*, arXiv 2503.19041 v1, Table 1: Llama-2-7B-Chat fine-tuned on GSM8K and
SAMSum; RSR, JSR and utility in percent (docs/method.md, section 5). A 7B model on real benchmarks: the
figures show what the method did at that scale, not what a 135M model should reach.
"""

from __future__ import annotations

from ..data.tasks import TASKS
from ..methods import METHODS

PAPER_MODEL = "Llama-2-7B-Chat"
PAPER_SCALE = "7B"
PAPER_SOURCE = "Liu et al., arXiv 2503.19041 v1, Table 1"

# method -> task -> (RSR, JSR, utility), percent. Tasks: gsm8k (accuracy), samsum (ROUGE-1 F1).
PAPER_TABLE1: dict[str, dict[str, tuple[float, float, float]]] = {
    "seed": {"gsm8k": (99.39, 90.30, 26.69), "samsum": (99.39, 90.30, 25.07)},
    "vanilla": {"gsm8k": (96.67, 46.97, 42.91), "samsum": (69.09, 30.61, 52.74)},
    "sdft": {"gsm8k": (96.06, 61.21, 34.32), "samsum": (92.73, 52.73, 30.89)},
    "constrained-sft": {"gsm8k": (98.79, 50.30, 35.56), "samsum": (69.70, 36.06, 50.06)},
    "lookahead-real": {"gsm8k": (98.48, 60.61, 38.21), "samsum": (94.85, 49.39, 51.08)},
    "lookahead-virtual": {"gsm8k": (99.39, 62.42, 40.79), "samsum": (96.67, 56.67, 51.69)},
}
# Table 2: LookAhead's training time over vanilla's, per epoch. LookAhead real used m = 6.
PAPER_OVERHEAD = "2-3% per epoch over vanilla"
PAPER_M = 6



def paper_task(task_kind: str) -> str | None:
    """The paper's task a project task stands in for (the built-in tasks are offline analogues)."""
    task = TASKS.get(task_kind)
    return task.paper_task if task else None


def paper_row(method: str, task_kind: str) -> tuple[float, float, float] | None:
    """The paper's (RSR, JSR, utility) for a method on the paper task a project task stands for."""
    task = paper_task(task_kind)
    return PAPER_TABLE1.get(method, {}).get(task) if task else None


def paper_table(task_kinds: list[str]) -> str:
    """The paper's Table 1 for the paper tasks behind ``task_kinds``, in the run's layout (Utility / RSR /
    JSR / Avg per task, an overall Avg with several tasks), labelled as the paper's; "" when none applies."""
    tasks = [t for t in dict.fromkeys(paper_task(k) for k in task_kinds) if t]
    if not tasks:
        return ""
    columns = [f"{t} {c}" for t in tasks for c in ("Utility", "RSR", "JSR", "Avg")]
    if len(tasks) > 1:
        columns.append("Avg (all tasks)")
    lines = [f"| Method (paper, {PAPER_SCALE}) | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for method, by_task in PAPER_TABLE1.items():
        cells, avgs = [], []
        for t in tasks:
            rsr, jsr, utility = by_task[t]
            avgs.append((utility + rsr + jsr) / 3)
            cells += [f"{utility:.2f}", f"{rsr:.2f}", f"{jsr:.2f}", f"{avgs[-1]:.2f}"]
        if len(tasks) > 1:
            cells.append(f"{sum(avgs) / len(avgs):.2f}")
        label = METHODS[method].label if method in METHODS else method
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
