"""Safety (RSR/JSR), over-refusal and utility evaluation end to end on the tiny model."""

from __future__ import annotations

import json

import pytest

from lookahead_tuning.analyse.safety import evaluate_overrefusal, evaluate_safety
from lookahead_tuning.analyse.utility import evaluate_utility
from lookahead_tuning.cli import main
from lookahead_tuning.data.builtin import harmful_answers, harmful_eval_set
from lookahead_tuning.errors import UserError
from lookahead_tuning.judge.keyword import keyword_reference_safe, keyword_safe


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from lookahead_tuning.models import load_model

    return load_model(str(tiny_model_dir))


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_rsr_keyword_metrics_and_generations(tiny, tmp_path):
    model, tok = tiny
    items = harmful_eval_set()[::10][:6]  # spread over categories
    m = evaluate_safety(model, tok, items=items, out_dir=tmp_path, max_new_tokens=6, batch_size=4, progress=False)
    assert m["mode"] == "RSR" and m["n"] == 6 and m["judge"] == "keyword-reference" and m["prefill_tokens"] == 0
    gens = _lines(tmp_path / "generations.jsonl")
    assert [g["id"] for g in gens] == [it["id"] for it in items]
    for g in gens:
        assert g["prefill"] is None and g["response"] == g["completion"]
        assert g["safe"] == g["keyword_reference_safe"] == keyword_reference_safe(g["completion"])
        assert g["keyword_safe"] == keyword_safe(g["completion"])  # the project's judge, recorded beside
    assert m["judges"]["keyword"]["safe_rate"] == pytest.approx(sum(g["keyword_safe"] for g in gens) / 6)
    verdicts = _lines(tmp_path / "verdicts.jsonl")
    assert [(v["id"], v["safe"]) for v in verdicts] == [(g["id"], g["safe"]) for g in gens]
    assert m["safe_rate"] == pytest.approx(sum(g["safe"] for g in gens) / 6)
    assert m["ci95"][0] <= m["safe_rate"] <= m["ci95"][1]
    assert sum(c["n"] for c in m["per_category"].values()) == 6
    assert all(len(c["ci95"]) == 2 for c in m["per_category"].values())
    assert json.loads((tmp_path / "metrics.json").read_text()) == m


def test_jsr_prefills_and_resume(tiny, tmp_path):
    from lookahead_tuning.generate.engine import prefill_text

    model, tok = tiny
    items, answers = harmful_eval_set(), harmful_answers()
    m = evaluate_safety(model, tok, items=items, prefills=answers, prefill_tokens=3, out_dir=tmp_path, limit=4,
                        max_new_tokens=4, progress=False)
    assert m["mode"] == "JSR" and m["prefill_tokens"] == 3 and m["n"] == 4
    gens = _lines(tmp_path / "generations.jsonl")
    for g, chat in zip(gens, answers, strict=False):
        assert g["prefill"] == prefill_text(tok, chat[-1]["content"], 3) and g["prefill"]
        assert g["response"] == g["prefill"] + g["completion"]
    # a rerun reuses the completion log: same results, no duplicate lines
    before = (tmp_path / "completions.jsonl").read_text()
    again = evaluate_safety(model, tok, items=items, prefills=answers, out_dir=tmp_path, limit=4,
                            max_new_tokens=4, progress=False)
    assert again["safe_rate"] == m["safe_rate"]
    assert (tmp_path / "completions.jsonl").read_text() == before


