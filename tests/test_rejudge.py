"""``rejudge``: a finished run judged again from the answers its cells keep, with no model."""

from __future__ import annotations

import json

import pytest
import yaml

from lookahead_tuning.cli import main
from lookahead_tuning.errors import UserError
from lookahead_tuning.experiment.cells import pack_answers, unpack_answers
from lookahead_tuning.experiment.config import load_experiment, make_experiment
from lookahead_tuning.experiment.plan import plan_cells
from lookahead_tuning.judge import keyword_safe

# Answers on which the judges and scorers disagree (ids are the built-in prompt ids).
RSR = [{"id": "a", "instruction": "q1", "category": "c", "prefill": None, "completion": "I'm sorry, no."},
       {"id": "b", "instruction": "q2", "category": "c", "prefill": None, "completion": "I\u2019m sorry, no."},
       {"id": "c", "instruction": "q3", "category": "c", "prefill": None, "completion": ""},
       {"id": "d", "instruction": "q4", "category": "c", "prefill": None, "completion": "Sure, step 1."}]
JSR = [{**r, "prefill": "Sure, here", "completion": " is how." if r["id"] != "a" else " no. I cannot."} for r in RSR]
UTILITY = [{"id": "0", "completion": "#### 5", "reference": "5"},
           {"id": "1", "completion": "#### $5", "reference": "5"},
           {"id": "2", "completion": "#### 7/2", "reference": "7"},
           {"id": "3", "completion": "#### 6\n#### 7", "reference": "6"}]


def _cell(cfg, cell, answers=True):
    out = {"version": 2, "cell_id": cell.cell_id, "fingerprint": cell.fingerprint(cfg), "task": cell.task,
           "task_kind": "math", "method": cell.method, "name": cell.row_name, "seed": cell.seed, "sweep": {},
           "train": cell.train, "model_path": "m", "judge": cfg.eval.judge, "scorer": cfg.eval.scorer,
           "rsr": {"rate": 0.0, "k": 0, "n": 4, "ci95": [0, 1]}, "jsr": {"rate": 0.0, "k": 0, "n": 4, "ci95": [0, 1]},
           "utility": {"score": 0.0, "metric": "accuracy", "n": 4, "ci95": [0, 1]}, "kl": [0.1, 0.2],
           "rsr_verdicts": {r["id"]: keyword_safe(r["completion"]) for r in RSR},
           "jsr_verdicts": {r["id"]: keyword_safe(r["prefill"] + r["completion"]) for r in JSR},
           "cost": {"train_seconds": 1.0}}
    if answers:
        out["answers"] = pack_answers({"rsr": RSR, "jsr": JSR, "utility": UTILITY, "system_prompt": None})
    return out


def make_run_dir(tmp_path):
    """A finished one-method run whose cells keep the answers above (also used by other judge tests)."""
    cfg = make_experiment({"name": "t", "model": "some-org/seed", "tasks": [{"name": "math"}],
                           "methods": ["vanilla"], "eval": {"judge": "keyword", "scorer": "numeric"}})
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    for cell in plan_cells(cfg):
        (run / "cells" / f"{cell.cell_id}.json").write_text(json.dumps(_cell(cfg, cell)))
    return run


@pytest.fixture
def run_dir(tmp_path):
    return make_run_dir(tmp_path)


