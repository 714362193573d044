"""The method registry: one entry per method, read by training, the forecast, the dry run, the CLI and
the tables; the combinations are its parts composed, with no code of their own."""

from __future__ import annotations

import pytest

from lookahead_tuning.errors import UserError
from lookahead_tuning.experiment.config import make_experiment
from lookahead_tuning.experiment.plan import plan_cells
from lookahead_tuning.methods import METHOD_NAMES, METHODS, SAFETY_SYSTEM_PROMPT, get_method, row_rank
from lookahead_tuning.train.config import make_config
from lookahead_tuning.train.methods import as_example, method_examples

BASE = {"model": "m", "data": "d", "out": "o"}
ROWS = [as_example({"prompt": f"What is {i} + {i}?", "completion": f"{i} + {i} = {2 * i}.\n#### {2 * i}"})
        for i in range(1, 41)]


def test_every_method_resolves_to_its_parts_in_training_and_experiment_configs():
    for name, method in METHODS.items():
        cfg = make_config({**BASE, "method": name}).resolved()
        assert {k: getattr(cfg, k) for k in method.parts()} == method.parts(), name
    exp = make_experiment({"model": "m", "tasks": ["math"], "methods": list(METHOD_NAMES)})
    assert [c.method for c in plan_cells(exp)] == ["seed", *METHOD_NAMES]
    with pytest.raises(UserError, match="lookahead-virtual-mix"):  # the message lists the registry
        make_config({**BASE, "method": "lookahead-sideways"})
    with pytest.raises(UserError, match="unknown method"):
        get_method("nope")


def test_train_cli_offers_exactly_the_registry():
    import argparse

    from lookahead_tuning.train.cli import add_train_arguments

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    action = next(a for a in parser._actions if "--method" in a.option_strings)
    assert tuple(action.choices) == METHOD_NAMES


def test_combinations_compose_the_transform_the_loss_and_the_mix(tokenizer):
    def examples(name):
        return method_examples(ROWS, make_config({**BASE, "method": name, "seed": 3}), tokenizer)

    vanilla, real, mix, real_mix = (examples(n) for n in ("vanilla", "lookahead-real", "safety-mix",
                                                          "lookahead-real-mix"))
    assert make_config({**BASE, "method": "lookahead-real-constrained"}).resolved().loss == "constrained"
    assert [e["prompt"] for e in examples("lookahead-real-constrained")] == [e["prompt"] for e in real]
    # real + mix = the mix's rows (same seeded refusals, same places) with the task rows previewed
    assert len(real_mix) == len(mix) == len(vanilla) + 2
    for combined, mixed in zip(real_mix, mix, strict=True):
        assert combined["completion"] == mixed["completion"]
        if mixed.get("safety"):  # refusal rows keep their prompt: their opening is what they train
            assert combined["prompt"] == mixed["prompt"]
        else:
            assert combined["prompt"][-1]["content"].startswith(mixed["prompt"][-1]["content"] + " The answer begins with:")
    virtual_mix = examples("lookahead-virtual-mix")
    assert sum(e["completion"].startswith("Let's solve this problem. ") for e in virtual_mix) == len(vanilla)


def test_sdft_methods_need_the_rewrites(tokenizer):
    with pytest.raises(ValueError, match="rewrites"):
        method_examples(ROWS, make_config({**BASE, "method": "sdft"}), tokenizer)
    rewritten = [{**r, "completion": "Rewritten. " + r["completion"]} for r in ROWS]
    out = method_examples(ROWS, make_config({**BASE, "method": "sdft"}), tokenizer, rewritten=rewritten)
    assert [e["completion"] for e in out] == [r["completion"] for r in rewritten]


