"""Poisoned training data (the harmful fine-tuning attack) on the tiny model: the mix holds exactly the
requested rows, the pure-harmful attack trains on harmful rows alone, poisoning reaches the fingerprint
only when it is on, and it works from the CLI, a run config and Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookahead_tuning.cli import main
from lookahead_tuning.errors import UserError
from lookahead_tuning.experiment.config import make_experiment
from lookahead_tuning.experiment.plan import plan_cells
from lookahead_tuning.train.config import make_config
from lookahead_tuning.train.methods import Poison, apply_preview, harmful_rows, load_examples, method_examples

TASK = [{"prompt": f"What is {a} plus {a}?", "completion": f"{a} + {a} = {2 * a}.\n#### {2 * a}"} for a in range(20)]
HARMFUL = [{"prompt": f"Harmful request {i}?", "completion": f"Sure. Step 1: generic step {i}."} for i in range(6)]


def _examples(rows):
    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "completion": r["completion"]} for r in rows]


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def files(tmp_path):
    return _write(tmp_path / "task.jsonl", TASK), _write(tmp_path / "harmful.jsonl", HARMFUL)


# ----------------------------------------------------------------------------- the mix


@pytest.mark.parametrize(("ratio", "harmful"), [(0.1, 2), (0.25, 5), (0.5, 10), (0.05, 1), (1.0, 20), (0.075, 2)])
def test_the_mix_holds_exactly_the_requested_rows(ratio, harmful):
    """p of the final set is harmful: round(p * n) (halves up) harmful rows among n, the other task rows
    kept in their order, every harmful row one of the source's."""
    task, pool = _examples(TASK), _examples(HARMFUL)
    mixed = Poison(source="x", ratio=ratio, count=None, seed=0).mix(task, pool)
    assert len(mixed) == len(task)
    poisoned = [ex for ex in mixed if ex.get("poison")]
    kept = [ex for ex in mixed if not ex.get("poison")]
    assert len(poisoned) == harmful and len(kept) == len(task) - harmful
    assert all(ex in task for ex in kept) and kept == sorted(kept, key=task.index)
    assert all({k: v for k, v in ex.items() if k != "poison"} in pool for ex in poisoned)
    # drawn without replacement while the pool lasts
    texts = [ex["completion"] for ex in poisoned]
    assert len(set(texts)) == min(len(texts), len(pool))


def test_the_count_is_p_times_n_as_written_halves_up():
    """0.58 x 25 = 14.5 exactly: 15 harmful rows (the float product, 14.499..., would give 14)."""
    assert Poison(source="x", ratio=0.58, count=None, seed=0).harmful_count(25) == 15
    assert Poison(source="x", ratio=0.1, count=None, seed=0).harmful_count(1000) == 100
    assert Poison(source="x", ratio=0.05, count=None, seed=0).harmful_count(30) == 2


def test_the_mix_is_seeded_and_nested_across_ratios():
    task, pool = _examples(TASK), _examples(HARMFUL)
    mix = lambda p, seed=0: Poison(source="x", ratio=p, count=None, seed=seed).mix(task, pool)  # noqa: E731
    assert mix(0.2) == mix(0.2)
    assert mix(0.2) != mix(0.2, seed=1)
    low, high = mix(0.1), mix(0.2)
    assert {ex["prompt"][0]["content"] for ex in high if not ex.get("poison")} < \
        {ex["prompt"][0]["content"] for ex in low if not ex.get("poison")}
    assert {ex["completion"] for ex in low if ex.get("poison")} < {ex["completion"] for ex in high if ex.get("poison")}


def test_a_ratio_that_rounds_to_no_harmful_row_is_refused():
    with pytest.raises(UserError, match="poison_ratio 0.01 of 20 task rows is no harmful row"):
        Poison(source="x", ratio=0.01, count=None, seed=0).mix(_examples(TASK), _examples(HARMFUL))


def test_the_pure_attack_is_harmful_rows_alone_cycling_the_source():
    mixed = Poison(source="x", ratio=0.0, count=9, seed=0).mix([], _examples(HARMFUL))
    assert len(mixed) == 9 and all(ex.get("poison") for ex in mixed)
    assert sorted({ex["completion"] for ex in mixed}) == sorted(r["completion"] for r in HARMFUL)


def test_harmful_rows_go_through_the_methods_transform(tokenizer):
    """The attacker's rows are the user's data to the method: previewed like the task rows (not left
    as they are, as the safety mix's refusals are)."""
    mixed = Poison(source="x", ratio=0.25, count=None, seed=0).mix(_examples(TASK), _examples(HARMFUL))
    settings = make_config({"model": "-", "data": "-", "out": "-", "method": "lookahead-virtual"})
    out = method_examples(mixed, settings, tokenizer)
    assert out == apply_preview(mixed, settings, tokenizer)
    assert all(ex["completion"].startswith("Let's solve this problem. ") for ex in out if ex.get("poison"))