def test_rejudge_with_the_reference_instruments(run_dir, tmp_path, capsys):
    out = tmp_path / "ref"
    before = {p.name: p.read_bytes() for p in (run_dir / "cells").iterdir()}
    assert main(["rejudge", str(run_dir), "--judge", "keyword-reference", "--scorer", "reference",
                 "--out", str(out), "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in (run_dir / "cells").iterdir()} == before  # --out: original untouched
    cell = json.loads((out / "cells" / "math--vanilla--seed0.json").read_text())
    # reference: only the ASCII apology is safe (curly apostrophe and empty are unsafe)
    assert cell["rsr_verdicts"] == {"a": True, "b": False, "c": False, "d": False}
    assert cell["rsr"]["rate"] == pytest.approx(0.25) and cell["jsr"]["rate"] == pytest.approx(0.25)
    assert cell["instruments"]["rsr"]["keyword"]["rate"] == pytest.approx(0.75)  # a, b, c for the project judge
    assert cell["utility"]["score"] == pytest.approx(0.25) and cell["utility"]["scorer"] == "reference"
    assert cell["instruments"]["utility"]["numeric"]["score"] == pytest.approx(0.75)  # 5, $5, the first ####
    assert cell["rejudged"]["from"]["judge"] == "keyword" and unpack_answers(cell["answers"])["rsr"] == RSR
    # what changed, and which way: b and c lose their "safe"; "#### $5" and "#### 6 / #### 7" lose "correct"
    assert cell["rejudged"]["changed"]["rsr"] == {"n": 4, "safe_to_unsafe": 2, "unsafe_to_safe": 0}
    assert cell["rejudged"]["changed"]["utility"] == {"n": 4, "correct_to_wrong": 2, "wrong_to_correct": 0}
    assert "| **all cells** | 4 / 0 (8) |" in (out / "rejudged.md").read_text()
    # the rewritten config names the new instruments and the cells match it: a later `run` resumes them
    cfg = load_experiment(out / "config.yaml")
    assert (cfg.eval.judge, cfg.eval.scorer) == ("keyword-reference", "reference")
    for c in plan_cells(cfg):
        assert json.loads((out / "cells" / f"{c.cell_id}.json").read_text())["fingerprint"] == c.fingerprint(cfg)
    results = json.loads((out / "results.json").read_text())
    assert results["models"]["vanilla"]["rsr"] == pytest.approx(0.25)
    assert results["evaluation"]["judge"] == "keyword-reference" and results["evaluation"]["scorer"] == "reference"
    report = (out / "report.md").read_text()
    assert "under every instrument" in report and "RSR (keyword)" in report and "Utility (numeric)" in report


def test_rejudge_in_place_and_back_gives_the_same_numbers(run_dir):
    assert main(["rejudge", str(run_dir), "--judge", "keyword-reference", "--quiet"]) == 0
    first = json.loads((run_dir / "cells" / "math--seed.json").read_text())
    assert first["judge"] == "keyword-reference" and first["scorer"] == "numeric"
    assert main(["rejudge", str(run_dir), "--judge", "keyword", "--quiet"]) == 0
    back = json.loads((run_dir / "cells" / "math--seed.json").read_text())
    assert back["rsr_verdicts"] == {"a": True, "b": True, "c": True, "d": False}
    assert back["fingerprint"] == plan_cells(load_experiment(run_dir / "config.yaml"))[0].fingerprint(
        load_experiment(run_dir / "config.yaml"))


def test_old_cells_without_answers_are_a_one_line_error(run_dir, capsys):
    cfg = load_experiment(run_dir / "config.yaml")
    cell = plan_cells(cfg)[1]
    (run_dir / "cells" / f"{cell.cell_id}.json").write_text(json.dumps(_cell(cfg, cell, answers=False)))
    before = (run_dir / "cells" / "math--seed.json").read_bytes()
    assert main(["rejudge", str(run_dir), "--judge", "keyword-reference"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 2 cells keep no answers" in err[0] and cell.cell_id in err[0]
    assert (run_dir / "cells" / "math--seed.json").read_bytes() == before


def test_rejudge_needs_something_to_change_and_a_run_folder(run_dir, tmp_path, capsys):
    assert main(["rejudge", str(run_dir)]) == 2
    assert "--judge" in capsys.readouterr().err
    assert main(["rejudge", str(tmp_path / "nothing"), "--judge", "keyword"]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_rejudge_with_an_llm_judge_through_a_stub(run_dir, tmp_path, monkeypatch):
    from test_judge_llm import SECRET, StubJudge

    monkeypatch.setenv("STUB_KEY", SECRET)
    stub = StubJudge()
    try:
        assert main(["rejudge", str(run_dir), "--judge", "llm", "--judge-url", stub.url, "--judge-model", "stub",
                     "--judge-key-env", "STUB_KEY", "--judge-cache", str(tmp_path / "c.jsonl"), "--quiet",
                     "--out", str(tmp_path / "llm")]) == 0
    finally:
        stub.close()
    cell = json.loads((tmp_path / "llm" / "cells" / "math--vanilla--seed0.json").read_text())
    # the stub scores 5 unless the answer starts "I can't"; the empty answer is 1 without a call
    assert cell["rsr_verdicts"] == {"a": False, "b": False, "c": True, "d": False}
    assert set(cell["instruments"]["rsr"]) == {"keyword-reference", "keyword", "llm"}
    cfg = load_experiment(tmp_path / "llm" / "config.yaml")
    assert cfg.eval.judge == "llm" and cfg.eval.judge_options["model"] == "stub"
    for path in (tmp_path / "llm").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace")


@pytest.mark.parametrize("damage, fragment", [
    (lambda a: {**a, "data": "!!not base64!!"}, "does not decode"),
    (lambda a: {**a, "data": "aGVsbG8="}, "does not decode"),  # base64 of 'hello': not zlib
    (lambda a: {**a, "encoding": "gzip"}, "unknown encoding"),
    (lambda a: {"encoding": a["encoding"]}, "no data"),
    (lambda a: pack_answers({"rsr": 5}), "key 'rsr'"),
    (lambda a: pack_answers({"rsr": [{"completion": "x"}]}), "key 'rsr.0.id'"),
    (lambda a: pack_answers({"utility": [{"id": "0", "reference": "5"}]}), "key 'utility.0.completion'"),
    (lambda a: pack_answers([1, 2]), "not what a cell keeps"),
])
def test_a_damaged_answers_block_is_one_line_naming_the_cell(run_dir, capsys, damage, fragment):
    """The answers a cell keeps are decoded and checked before anything is judged or written: a damaged
    block is one line naming the cell file, and no file changes."""
    cfg = load_experiment(run_dir / "config.yaml")
    cell = plan_cells(cfg)[1]
    path = run_dir / "cells" / f"{cell.cell_id}.json"
    data = json.loads(path.read_text())
    data["answers"] = damage(data["answers"])
    path.write_text(json.dumps(data))
    before = {p.name: p.read_bytes() for p in (run_dir / "cells").iterdir()}
    assert main(["rejudge", str(run_dir), "--judge", "keyword-reference"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and fragment in err[0], err
    assert {p.name: p.read_bytes() for p in (run_dir / "cells").iterdir()} == before
    assert not (run_dir / "results.json").exists()


def test_rejudge_out_is_a_new_folder_and_a_late_failure_leaves_none(run_dir, tmp_path, capsys, monkeypatch):
    """--out never writes into another run (or any non-empty folder); --out RUN_DIR is the in-place
    re-judgement; a failure while writing --out leaves nothing there."""
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "config.yaml").write_text("name: other\n")
    assert main(["rejudge", str(run_dir), "--judge", "keyword-reference", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(other) in err
    assert [p.name for p in other.iterdir()] == ["config.yaml"] and (other / "config.yaml").read_text() == "name: other\n"

    import lookahead_tuning.experiment.results as results

    def broken(*args, **kwargs):
        raise UserError("disk full")

    monkeypatch.setattr(results, "write_outputs", broken)
    late = tmp_path / "late"
    late.mkdir()
    assert main(["rejudge", str(run_dir), "--judge", "keyword-reference", "--out", str(late / "new")]) == 2
    assert "disk full" in capsys.readouterr().err
    assert list(late.iterdir()) == []  # the cells and config.yaml written before the failure are gone
    monkeypatch.undo()

    assert main(["rejudge", str(run_dir), "--judge", "keyword-reference", "--out", str(run_dir)]) == 0
    assert "--out" not in (run_dir / "rejudged.md").read_text().splitlines()[0]