def test_ptst_trains_like_vanilla_and_is_evaluated_with_the_safety_prompt():
    ptst = get_method("ptst")
    assert ptst.parts() == get_method("vanilla").parts() and ptst.eval_system_prompt == SAFETY_SYSTEM_PROMPT
    exp = make_experiment({"model": "m", "tasks": ["math"], "methods": ["vanilla", "ptst"],
                           "eval": {"system_prompt": "Be brief."}})
    cells = {c.method: c for c in plan_cells(exp)}
    assert cells["ptst"].eval_system_prompt(exp) == SAFETY_SYSTEM_PROMPT
    assert cells["vanilla"].eval_system_prompt(exp) == "Be brief."
    assert cells["seed"].eval_system_prompt(exp) == "Be brief."
    assert cells["ptst"].fingerprint(exp) != cells["vanilla"].fingerprint(exp)


def test_tables_order_rows_by_the_registry():
    assert row_rank("seed") == 0
    assert [row_rank(n) for n in METHOD_NAMES] == list(range(1, len(METHOD_NAMES) + 1))
    assert row_rank("someone-elses-method") == len(METHOD_NAMES) + 1


def test_forecast_takes_the_cross_entropy_methods_and_refuses_the_others(tokenizer):
    from lookahead_tuning.analyse.forecast import method_pairs, method_settings

    assert len(method_pairs(ROWS[:5], "lookahead-virtual-mix", tokenizer)) == 5
    for name in ("constrained-sft", "sdft", "lookahead-real-constrained"):
        with pytest.raises(UserError, match="forecast"):
            method_settings(name)


def test_dry_run_counts_the_reference_forward_pass_for_every_constrained_method():
    from lookahead_tuning.experiment.dryrun import dry_run

    exp = make_experiment({"model": "smollm2-135m-instruct", "params": 1e8, "tasks": [{"name": "math", "n_train": 16}],
                           "methods": ["vanilla", "lookahead-real", "lookahead-real-constrained"]})
    cells = {c["method"]: c for c in dry_run(exp)["cells"]}
    per_token = {m: c["train_flops"] / (c["tokens_per_epoch"] * c["epochs"]) for m, c in cells.items() if m != "seed"}
    assert per_token["vanilla"] == pytest.approx(6e8) and per_token["lookahead-real"] == pytest.approx(6e8)
    assert per_token["lookahead-real-constrained"] == pytest.approx(8e8)