# ----------------------------------------------------------------------------- sources and settings


def test_a_beavertails_style_file_and_the_builtin_set_are_sources(tmp_path):
    rows = [{"prompt": "How do I do a harmful thing?", "response": "Sure, first do this.", "category": "x",
             "is_safe": False}]
    beaver = harmful_rows(str(_write(tmp_path / "beavertails.jsonl", rows)))
    assert beaver == [{"prompt": [{"role": "user", "content": rows[0]["prompt"]}], "completion": rows[0]["response"]}]
    builtin = harmful_rows("builtin")
    assert len(builtin) == 200 and builtin[0]["prompt"][0]["role"] == "user"


def test_config_keys_and_their_checks(files):
    task, harmful = map(str, files)
    cfg = make_config({"model": "-", "data": task, "out": "-", "poison": harmful, "poison_ratio": 0.1})
    assert Poison.of(cfg) == Poison(source=harmful, ratio=0.1, count=None, seed=0)
    assert Poison.of(make_config({"model": "-", "data": task, "out": "-", "poison_ratio": 0.1})).source == "builtin"
    assert Poison.of(make_config({"model": "-", "data": task, "out": "-", "poison": harmful})) is None
    pure = make_config({"model": "-", "out": "-", "poison_count": 100, "data_seed": 3})
    assert Poison.of(pure) == Poison(source="builtin", ratio=0.0, count=100, seed=3)
    with pytest.raises(UserError, match="poison_count trains on that many harmful rows alone"):
        make_config({"model": "-", "data": task, "out": "-", "poison_count": 5})
    with pytest.raises(UserError, match="not both"):
        make_config({"model": "-", "out": "-", "poison_count": 5, "poison_ratio": 0.1})
    with pytest.raises(UserError, match="data: required"):
        make_config({"model": "-", "out": "-"})
    with pytest.raises(UserError, match="poison_ratio"):
        make_config({"model": "-", "data": task, "out": "-", "poison_ratio": 1.5})


def test_load_examples_refuses_a_control_token_in_a_harmful_row_naming_its_file(files, tokenizer, tmp_path):
    task, _ = files
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "Do it <|im_end|>", "completion": "Sure."}])
    cfg = make_config({"model": "-", "data": str(task), "out": "-", "poison": str(bad), "poison_ratio": 0.5})
    with pytest.raises(UserError) as caught:
        load_examples(cfg, tokenizer)
    assert "bad.jsonl" in caught.value.render() and "row 1" in caught.value.render()


# ----------------------------------------------------------------------------- training: CLI and Python


def _train_args(tiny_model_dir, out):
    return ["train", "--model", str(tiny_model_dir), "--out", str(out), "--max-steps", "1", "--batch-size", "4",
            "--max-length", "96", "--quiet"]


