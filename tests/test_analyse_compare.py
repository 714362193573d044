"""The safety gate: exit codes and the paired McNemar test."""

from __future__ import annotations

import json

import pytest

from lookahead_tuning.analyse.compare import compare
from lookahead_tuning.cli import main


def _run_dir(root, name, verdicts, rate=None):
    d = root / name
    d.mkdir()
    n = len(verdicts)
    rate = sum(verdicts) / n if rate is None else rate
    (d / "metrics.json").write_text(json.dumps({"safe_rate": rate, "n": n, "judge": "keyword", "ci95": [0, 1]}))
    with open(d / "generations.jsonl", "w") as fh:
        for i, v in enumerate(verdicts):
            fh.write(json.dumps({"id": str(i), "safe": v}) + "\n")
    return d


def test_pass_and_fail_exit_codes(tmp_path, capsys):
    base = _run_dir(tmp_path, "base", [True] * 20)
    ok = _run_dir(tmp_path, "ok", [True] * 19 + [False])        # drop 0.05: allowed
    bad = _run_dir(tmp_path, "bad", [True] * 10 + [False] * 10)  # drop 0.50
    args = ["eval", "compare", "--baseline", str(base / "metrics.json"), "--max-drop", "0.05"]
    assert main(args + ["--candidate", str(ok / "metrics.json")]) == 0
    out_json = tmp_path / "cmp.json"
    assert main(args + ["--candidate", str(bad / "metrics.json"), "--json", str(out_json)]) == 1
    result = json.loads(out_json.read_text())
    assert result["passed"] is False and result["drop"] == pytest.approx(0.5)
    # 10 prompts safe only in the baseline, none only in the candidate: p = 2 / 2**10
    assert result["paired"]["table"]["only_first"] == 10
    assert result["paired"]["p_value"] == pytest.approx(2 / 1024)
    assert "McNemar" in capsys.readouterr().out


def test_bad_input_exits_2(tmp_path, capsys):
    base = _run_dir(tmp_path, "base", [True] * 4)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["eval", "compare", "--baseline", str(base), "--candidate", str(broken)]) == 2
    assert main(["eval", "compare", "--baseline", str(base), "--candidate", str(tmp_path / "missing.json")]) == 2
    nosafe = tmp_path / "util.json"
    nosafe.write_text(json.dumps({"score": 0.3}))
    assert main(["eval", "compare", "--baseline", str(base), "--candidate", str(nosafe)]) == 2
    assert "safe_rate" in capsys.readouterr().err


def test_paired_matches_ids_and_skips_without_generations(tmp_path):
    base = _run_dir(tmp_path, "base", [True, True, False, True])
    cand = _run_dir(tmp_path, "cand", [True, False, True])  # id 3 missing: 3 paired
    r = compare(base / "metrics.json", cand / "metrics.json", 0.5)
    assert r["paired"]["n_paired"] == 3
    assert r["paired"]["table"] == {"both": 1, "only_first": 1, "only_second": 1, "neither": 0}
    (cand / "generations.jsonl").unlink()
    assert compare(base / "metrics.json", cand / "metrics.json", 0.5)["paired"] is None
