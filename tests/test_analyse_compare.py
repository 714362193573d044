"""The safety gate: exit codes, the paired McNemar test, and the refusal to compare unlike runs."""

from __future__ import annotations

import json

import pytest

from lookahead_tuning.analyse.compare import compare
from lookahead_tuning.cli import main
from lookahead_tuning.errors import UserError
from lookahead_tuning.provenance import sha256_text


def _run_dir(root, name, verdicts, *, judge="keyword-reference", mode="RSR", prefill_tokens=0, prompts=None,
             file="verdicts.jsonl"):
    d = root / name
    d.mkdir()
    n = len(verdicts)
    prompts = prompts or [f"harmful request {i}" for i in range(n)]
    metrics = {"safe_rate": sum(verdicts) / n, "n": n, "judge": judge, "ci95": [0, 1], "mode": mode,
               "prefill_tokens": prefill_tokens, "judge_settings": {judge: {"markers_sha256": "m"}}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    with open(d / file, "w") as fh:
        for i, v in enumerate(verdicts):
            row = {"id": str(i), "safe": v}
            row.update({"prompt_sha256": sha256_text(prompts[i])[:16]} if file == "verdicts.jsonl"
                       else {"instruction": prompts[i]})
            fh.write(json.dumps(row) + "\n")
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


def test_older_outputs_pair_through_generations_prompt_texts(tmp_path):
    base = _run_dir(tmp_path, "base", [True, True, False, True], file="generations.jsonl")
    cand = _run_dir(tmp_path, "cand", [True, False, True, True])
    r = compare(base / "metrics.json", cand / "metrics.json", 0.5)
    assert r["paired"]["n_paired"] == 4
    assert r["paired"]["table"] == {"both": 2, "only_first": 1, "only_second": 1, "neither": 0}


@pytest.mark.parametrize("change,words", [
    ({"judge": "keyword"}, "different judges"),
    ({"mode": "JSR", "prefill_tokens": 3}, "different prefill settings"),
    ({"prompts": ["harmful request 0", "another request", "harmful request 2"]}, "different prompt sets"),
])
def test_unlike_runs_are_refused_with_one_line(tmp_path, capsys, change, words):
    base = _run_dir(tmp_path, "base", [True, True, False])
    other = _run_dir(tmp_path, "other", [True, False, False], **change)
    with pytest.raises(UserError, match=words):
        compare(base / "metrics.json", other / "metrics.json")
    assert main(["eval", "compare", "--baseline", str(base), "--candidate", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_same_ids_on_other_prompts_do_not_pass(tmp_path):
    """The issue's case: two runs on different prompt sets that share ids used to PASS."""
    base = _run_dir(tmp_path, "base", [True] * 5)
    other = _run_dir(tmp_path, "other", [True] * 5, prompts=[f"a different prompt {i}" for i in range(5)])
    with pytest.raises(UserError, match="5 with another prompt text"):
        compare(base, other)


def test_jsr_with_other_prefill_length_is_refused(tmp_path):
    a = _run_dir(tmp_path, "a", [True, False], mode="JSR", prefill_tokens=3)
    b = _run_dir(tmp_path, "b", [True, False], mode="JSR", prefill_tokens=5)
    with pytest.raises(UserError, match="3 prefill tokens.*5 prefill tokens"):
        compare(a, b)
    c = _run_dir(tmp_path, "c", [True, True], mode="JSR", prefill_tokens=3)
    assert compare(a, c)["paired"]["n_paired"] == 2


def test_unknown_prompts_are_refused(tmp_path):
    base = _run_dir(tmp_path, "base", [True, False])
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.json").write_text((base / "metrics.json").read_text())
    with pytest.raises(UserError, match="cannot tell which prompts"):
        compare(base, bare)


@pytest.mark.parametrize("edit, key", [
    (lambda m: m.update(provenance=[1]), "provenance"),
    (lambda m: m.update(judge_settings=[1]), "judge_settings"),
    (lambda m: m.update(judge=["x"]), "judge"),
    (lambda m: m.update(provenance={"inputs": "x"}), "provenance.inputs"),
    (lambda m: m.update(judge_settings={"llm": "x"}), "judge_settings.llm"),
    (lambda m: m.update(judge_settings={"keyword-reference": 5}), "judge_settings.keyword-reference"),
    (lambda m: m.update(provenance={"inputs": {"prompts": {"sha256": 5}}}), "provenance.inputs.prompts.sha256"),
    (lambda m: m.update(provenance={"inputs": {"prefills": {"sha256": 7}}}), "provenance.inputs.prefills.sha256"),
    (lambda m: m.update(safe_rate=True), "safe_rate"),
    (lambda m: m.update(safe_rate=1.5), "safe_rate"),
    (lambda m: m.update(prefill_tokens="3"), "prefill_tokens"),
])
def test_a_damaged_metrics_file_is_exit_2_naming_the_key(tmp_path, capsys, edit, key):
    """Exit 1 means "the gate failed": a metrics.json of the wrong shape must never look like it (before,
    these crashed with exit 1)."""
    base = _run_dir(tmp_path, "base", [True] * 10)
    cand = _run_dir(tmp_path, "cand", [True] * 10)
    metrics = json.loads((cand / "metrics.json").read_text())
    edit(metrics)
    (cand / "metrics.json").write_text(json.dumps(metrics))
    assert main(["eval", "compare", "--baseline", str(base), "--candidate", str(cand)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json" in err[0] and f"key '{key}" in err[0], err


@pytest.mark.parametrize("safe", ["false", "no", 0, 1.0])
def test_a_verdict_that_is_not_a_boolean_is_refused_not_coerced(tmp_path, capsys, safe):
    """``"safe": "false"`` would count as safe under bool(): refused with the file and line."""
    base = _run_dir(tmp_path, "base", [True] * 4)
    cand = _run_dir(tmp_path, "cand", [True] * 4)
    rows = (cand / "verdicts.jsonl").read_text().splitlines()
    row = json.loads(rows[2])
    row["safe"] = safe
    rows[2] = json.dumps(row)
    (cand / "verdicts.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["eval", "compare", "--baseline", str(base), "--candidate", str(cand)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "verdicts.jsonl:3:" in err[0] and "key 'safe'" in err[0], err


@pytest.mark.parametrize("first, last", [(1.0, 0.0), (0.0, 1.0)])
def test_a_repeated_key_in_metrics_cannot_flip_the_gate(tmp_path, capsys, first, last):
    """Two ``safe_rate`` keys in one metrics.json: json and orjson keep the last one silently, so an
    identical pair of runs FAILED by 100 points (or a collapse passed). Refused with the file and the
    line of the second key, exit 2 (never exit 1, "the gate failed")."""
    base = _run_dir(tmp_path, "base", [True] * 10)
    cand = _run_dir(tmp_path, "cand", [True] * 10)
    metrics = json.loads((cand / "metrics.json").read_text())
    metrics["safe_rate"] = first
    text = json.dumps(metrics, indent=2)
    lines = text.splitlines()
    lines.insert(-1, f'  , "safe_rate": {last}')  # after every other key, on a line of its own
    (cand / "metrics.json").write_text("\n".join(lines) + "\n")
    second = len(lines) - 1
    assert main(["eval", "compare", "--baseline", str(base), "--candidate", str(cand)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"metrics.json:{second}:" in err[0], err
    assert "duplicate key 'safe_rate' (first given on line 2)" in err[0], err


def test_a_repeated_key_in_verdicts_is_refused_with_its_line(tmp_path, capsys):
    base = _run_dir(tmp_path, "base", [True] * 4)
    cand = _run_dir(tmp_path, "cand", [True] * 4)
    rows = (cand / "verdicts.jsonl").read_text().splitlines()
    rows[1] = rows[1].replace('"safe": true', '"safe": true, "safe": false')
    (cand / "verdicts.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["eval", "compare", "--baseline", str(base), "--candidate", str(cand)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "verdicts.jsonl:2:" in err[0] and "duplicate key 'safe'" in err[0], err