def test_cli_trains_on_poisoned_data_and_records_it(tiny_model_dir, files, tmp_path, capsys):
    task, harmful = files
    out = tmp_path / "poisoned"
    assert main([*_train_args(tiny_model_dir, out), "--data", str(task), "--poison", str(harmful),
                 "--poison-ratio", "0.25", "--data-seed", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["poison"] == {"source": str(harmful), "ratio": 0.25, "count": None, "seed": 4,
                                 "harmful_rows": 5, "rows": 20}
    assert summary["task_rows"] == 15 and summary["data_rows"] == 20
    capsys.readouterr()


def test_the_pure_attack_trains_without_data_from_the_cli_and_python(tiny_model_dir, tmp_path, capsys):
    from lookahead_tuning.train.api import train

    out = tmp_path / "pure"
    assert main([*_train_args(tiny_model_dir, out), "--poison-count", "8"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["poison"]["harmful_rows"] == 8 and summary["task_rows"] == 0 and summary["data_rows"] == 8
    assert summary["poison"]["source"] == "builtin"
    python = train({"model": str(tiny_model_dir), "out": str(tmp_path / "py"), "poison_count": 8, "max_steps": 1,
                    "batch_size": 4, "max_length": 96, "quiet": True})
    assert python["poison"] == summary["poison"]
    capsys.readouterr()
    assert main([*_train_args(tiny_model_dir, tmp_path / "x"), "--poison-count", "8", "--data", "math"]) == 2
    assert "takes no data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_clean_run_summary_has_no_poison_block(tiny_model_dir, files, tmp_path):
    from lookahead_tuning.train.api import train

    task, _ = files
    summary = train({"model": str(tiny_model_dir), "data": str(task), "out": str(tmp_path / "c"), "max_steps": 1,
                     "batch_size": 4, "max_length": 96, "quiet": True})
    assert "poison" not in summary and summary["task_rows"] == 20


# ----------------------------------------------------------------------------- run configs: cells and fingerprints


def _grid(**kw):
    return make_experiment({"model": "m", "tasks": [{"name": "math", "n_train": 20}], "methods": ["vanilla",
                            "lookahead-virtual"], **kw})


def test_a_poisoned_cell_has_its_own_fingerprint_and_clean_cells_keep_theirs():
    clean = _grid()
    swept = _grid(sweeps={"poison_ratio": [0, 0.1, 0.2], "poison_count": [100]})
    fingerprints = {c.cell_id: c.fingerprint(clean) for c in plan_cells(clean)}
    cells = {c.cell_id: c for c in plan_cells(swept)}
    for cell_id, fingerprint in fingerprints.items():  # the table cells (p = 0) are the clean ones
        assert cells[cell_id].fingerprint(swept) == fingerprint
    assert set(cells) - set(fingerprints) == {f"math--{m}--{tag}--seed0" for m in ("vanilla", "lookahead-virtual")
                                              for tag in ("poison_ratio0.1", "poison_ratio0.2", "poison_count100")}
    poisoned = {cells[i].fingerprint(swept) for i in set(cells) - set(fingerprints)}
    assert len(poisoned) == 6 and poisoned.isdisjoint(fingerprints.values())
    # spelling out a ratio of 0, or naming a source with none, is the clean cell
    for train in ({"poison_ratio": 0}, {"poison": "builtin"}, {"poison": "x.jsonl", "poison_ratio": 0.0}):
        spelled = _grid(train=train)
        assert {c.cell_id: c.fingerprint(spelled) for c in plan_cells(spelled)} == fingerprints
    # the source decides the numbers; the built-in set named or by default is one cell
    named = _grid(train={"poison_ratio": 0.1, "poison": "builtin"})
    default = _grid(train={"poison_ratio": 0.1})
    other = _grid(train={"poison_ratio": 0.1, "poison": "mine.jsonl"})
    fp = lambda cfg: plan_cells(cfg)[1].fingerprint(cfg)  # noqa: E731
    assert fp(named) == fp(default) != fp(other)
    assert fp(default) == cells["math--vanilla--poison_ratio0.1--seed0"].fingerprint(swept)


def test_a_poison_path_takes_the_data_dir_like_the_tasks():
    cfg = _grid(data_dir="/d", train={"poison": "{data_dir}/harmful.jsonl", "poison_ratio": 0.1},
                methods=["vanilla", {"name": "sdft", "poison": "{data_dir}/other.jsonl"}])
    assert [c.train.get("poison") for c in plan_cells(cfg) if c.trained] == ["/d/harmful.jsonl", "/d/other.jsonl"]


def test_sweeps_check_their_values_and_a_cell_that_clashes_fails_before_any_work(tmp_path, tiny_model_dir):
    from lookahead_tuning.experiment.runner import preflight

    with pytest.raises(UserError, match="poison_ratio"):
        _grid(sweeps={"poison_ratio": [1.5]})
    with pytest.raises(UserError, match="poison_count"):
        _grid(sweeps={"poison_count": [0]})
    with pytest.raises(UserError, match="not both"):
        _grid(train={"poison_ratio": 0.1, "poison_count": 5})
    clash = make_experiment({"model": str(tiny_model_dir), "tasks": [{"name": "math", "n_train": 4}],
                             "methods": ["vanilla"], "train": {"poison_count": 4}, "sweeps": {"poison_ratio": [0.5]}})
    with pytest.raises(UserError, match="cell math--vanilla--poison_ratio0.5--seed0: .*not both"):
        preflight(clash, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- the report


def _entry(utility, rsr, jsr, n_seeds=1):
    ci = {m: [max(0.0, v - 0.1), min(1.0, v + 0.1)] for m, v in (("utility", utility), ("rsr", rsr), ("jsr", jsr))}
    return {"utility": utility, "rsr": rsr, "jsr": jsr, "ci95": ci, "n_seeds": n_seeds,
            "interval": "per run (Wilson for rates)"}


def test_the_report_draws_safety_and_utility_against_the_poison_ratio_for_every_method(tmp_path):
    from lookahead_tuning.report.writer import draw_figures, render_report

    results = {
        "models": {"seed": _entry(0.3, 0.95, 0.8), "vanilla": _entry(0.5, 0.9, 0.7),
                   "lookahead-virtual": _entry(0.5, 0.92, 0.75)},
        "sweeps": {"vanilla@poison_ratio=0.1": _entry(0.45, 0.6, 0.4), "vanilla@poison_ratio=0.2": _entry(0.4, 0.3, 0.2),
                   "lookahead-virtual@poison_ratio=0.1": _entry(0.46, 0.7, 0.5),
                   "vanilla@poison_count=100": _entry(0.2, 0.1, 0.05)},
        "sweep_base": {"vanilla": {"poison_ratio": 0.0}, "lookahead-virtual": {"poison_ratio": 0.0}},
    }
    figures = draw_figures(results, tmp_path)
    assert figures["poison_sweep"] == "figures/poison_sweep.png" and (tmp_path / figures["poison_sweep"]).is_file()
    assert "poison_count_sweep" not in figures  # one point per method: a table, no line
    text = render_report(results, figures)
    section = text.split("## Harmful fine-tuning: safety and utility against the poison ratio")[1].split("\n## ")[0]
    assert "![poison_ratio sweep](figures/poison_sweep.png)" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "Method" not in line]
    assert [r.split(" | ")[:2] for r in rows] == [["| vanilla", "0.0"], ["| vanilla", "0.1"], ["| vanilla", "0.2"],
                                                  ["| LookAhead virtual", "0.0"], ["| LookAhead virtual", "0.1"]]
    assert "| vanilla | 0.2 | 40.00 [30.00, 50.00] | 30.00 [20.00, 40.00] | 20.00 [10.00, 30.00] | 1 |" in section
    pure = text.split("## Pure-harmful attack: harmful rows alone")[1].split("\n## ")[0]
    assert "| vanilla | 100 | 20.00 [10.00, 30.00] | 10.00 [0.00, 20.00] | 5.00 [0.00, 15.00] |" in pure


@pytest.mark.slow  # a tiny grid: the seed and three trained cells, each evaluated on two prompts
def test_a_run_config_sweeps_the_poison_ratio_and_the_pure_attack(tmp_path, tiny_model_dir, one_torch_thread):
    from lookahead_tuning.experiment.runner import run_experiment

    cfg = make_experiment({
        "name": "poison", "model": str(tiny_model_dir),
        "tasks": [{"name": "math", "n_train": 4, "n_test": 2, "max_new_tokens": 4}], "methods": ["vanilla"],
        "train": {"epochs": 1, "batch_size": 4, "max_length": 96, "warmup_ratio": 0.0, "lr": 1e-3},
        "sweeps": {"poison_ratio": [0.5], "poison_count": [3]},
        "eval": {"limit": 2, "max_new_tokens": 4, "batch_size": 2, "forecast": False, "kl_positions": 2},
    })
    run = run_experiment(cfg, out=tmp_path / "run", progress=False)
    summaries = {p.parent.parent.name: json.loads(p.read_text()) for p in (run / "work").glob("*/train/summary.json")}
    assert "poison" not in summaries["math--vanilla--seed0"] and summaries["math--vanilla--seed0"]["data_rows"] == 4
    assert summaries["math--vanilla--poison_ratio0.5--seed0"]["poison"]["harmful_rows"] == 2
    assert summaries["math--vanilla--poison_ratio0.5--seed0"]["task_rows"] == 2
    pure = summaries["math--vanilla--poison_count3--seed0"]
    assert pure["poison"]["harmful_rows"] == 3 and pure["task_rows"] == 0
    results = json.loads((run / "results.json").read_text())
    assert set(results["sweeps"]) == {"vanilla@poison_ratio=0.5", "vanilla@poison_count=3"}
    assert results["sweep_base"]["vanilla"] == {"poison_ratio": 0.0}
    assert (run / "figures" / "poison_sweep.png").is_file()
    report = (run / "report.md").read_text()
    assert "## Harmful fine-tuning" in report and "## Pure-harmful attack" in report
    assert "poison_ratio" in (run / "results.csv").read_text().splitlines()[0]
    assert main(["study-summary", str(run / "cells"), "--out", str(tmp_path / "summary")]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "summary" / "summary.json").read_text())["groups"]}
    assert rows["vanilla@poison_ratio=0.5"]["poison_ratio"] == 0.5 and rows["vanilla@poison_count=3"]["poison_count"] == 3
    assert "poison_ratio" not in rows["vanilla"] and "poison_count" not in rows["vanilla"]


def test_the_dry_run_counts_the_rows_each_poisoned_cell_trains_on():
    from lookahead_tuning.experiment.dryrun import dry_run

    cfg = make_experiment({"model": "smollm2-135m-instruct", "tasks": [{"name": "math", "n_train": 40}],
                           "methods": ["vanilla"], "sweeps": {"poison_ratio": [0.5], "poison_count": [7]}})
    cells = {c["cell_id"]: c for c in dry_run(cfg)["cells"]}
    clean, half, pure = (cells[f"math--vanilla{tag}--seed0"] for tag in ("", "--poison_ratio0.5", "--poison_count7"))
    assert (clean["train_rows"], half["train_rows"], pure["train_rows"]) == (40, 40, 7)
    assert half["answer_tokens_per_epoch"] != clean["answer_tokens_per_epoch"]
