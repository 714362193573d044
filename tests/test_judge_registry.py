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
    from test_rejudge import make_run_dir

    run = make_run_dir(tmp_path)
    assert main(["rejudge", str(run), "--judge", "length", "--out", str(tmp_path / "rejudged"), "--quiet"]) == 0
    cell = json.loads((tmp_path / "rejudged" / "cells" / "math--vanilla--seed0.json").read_text())
    assert set(cell["instruments"]["rsr"]) == {"keyword-reference", "keyword", "length"}
    assert cell["rsr_verdicts"] == {"a": False, "b": False, "c": True, "d": False}
    results = json.loads((tmp_path / "rejudged" / "results.json").read_text())
    assert results["evaluation"]["judge"] == "length"
    assert results["models"]["vanilla"]["instruments"]["rsr"]["length"] == pytest.approx(0.25)
    report = (tmp_path / "rejudged" / "report.md").read_text()
    assert "RSR (length)" in report and "judge: length" in report


def test_a_run_config_names_any_registered_judge_and_refuses_others(length_judge):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.experiment.config import make_experiment

    base = {"name": "t", "model": "m", "tasks": [{"name": "math"}], "methods": ["vanilla"]}
    assert make_experiment({**base, "eval": {"judge": "length"}}).eval.judge == "length"
    with pytest.raises(UserError, match="eval.judge.*unknown judge 'nope'"):
        make_experiment({**base, "eval": {"judge": "nope"}})
    with pytest.raises(UserError, match="eval.judge llm-reference needs eval.judge_options.url"):
        make_experiment({**base, "eval": {"judge": "llm-reference"}})


def test_two_judges_that_order_two_methods_differently_are_flagged(length_judge, tmp_path):
    """A constructed run: the keyword judges put lookahead-real above vanilla, the length judge below."""
    import yaml
    from test_rejudge import UTILITY, _cell

    from lookahead_tuning.analyse.stats import cohen_kappa
    from lookahead_tuning.experiment.cells import pack_answers
    from lookahead_tuning.experiment.config import make_experiment
    from lookahead_tuning.experiment.plan import plan_cells

    def rows(texts):
        return [{"id": str(i), "instruction": f"q{i}", "category": "c", "prefill": None, "completion": t}
                for i, t in enumerate(texts)]

    # keyword-reference: lookahead-real 75% safe, vanilla 25%; length (<= 12 characters): 25% vs 75%
    answers = {"lookahead-real": rows(["I'm sorry, but no way at all."] * 3 + ["ok"]),
               "vanilla": rows(["ok", "ok", "Sorry", "Sure, here is how to do it."]),
               "seed": rows(["Sorry"] * 4)}  # safe under every judge: it orders the same against both
    cfg = make_experiment({"name": "t", "model": "some-org/seed", "tasks": [{"name": "math"}],
                           "methods": ["vanilla", "lookahead-real"], "eval": {"judge": "keyword"}})
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    for cell in plan_cells(cfg):
        data = _cell(cfg, cell)
        data["answers"] = pack_answers({"rsr": answers[cell.method], "jsr": None, "utility": UTILITY,
                                        "system_prompt": None})
        (run / "cells" / f"{cell.cell_id}.json").write_text(json.dumps(data))
    assert main(["rejudge", str(run), "--judge", "length", "--quiet"]) == 0

    results = json.loads((run / "results.json").read_text())
    rsr = results["models"]["vanilla"]["agreement"]["rsr"]
    assert rsr["judges"]["keyword-reference"]["rate"] == 0.25 and rsr["judges"]["length"]["rate"] == 0.75
    assert rsr["judges"]["length"]["ci95"] == pytest.approx([0.3006, 0.9544], abs=1e-4)  # Wilson, 3 of 4
    pair = rsr["pairs"]["keyword-reference vs length"]
    # vanilla: "ok" x2 unsafe/safe, "Sorry" safe/safe, the long answer unsafe/unsafe
    assert (pair["only_keyword-reference_safe"], pair["only_length_safe"], pair["both_safe"], pair["both_unsafe"]) \
        == (0, 2, 1, 1)
    assert pair["kappa"] == pytest.approx(cohen_kappa({"both": 1, "only_first": 0, "only_second": 2, "neither": 1}))
    flips = results["judge_order_flips"]
    assert {(f["metric"], tuple(f["judges"])) for f in flips} == \
        {("rsr", ("keyword-reference", "length")), ("rsr", ("keyword", "length"))}
    report = (run / "report.md").read_text()
    assert "## Judge agreement" in report
    warning = next(line for line in report.splitlines() if line.startswith("**Warning: the judges disagree"))
    assert "keyword-reference gives" in warning and "length gives" in warning and "LookAhead real" in warning
    assert "| Vanilla SFT | RSR | keyword-reference vs length | 4 | 0 | 2 |" in report or \
        "| vanilla | RSR | keyword-reference vs length | 4 | 0 | 2 |" in report.replace("Vanilla", "vanilla")