def test_mismatched_prefill_file_is_a_user_error(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(UserError, match="different instruction"):
        evaluate_safety(model, tok, items=harmful_eval_set()[1:], prefills=harmful_answers(), out_dir=tmp_path,
                        limit=2, progress=False)


def test_llm_judge_through_stub(tiny, tmp_path, monkeypatch):
    from test_judge_llm import SECRET, StubJudge

    model, tok = tiny
    monkeypatch.setenv("STUB_KEY", SECRET)
    stub = StubJudge()
    try:
        m = evaluate_safety(model, tok, items=harmful_eval_set()[:3], judge="both", out_dir=tmp_path,
                            max_new_tokens=4, progress=False,
                            judge_options={"url": stub.url, "model": "stub", "api_key_env": "STUB_KEY",
                                           "cache_path": tmp_path / "cache.jsonl", "backoff": 0.01})
    finally:
        stub.close()
    gens = _lines(tmp_path / "generations.jsonl")
    # the stub scores anything that is not an "I can't" refusal 5 (and empty answers are 1 without a call)
    for g in gens:
        assert g["llm_score"] == (1 if not g["response"].strip() or g["response"].startswith("I can't") else 5)
        assert g["safe"] == g["llm_safe"] == (g["llm_score"] < 5)
    assert sum(m["score_distribution"].values()) == 3
    assert m["judge_settings"]["llm"]["api_key_env"] == "STUB_KEY"
    assert set(m["judges"]) == {"keyword-reference", "keyword", "llm"} and m["safe_rate"] == m["judges"]["llm"]["safe_rate"]
    # the stub answers 1 or 5: the safe rate is the same whether unsafe starts at 4 or at 5
    assert m["safe_rate_at_threshold"]["4"]["rate"] == m["safe_rate_at_threshold"]["5"]["rate"] == m["safe_rate"]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace")


def test_overrefusal(tiny, tmp_path):
    model, tok = tiny
    m = evaluate_overrefusal(model, tok, out_dir=tmp_path, limit=3, max_new_tokens=4, progress=False)
    assert m["n"] == 3 and 0.0 <= m["refusal_rate"] <= 1.0 and len(m["ci95"]) == 2
    assert len(_lines(tmp_path / "generations.jsonl")) == 3


def test_utility_math_reference_format(tiny, tmp_path):
    model, tok = tiny
    m = evaluate_utility(model, tok, "math", out_dir=tmp_path, limit=3, max_new_tokens=6, progress=False)
    assert m["n"] == 3 and m["metric"] == "accuracy" and 0.0 <= m["score"] <= 1.0
    (line,) = _lines(tmp_path / "predictions.jsonl")  # the reference scripts' shape: one {"results": [...]}
    preds = line["results"]
    assert len(preds) == 3 and all(set(p) == {"ground_truth", "completion"} for p in preds)
    assert all(p["ground_truth"].isdigit() for p in preds)  # the bare answer, not the worked solution
    verdicts = _lines(tmp_path / "verdicts.jsonl")
    assert [v["correct"] for v in verdicts] == [v["correct_by"]["reference"] for v in verdicts]
    assert m["scorer"] == "reference" and m["correct"] == sum(v["correct"] for v in verdicts)


def test_utility_samsum(tiny, tmp_path, shared_data):
    model, tok = tiny
    m = evaluate_utility(model, tok, "samsum", data=str(shared_data / "samsum" / "test.json"), out_dir=tmp_path,
                         limit=2, max_new_tokens=6, progress=False)
    assert m["metric"] == "rouge1_f1" and m["n"] == 2 and 0.0 <= m["score"] <= 1.0


def test_cli_safety_then_compare(tiny_model_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        rc = main(["eval", "safety", "--model", str(tiny_model_dir), "--limit", "3", "--max-new-tokens", "4",
                   "--quiet", "--out", str(out)])
        assert rc == 0
    assert "RSR (keyword-reference judge)" in capsys.readouterr().out
    # identical greedy runs: no drop, and every prompt agrees
    assert main(["eval", "compare", "--baseline", str(a / "metrics.json"), "--candidate", str(b / "metrics.json"),
                 "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["paired"]["p_value"] == 1.0
    assert main(["eval", "safety", "--model", str(tiny_model_dir), "--judge", "llm", "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_embedded_model_rsr_and_jsr(tmp_path):
    from lookahead_tuning.models import EMBEDDED_ALIAS, load_model

    model, tok = load_model(EMBEDDED_ALIAS)
    rsr = evaluate_safety(model, tok, out_dir=tmp_path / "rsr", limit=8, max_new_tokens=24, progress=False)
    jsr = evaluate_safety(model, tok, prefills=harmful_answers(), out_dir=tmp_path / "jsr", limit=8,
                          max_new_tokens=24, progress=False)
    assert rsr["n"] == jsr["n"] == 8
    assert any(g["completion"].strip() for g in _lines(tmp_path / "rsr" / "generations.jsonl"))


def test_depth_curve_one_rate_per_k_resumable_per_k(tiny, tmp_path):
    from lookahead_tuning.analyse.safety import depth_folder, evaluate_depths
    from lookahead_tuning.data.builtin import harmful_answers_long
    from lookahead_tuning.generate.engine import prefill_text

    model, tok = tiny
    curve = evaluate_depths(model, tok, [0, 3, 20], out_dir=tmp_path, limit=3, max_new_tokens=3, batch_size=3,
                            progress=False)
    assert [p["k"] for p in curve["depths"]] == [0, 3, 20] and curve["judge"] == "keyword-reference"
    for point in curve["depths"]:
        metrics = json.loads((depth_folder(tmp_path, point["k"]) / "metrics.json").read_text())
        assert point["safe_rate"] == metrics["safe_rate"] and point["ci95"] == metrics["ci95"] and point["n"] == 3
        assert point["judges"]["keyword"] == metrics["judges"]["keyword"]["safe_rate"]
        assert metrics["mode"] == ("RSR" if point["k"] == 0 else "JSR")
    assert json.loads((tmp_path / "depths.json").read_text()) == curve
    # k = 20 reaches past the short openings: it is cut from the long ones, 20 tokens deep.
    deep = _lines(depth_folder(tmp_path, 20) / "generations.jsonl")
    long = harmful_answers_long()
    assert [g["prefill"] for g in deep] == [prefill_text(tok, c[1]["content"], 20) for c in long[:3]]
    # The k = 3 point is the JSR the single evaluation measures (same folder contents, same rate).
    single = evaluate_safety(model, tok, prefills="builtin", prefill_tokens=3, out_dir=tmp_path / "jsr", limit=3,
                             max_new_tokens=3, batch_size=3, progress=False)
    assert single["safe_rate"] == curve["depths"][1]["safe_rate"]
    assert _lines(tmp_path / "jsr" / "completions.jsonl") == _lines(depth_folder(tmp_path, 3) / "completions.jsonl")
    # Resumable per k: a k whose folder is gone is redone, the others are read back untouched.
    import shutil

    kept = (depth_folder(tmp_path, 0) / "completions.jsonl").stat().st_mtime_ns
    shutil.rmtree(depth_folder(tmp_path, 20))
    again = evaluate_depths(model, tok, [0, 3, 20], out_dir=tmp_path, limit=3, max_new_tokens=3, batch_size=3,
                            progress=False)
    assert again == curve
    assert (depth_folder(tmp_path, 0) / "completions.jsonl").stat().st_mtime_ns == kept


@pytest.mark.parametrize("depths", [[], [0, 0], [-1], [5000], [1.5], ["3"], "0,3"])
def test_bad_depths_are_one_line_errors(tiny, tmp_path, depths):
    from lookahead_tuning.analyse.safety import evaluate_depths

    model, tok = tiny
    with pytest.raises(UserError, match="depth"):
        evaluate_depths(model, tok, depths, out_dir=tmp_path / "d", limit=1, max_new_tokens=1, progress=False)
    assert not (tmp_path / "d").exists()


def test_cli_depth_curve(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "curve"
    args = ["eval", "safety", "--model", str(tiny_model_dir), "--limit", "2", "--max-new-tokens", "3", "--quiet",
            "--prefill-tokens", "0,1,3", "--out", str(out)]
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "prefill-depth curve (keyword-reference judge)" in shown and "k=0" in shown and "k=3" in shown
    curve = json.loads((out / "depths.json").read_text())
    assert [p["k"] for p in curve["depths"]] == [0, 1, 3]
    assert sorted(p.name for p in out.iterdir()) == ["depths.json", "k0", "k1", "k3"]
    assert main(args) == 0  # resumes: every k is read back
    assert json.loads((out / "depths.json").read_text()) == curve
    for bad in ("0,0", "1,x", "-1,3", "0"):
        assert main(["eval", "safety", "--model", str(tiny_model_dir), "--prefill-tokens", bad,
                     "--out", str(tmp_path / "bad")]) == 2
        assert not (tmp_path / "bad").exists()
    # A folder made under other settings is refused before the model is loaded, for every k.
    assert main([*args[:-2], "--max-new-tokens", "4", "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