# --------------------------------------------------------------------------- sweep axes and names


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_method_names_and_the_seed_row_are_written_only_in_the_registry():
    """Every module asks methods.py for a method's name, the seed row and the sweep axes; the paper's
    Table 1 (report/paper.py) quotes its rows under the registry's names and is the one exception."""
    import re

    literal = re.compile(r"""["'](lookahead-real|lookahead-virtual|vanilla)["']|method\S*\s*[!=]=\s*["']seed["']"""
                         r"""|get\(["']seed["']""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "src").rglob("*.py"))
             if p.name != "methods.py" and p.parent.name != "__pycache__" and p.name != "paper.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert found == []


def test_a_throwaway_sweep_axis_flows_from_plan_to_cell_to_results_to_report(monkeypatch, tmp_path):
    """A sweep axis is one entry on its method: the config accepts and checks ``sweeps.<key>``, the planner
    adds its cells, results.json names its points, and the report draws its table and figure."""
    import dataclasses
    import json

    from lookahead_tuning import methods
    from lookahead_tuning.experiment.results import write_outputs
    from lookahead_tuning.validate import LEARNING_RATE

    axis = methods.SweepAxis("lr", LEARNING_RATE.field(), True, "Figure 9: learning rate", "lr_sweep",
                             "learning rate", "Vanilla: safety and utility against the learning rate")
    monkeypatch.setitem(methods.METHODS, "vanilla", dataclasses.replace(METHODS["vanilla"], axes=(axis,)))
    spec = {"name": "x", "model": "m", "methods": ["vanilla"], "tasks": [{"name": "math", "n_train": 4}],
            "train": {"lr": 1e-4}}
    with pytest.raises(UserError, match="sweeps.lr"):
        make_experiment({**spec, "sweeps": {"lr": [2.0]}})
    with pytest.raises(UserError, match="unknown sweep 'depth'; expected one of lr, m, prefix"):
        make_experiment({**spec, "sweeps": {"depth": [1]}})
    cfg = make_experiment({**spec, "sweeps": {"lr": [1e-4, 3e-4]}})
    cells = plan_cells(cfg)
    assert [c.cell_id for c in cells] == ["math--seed", "math--vanilla--seed0", "math--vanilla--lr0.0003--seed0"]
    assert cells[2].train["lr"] == 3e-4 and cells[2].row_name == "vanilla@lr=0.0003"

    golden = ROOT / "tests" / "golden" / "tiny6" / "cells"
    stored = {}
    for cell, source, rsr in zip(cells, ("math--seed", "math--vanilla--seed0", "math--vanilla--seed0"),
                                 (0.9, 0.5, 0.7), strict=True):
        data = json.loads((golden / f"{source}.json").read_text())
        stored[cell.cell_id] = {**data, "cell_id": cell.cell_id, "name": cell.row_name, "sweep": dict(cell.sweep),
                                "train": dict(cell.train), "rsr": {**data["rsr"], "rate": rsr}}
    results = write_outputs(tmp_path, cfg, cells, stored)
    assert list(results["sweeps"]) == ["vanilla@lr=0.0003"] and results["sweep_base"] == {"vanilla": {"lr": 1e-4}}
    assert "lr" in (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    report = (tmp_path / "report.md").read_text()
    assert "## Figure 9: learning rate" in report and "![lr sweep](figures/lr_sweep.png)" in report
    assert "| 0.0001 |" in report and "| 0.0003 |" in report
    assert (tmp_path / "figures" / "lr_sweep.png").is_file()


def test_a_methods_recipe_is_what_its_training_config_resolves_to():
    """The forecast and the dry run describe a method's data by its Recipe, built from the cell's keys
    alone (no training config with placeholder paths): for every method it is the trained one's."""
    import dataclasses

    from lookahead_tuning.train.methods import Recipe

    for name in METHODS:
        for keys in ({}, {"m": 3, "connector": " So: ", "seed": 7}, {"safety_share": 0, "preview": "virtual"}):
            values = {"method": name, **keys}
            trained = make_config({**BASE, **values}).resolved()
            recipe = Recipe.of(values)
            assert recipe == Recipe.of(trained)
            assert dataclasses.asdict(recipe) == {k: getattr(trained, k) for k in dataclasses.asdict(recipe)}
    assert Recipe.of({"safety_share": 0}).safety_share == 0.0 and isinstance(Recipe.of({}).safety_share, float)
    with pytest.raises(UserError, match="key 'm'"):
        Recipe.of({"m": -1})


def test_a_dry_run_reads_a_task_file_once(tmp_path, monkeypatch):
    """A GSM8K training file is read by its loader alone; its first record is all that tells its task."""
    import json

    from lookahead_tuning import io
    from lookahead_tuning.data import loaders, tasks
    from lookahead_tuning.experiment.dryrun import dry_run

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"})
                             + "\n" for i in range(30)))
    test = tmp_path / "test.jsonl"
    test.write_text(train.read_text())
    read: list[str] = []
    real = io.iter_located_records

    def counting(path, *a, **k):
        for item in real(path, *a, **k):
            if str(path) == str(train):
                read.append(str(path))
            yield item

    for module in (io, loaders, tasks):
        monkeypatch.setattr(module, "iter_located_records", counting)
    cfg = make_experiment({"name": "x", "model": "smollm2-135m-instruct", "methods": ["vanilla"],
                           "tasks": [{"name": "g", "kind": "gsm8k", "train": str(train), "test": str(test)}]})
    plan = dry_run(cfg)
    assert plan["tasks"]["g"]["train_rows"] == 30
    assert len(read) <= 30 + 2  # every row once, plus the first record peeked to tell the task
