"""The task registry (data/tasks.py): every reader of a task's kind asks it, so every registered task is
labelled by the metric that scores it, and a new task is one entry plus its own loader and metric."""

from __future__ import annotations

import json

import pytest

from lookahead_tuning.analyse.utility import METRICS, Metric, score_rows, task_rows
from lookahead_tuning.data.tasks import TASKS, Task, get_task, load_task
from lookahead_tuning.errors import UserError
from lookahead_tuning.experiment.config import make_experiment
from lookahead_tuning.experiment.plan import plan_cells
from lookahead_tuning.experiment.results import build_results
from lookahead_tuning.report.writer import render_report

GSM = [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
       {"question": "What is 4 * 6?", "answer": "4 * 6 = 24\n#### 24"}]
SAMSUM = [{"id": "a1", "dialogue": "Ann: Lunch?\r\nBob: Sure, at noon.", "summary": "Ann and Bob lunch at noon."},
          {"id": "a2", "dialogue": "Cy: Late.\r\nDee: Ok.", "summary": "Cy is late."}]


def _task_entry(kind: str, tmp_path) -> dict:
    """A config's task of ``kind``, with a small test file where the task reads files."""
    task = get_task(kind)
    if task.builtin:
        return {"name": kind, "n_train": 2, "n_test": 2}
    path = tmp_path / f"{kind}.jsonl"
    rows = GSM if set(task.fields) <= set(GSM[0]) else SAMSUM
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"name": kind, "train": str(path), "test": str(path)}


@pytest.mark.parametrize("kind", list(TASKS))
def test_every_task_is_labelled_in_results_and_the_report_by_the_metric_that_scores_it(kind, tmp_path):
    """results.json's metric for a task is what scoring the task's own rows writes into metrics.json (the
    built-in dialogue task used to be labelled ``accuracy``, its cells ``rouge1_f1``), and the report
    names the task's utility column and the metric's words."""
    cfg = make_experiment({"name": "x", "model": "m", "methods": ["vanilla"], "tasks": [_task_entry(kind, tmp_path)]})
    spec = cfg.tasks[0]
    rows = task_rows(spec.kind, spec.test if not get_task(kind).builtin else None, 2)
    scored, _, _ = score_rows(kind, [{**r, "completion": r["reference"]} for r in rows])
    results = build_results(cfg, plan_cells(cfg), {})
    assert results["tasks"][0]["metric"] == scored["metric"] == get_task(kind).metric
    report = render_report(results)
    assert f"| {kind} Utility |" in report
    assert METRICS[scored["metric"]].about.format(scorer=cfg.eval.scorer) in report


def test_a_task_kind_outside_the_registry_is_refused_with_the_kinds():
    with pytest.raises(UserError, match="unknown task kind 'rouge'; expected one of math, dialogue, gsm8k, samsum"):
        make_experiment({"name": "x", "model": "m", "methods": ["vanilla"],
                         "tasks": [{"name": "t", "kind": "rouge", "train": "a", "test": "b"}]})
    with pytest.raises(UserError, match="unknown task 'nope'"):
        get_task("nope")


def test_a_file_is_told_from_its_fields(tmp_path):
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SAMSUM))
    rows = load_task(path, split="test")
    assert [r["ground_truth"] for r in rows] == [r["summary"] for r in SAMSUM]
    assert rows[0]["prompt"].endswith("Ann: Lunch?\nBob: Sure, at noon.")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(UserError, match=r"expected question/answer \(gsm8k\) or dialogue/summary \(samsum\)"):
        load_task(other)


# --------------------------------------------------------------------------- a throwaway task


def _copy_rows(arg: str, n: int | None, seed: int, split: str) -> list[dict]:
    words = [f"{split}-word-{i + seed}" for i in range(n or 4)]
    return [{"id": f"copy-{split}-{i}", "prompt": f"Repeat exactly: {w}", "completion": w, "ground_truth": w}
            for i, w in enumerate(words)]


def _exact_match(rows, scorer: str):
    hits = [(r["completion"] or "").strip() == r["reference"] for r in rows]
    metrics = {"metric": "exact_match", "score": sum(hits) / len(hits), "n": len(hits)}
    return metrics, [{"id": r["id"], "exact": h} for r, h in zip(rows, hits, strict=True)], [r["reference"] for r in rows]


@pytest.mark.slow  # one tiny training and the seed's and its evaluations (under a minute on 2 cores)
def test_a_throwaway_task_flows_from_plan_to_cell_to_results_to_report(tmp_path, tiny_model_dir, monkeypatch,
                                                                      one_torch_thread):
    """A task is one registry entry plus its own code (here a loader and a metric): nothing else changes."""
    from lookahead_tuning.experiment.runner import run_experiment

    monkeypatch.setitem(TASKS, "copy", Task("copy", "repeat a word", _copy_rows, "exact_match", 4, builtin=True))
    monkeypatch.setitem(METRICS, "exact_match", Metric("exact_match", "exact match (copy)", _exact_match, str))
    cfg = make_experiment({
        "name": "copy", "model": str(tiny_model_dir), "methods": ["vanilla"],
        "tasks": [{"name": "copy", "n_train": 4, "n_test": 2}],
        "train": {"epochs": 1, "batch_size": 4, "max_length": 64, "warmup_ratio": 0.0, "lr": 1e-3},
        "eval": {"limit": 2, "max_new_tokens": 4, "batch_size": 2, "forecast": False, "kl_positions": 2},
    })
    assert [c.cell_id for c in plan_cells(cfg)] == ["copy--seed", "copy--vanilla--seed0"]
    run = run_experiment(cfg, out=tmp_path / "run", progress=False)
    cell = json.loads((run / "cells" / "copy--vanilla--seed0.json").read_text())
    assert cell["task_kind"] == "copy" and cell["utility"]["metric"] == "exact_match" and cell["utility"]["n"] == 2
    results = json.loads((run / "results.json").read_text())
    assert results["tasks"][0]["metric"] == "exact_match"
    assert set(results["models"]) == {"seed", "vanilla"}
    assert all(e["utility_metric"] == "exact_match" and e["utility"] is not None for e in results["models"].values())
    report = (run / "report.md").read_text()
    assert "| copy Utility |" in report and "exact match (copy)" in report
