"""The judge registry: a judge added as one entry plus its own code flows through eval, metrics, the
cells, results.json and the report; the existing judges keep their names, fields and settings."""

from __future__ import annotations

import json

import pytest

from lookahead_tuning.cli import main
from lookahead_tuning.judge import Judge, get, judge_names, register, unregister, verdict_key


def test_the_existing_judges_keep_their_names_fields_and_aliases():
    assert judge_names()[:4] == ("keyword-reference", "keyword", "llm", "both")
    assert [verdict_key(n) for n in ("keyword-reference", "keyword", "llm", "both")] == \
        ["keyword_reference_safe", "keyword_safe", "llm_safe", "llm_safe"]
    assert get("both").recorded_name == "llm" and get("llm").needs == "endpoint"
    assert get("keyword").offline and not get("llm").offline


def test_an_unknown_judge_is_one_line():
    from lookahead_tuning.errors import UserError

    with pytest.raises(UserError, match="unknown judge 'nope'; expected one of keyword-reference, keyword"):
        get("nope")


class LengthJudge:
    """A throwaway model judge: an answer longer than 12 characters is unsafe, and it says how long."""

    def __init__(self, options):
        self.limit = int(options.get("limit", 12))
        self.stats = {"calls": 0}

    def settings(self):
        return {"limit": self.limit}

    def judge(self, records, *, field, progress=False):
        for rec in records:
            self.stats["calls"] += 1
            rec[f"{field}_chars"] = len(rec["response"])
            rec[f"{field}_safe"] = len(rec["response"]) <= self.limit

    def extra_metrics(self, records, field):
        return {"length_stats": dict(self.stats)}


@pytest.fixture
def length_judge():
    register(Judge("length", "a throwaway judge of the tests", "length", build=LengthJudge,
                   stored=("length_chars",), decides=("limit",)))
    yield
    unregister("length")


def test_a_throwaway_judge_flows_through_eval_metrics_results_and_report(length_judge, tmp_path):
    from test_rejudge import RSR

    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": r["id"], "prompt": r["instruction"], "completion": r["completion"]})
                               + "\n" for r in RSR))
    out = tmp_path / "eval"
    assert main(["eval", "safety", "--generations", str(answers), "--judge", "length", "--out", str(out),
                 "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # "I'm sorry, no." is 14 characters: unsafe by length; the empty answer is safe
    assert metrics["judge"] == "length" and metrics["safe_rate"] == pytest.approx(1 / 4)
    assert set(metrics["judges"]) == {"keyword-reference", "keyword", "length"}
    assert metrics["judge_settings"]["length"] == {"limit": 12}
    assert metrics["length_stats"] == {"calls": 4}
    assert "keyword vs length" in metrics["disagreement"]
    rows = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [(r["length_chars"], r["length_safe"], r["safe"]) for r in rows][:3] == \
        [(14, False, False), (14, False, False), (0, True, True)]

    # the same judge re-judges a finished run's cells: instruments, results.json and report.md carry it
    run = _run_dir(tmp_path)
    assert main(["rejudge", str(run), "--judge", "length", "--out", str(tmp_path / "rejudged"), "--quiet"]) == 0
    cell = json.loads((tmp_path / "rejudged" / "cells" / "math--vanilla--seed0.json").read_text())
    assert set(cell["instruments"]["rsr"]) == {"keyword-reference", "keyword", "length"}
    assert cell["rsr_verdicts"] == {"a": False, "b": False, "c": True, "d": False}
    results = json.loads((tmp_path / "rejudged" / "results.json").read_text())
    assert results["evaluation"]["judge"] == "length"
    assert results["models"]["vanilla"]["instruments"]["rsr"]["length"] == pytest.approx(0.25)
    report = (tmp_path / "rejudged" / "report.md").read_text()
    assert "RSR (length)" in report and "judge: length" in report


def _run_dir(tmp_path):
    import yaml
    from test_rejudge import _cell

    from lookahead_tuning.experiment.config import make_experiment, plan_cells

    cfg = make_experiment({"name": "t", "model": "some-org/seed", "tasks": [{"name": "math"}],
                           "methods": ["vanilla"], "eval": {"judge": "keyword", "scorer": "numeric"}})
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    for cell in plan_cells(cfg):
        (run / "cells" / f"{cell.cell_id}.json").write_text(json.dumps(_cell(cfg, cell)))
    return run


def test_a_run_config_names_any_registered_judge_and_refuses_others(length_judge):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.experiment.config import make_experiment

    base = {"name": "t", "model": "m", "tasks": [{"name": "math"}], "methods": ["vanilla"]}
    assert make_experiment({**base, "eval": {"judge": "length"}}).eval.judge == "length"
    with pytest.raises(UserError, match="eval.judge.*unknown judge 'nope'"):
        make_experiment({**base, "eval": {"judge": "nope"}})
    with pytest.raises(UserError, match="eval.judge llm-reference needs eval.judge_options.url"):
        make_experiment({**base, "eval": {"judge": "llm-reference"}})
