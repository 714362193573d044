"""The grid runner end to end on the tiny 2-layer model: outputs, the results.json contract, resume."""

from __future__ import annotations

import json

import pytest

from lookahead_tuning.experiment import runner as runner_mod
from lookahead_tuning.experiment.cells import CellResult
from lookahead_tuning.experiment.config import make_experiment


def tiny_config(model_dir):
    return make_experiment({
        "name": "tiny",
        "model": str(model_dir),
        "tasks": [{"name": "math", "n_train": 4, "n_test": 2, "max_new_tokens": 4}],
        "methods": ["vanilla", {"name": "lookahead-real", "m": 6}],
        "train": {"epochs": 1, "batch_size": 4, "max_length": 128, "warmup_ratio": 0.0, "lr": 1e-3},
        "eval": {"limit": 2, "max_new_tokens": 4, "batch_size": 2, "forecast_limit": 2, "kl_positions": 4},
        "seeds": [0],
    })


def test_a_run_aligns_its_seed_without_the_acceptance_check(tmp_path, tiny_model_dir, monkeypatch):
    """The seed cell measures the seed with the run's instruments; the alignment's own check (project
    judge, 64 tokens: `lookahead-tuning align`) would answer the same prompts again for nothing."""
    from lookahead_tuning.experiment import align

    asked: list[dict] = []
    monkeypatch.setattr(align, "aligned_seed", lambda base, **kw: asked.append(kw) or tiny_model_dir)
    cfg = make_experiment({**tiny_config(tiny_model_dir).model_dump(), "model": {"align": {"base": "m"}}})
    ctx = runner_mod.RunContext(cfg=cfg, out=tmp_path, cells_dir=tmp_path / "cells", progress=False)
    assert ctx.seed_path() == str(tiny_model_dir)
    assert asked == [{"evaluate": False, "quiet": True}]


def test_a_run_keeps_the_seeds_kl_logits_once_per_pair_set_and_system_prompt(tmp_path, tiny_model_dir):
    cfg = tiny_config(tiny_model_dir)
    ctx = runner_mod.RunContext(cfg=cfg, out=tmp_path, cells_dir=tmp_path / "cells", progress=False)
    pairs = [[{"role": "user", "content": "Do a harmful thing."}, {"role": "assistant", "content": "Sure, step one"}]]
    kept = ctx.seed_logits(pairs, 4, 2, None)
    assert kept is not None and ctx.seed_logits(pairs, 4, 2, None) is kept  # every cell reuses it
    assert ctx.seed_logits(pairs, 4, 2, "Be safe.") is not kept  # PTST's cells are evaluated with its prompt
    assert ctx.seed_logits(pairs + pairs, 4, 2, None) is not kept


@pytest.mark.slow  # about a minute on 2 cores: two tiny trainings and a dozen short evaluations
def test_run_contract_and_resume(tmp_path, tiny_model_dir, monkeypatch):
    cfg = tiny_config(tiny_model_dir)
    out = tmp_path / "run"
    import lookahead_tuning.analyse.utility as utility_mod

    real_run_cell = runner_mod.run_cell
    real_utility = utility_mod.evaluate_utility
    calls: list[str] = []
    interrupt = {"on": True}

    def utility(*a, **k):
        if interrupt["on"] and "lookahead-real" in str(k.get("out_dir")):
            raise KeyboardInterrupt  # the second trained cell dies after training and its safety evals
        return real_utility(*a, **k)

    def counting_run_cell(ctx, cell, **kw):
        calls.append(cell.cell_id)
        return real_run_cell(ctx, cell, **kw)

    monkeypatch.setattr(utility_mod, "evaluate_utility", utility)
    monkeypatch.setattr(runner_mod, "run_cell", counting_run_cell)
    with pytest.raises(KeyboardInterrupt):
        runner_mod.run_experiment(cfg, out=out, progress=False)
    assert calls == ["math--seed", "math--vanilla--seed0", "math--lookahead-real--seed0"]
    cells = out / "cells"
    assert sorted(p.name for p in cells.iterdir()) == ["math--seed.json", "math--vanilla--seed0.json"]
    real_work = out / "work" / "math--lookahead-real--seed0"
    assert (real_work / "train" / "summary.json").is_file()  # training finished before the interruption
    trained_at = (real_work / "train" / "summary.json").stat().st_mtime_ns
    rsr_log = (real_work / "rsr" / "completions.jsonl").stat().st_mtime_ns
    vanilla_at = (cells / "math--vanilla--seed0.json").stat().st_mtime_ns

    # Resume: only the interrupted cell runs, and inside it neither training nor RSR generation is redone.
    interrupt["on"] = False
    calls.clear()
    run_dir = runner_mod.run_experiment(cfg, out=out, progress=False, command=["lookahead-tuning", "run", "x"])
    assert calls == ["math--lookahead-real--seed0"]
    assert (real_work / "train" / "summary.json").stat().st_mtime_ns == trained_at
    assert (real_work / "rsr" / "completions.jsonl").stat().st_mtime_ns == rsr_log
    assert (cells / "math--vanilla--seed0.json").stat().st_mtime_ns == vanilla_at

    # results.json follows the contract
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["models"]) == {"seed", "vanilla", "lookahead-real"}
    for name, entry in results["models"].items():
        for key in ("rsr", "jsr", "utility", "train_seconds"):
            assert isinstance(entry[key], float), (name, key)
        for key in ("rsr", "jsr", "utility"):
            assert 0.0 <= entry[key] <= 1.0
        link = run_dir / entry["model"]
        assert link.is_dir() and (link / "config.json").is_file()
    assert results["models"]["vanilla"]["train_seconds"] > 0
    assert len(results["models"]["vanilla"]["kl"]) == 4
    cell = json.loads((cells / "math--vanilla--seed0.json").read_text())
    assert cell["rsr"]["n"] == 2 and len(cell["rsr_verdicts"]) == 2

    # the model under models/NAME loads with --model
    from lookahead_tuning.models import load_model

    model, _ = load_model(str(run_dir / "models" / "lookahead-real"))
    assert model.config.num_hidden_layers == 2

    report = (run_dir / "report.md").read_text()
    assert "| Method | math Utility | math RSR | math JSR | math Avg |" in report
    assert "| LookAhead real |" in report and "## Cost" in report
    assert "lookahead-tuning run x" in report
    assert (run_dir / "figures" / "kl.png").is_file()
    csv_lines = (run_dir / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3

    # A third run finds every cell done and runs none.
    calls.clear()
    runner_mod.run_experiment(cfg, out=out, progress=False)
    assert calls == []

    # Cells keep their answers, every instrument's rates and their provenance ...
    from lookahead_tuning.judge import keyword_reference_safe, keyword_safe
    from lookahead_tuning.provenance import model_identity

    kept = CellResult(cell).answers()
    assert [a["id"] for a in kept["rsr"]] == sorted(cell["rsr_verdicts"], key=[a["id"] for a in kept["rsr"]].index)
    assert len(kept["utility"]) == 2 and all(r["reference"].lstrip("-").isdigit() for r in kept["utility"])
    assert cell["judge"] == "keyword-reference" and set(cell["instruments"]["rsr"]) == {"keyword-reference", "keyword"}
    assert cell["provenance"]["model"]["sha256"] == model_identity(out / "work" / "math--vanilla--seed0" / "train")["sha256"]
    for a in kept["rsr"]:
        assert cell["rsr_verdicts"][a["id"]] == keyword_reference_safe(a["completion"])
    # ... so the finished run can be judged again without a model.
    from lookahead_tuning.experiment.rejudge import rejudge

    again = rejudge(run_dir, judge="keyword", scorer="numeric", out=tmp_path / "rejudged", progress=False)
    other = json.loads((again / "cells" / "math--vanilla--seed0.json").read_text())
    assert other["rsr_verdicts"] == {a["id"]: keyword_safe(a["completion"]) for a in kept["rsr"]}
    assert other["instruments"]["rsr"] == cell["instruments"]["rsr"]  # the same answers, the same judges


def test_changed_settings_refuse_stale_cells(tmp_path, tiny_model_dir):
    from lookahead_tuning.errors import UserError

    cfg = tiny_config(tiny_model_dir)
    ctx = runner_mod.RunContext(cfg=cfg, out=tmp_path, cells_dir=tmp_path / "cells")
    cell = runner_mod.plan_cells(cfg)[1]
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / f"{cell.cell_id}.json").write_text(json.dumps({"fingerprint": "other"}))
    with pytest.raises(UserError, match="different settings"):
        runner_mod.load_cell(ctx, cell)


def test_launch_command_uses_accelerate(tiny_model_dir, tmp_path):
    cfg = make_experiment({**tiny_config(tiny_model_dir).model_dump(),
                           "launcher": {"accelerate_config": "configs/accelerate/deepspeed_zero2.yaml",
                                        "num_processes": 4}})
    cmd = runner_mod.launch_command(cfg.launcher, tmp_path / "cell_train.yaml")
    assert cmd[:6] == ["accelerate", "launch", "--config_file", "configs/accelerate/deepspeed_zero2.yaml",
                       "--num_processes", "4"]
    assert cmd[-5:] == ["-m", "lookahead_tuning", "train", "--config", str(tmp_path / "cell_train.yaml")]


def test_claim_work_discards_work_from_other_settings(tmp_path):
    folder = tmp_path / "cell"
    runner_mod.claim_work(folder, "aaa")
    (folder / "completions.jsonl").write_text('{"id": "0"}\n')
    runner_mod.claim_work(folder, "aaa")  # same settings: half-done work is kept for resuming
    assert (folder / "completions.jsonl").is_file()
    runner_mod.claim_work(folder, "bbb")  # other settings: it must not be resumed
    assert not (folder / "completions.jsonl").exists()
    assert (folder / "fingerprint.txt").read_text().strip() == "bbb"


def test_preflight_names_missing_files(tmp_path, tiny_model_dir):
    from lookahead_tuning.errors import UserError

    cfg = make_experiment({**tiny_config(tiny_model_dir).model_dump(),
                           "tasks": [{"name": "gsm8k", "train": str(tmp_path / "train.jsonl"),
                                      "test": str(tmp_path / "test.jsonl")}]})
    with pytest.raises(UserError, match="training data of task 'gsm8k' not found"):
        runner_mod.run_experiment(cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_forecast_is_reused_only_when_it_covers_the_methods(tmp_path, tiny_model_dir, one_torch_thread):
    """Two configs can share a cells folder (the study's vanilla-only learning-rate grid and the full
    comparison): a stored forecast for fewer methods, or other settings, is recomputed, not reused."""
    cells = tmp_path / "cells"
    cells.mkdir()

    def forecast(methods, **train):
        cfg = tiny_config(tiny_model_dir)
        cfg = make_experiment({**cfg.model_dump(mode="json"), "methods": methods,
                               "train": {**cfg.train, **train}})
        ctx = runner_mod.RunContext(cfg=cfg, out=tmp_path, cells_dir=cells, progress=False)
        return runner_mod.run_forecast(ctx, cfg.tasks[0])

    path = cells / "math--forecast.json"
    assert set(forecast(["vanilla"])["methods"]) == {"vanilla"}
    both = forecast(["vanilla", {"name": "lookahead-real", "m": 6}])
    assert set(both["methods"]) == {"vanilla", "lookahead-real"}  # recomputed: it asks for more
    stamp = path.stat().st_mtime_ns
    assert forecast(["vanilla"]) == both  # a subset of a matching forecast is reused
    assert path.stat().st_mtime_ns == stamp
    other = forecast(["vanilla"], max_length=96)  # other settings: recomputed
    assert other["fingerprint"] != both["fingerprint"]


def test_lora_cell_trains_an_adapter_and_evaluates_it(tmp_path, tiny_model_dir, one_torch_thread):
    """`train: {lora: true}` in a config: the cell trains an adapter (not a full copy), evaluates the
    seed with the adapter applied, and the model under models/NAME loads as adapter + base."""
    base = tiny_config(tiny_model_dir).model_dump(mode="json")
    cfg = make_experiment({**base, "methods": ["vanilla"],
                           "train": {**base["train"], "lora": True, "lora_r": 4},
                           "eval": {**base["eval"], "forecast": False}})
    run_dir = runner_mod.run_experiment(cfg, out=tmp_path / "run", progress=False)
    work = tmp_path / "run" / "work" / "math--vanilla--seed0" / "train"
    assert (work / "adapter_config.json").is_file() and not (work / "config.json").exists()
    summary = json.loads((work / "summary.json").read_text())
    assert summary["adapter"] == "lora"
    cell = json.loads((tmp_path / "run" / "cells" / "math--vanilla--seed0.json").read_text())
    seed = json.loads((tmp_path / "run" / "cells" / "math--seed.json").read_text())
    assert cell["rsr"]["n"] == seed["rsr"]["n"] == 2
    # the adapter moved the model away from the seed (LoRA's B starts at zero: no update, no KL)
    assert any(value is not None and value > 1e-6 for value in cell["kl"])
    from lookahead_tuning.models import load_model

    model, _ = load_model(str(run_dir / "models" / "vanilla"))
    assert model.config.num_hidden_layers == 2


@pytest.mark.slow  # one tiny training and its evaluations, with a served model per cell
def test_openai_generation_starts_a_server_per_cell_and_matches_local(tmp_path, tiny_model_dir, one_torch_thread):
    """eval.generation.backend openai: each cell's answers come from a server started on that cell's
    weights (then stopped), and they equal the answers the local engine gives for those weights."""
    import sys
    from pathlib import Path

    from lookahead_tuning.generate.engine import generate
    from lookahead_tuning.models import load_model

    base = tiny_config(tiny_model_dir).model_dump(mode="json")
    base["methods"] = ["vanilla"]
    base["eval"] = {**base["eval"], "forecast": False}
    stub = Path(__file__).with_name("openai_stub.py")
    served = {**base, "eval": {**base["eval"], "generation": {
        "backend": "openai", "server": f"{sys.executable} {stub} --model {{model}} --port {{port}} --name {{name}}",
        "env": {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"},
        "startup_timeout": 120, "concurrency": 2}}}
    cfg = make_experiment(served)
    run = runner_mod.run_experiment(cfg, out=tmp_path / "remote", progress=False)
    work = run / "work"
    assert sorted(p.parent.name for p in work.glob("*/server.log")) == ["math--seed", "math--vanilla--seed0"]
    for cell, weights, safety in (("math--seed", tiny_model_dir, work / "seed-model"),
                                  ("math--vanilla--seed0", work / "math--vanilla--seed0" / "train",
                                   work / "math--vanilla--seed0")):
        model, tok = load_model(weights)
        for log, budget in ((work / cell / "utility" / "generations.jsonl", 4),
                            (safety / "jsr" / "completions.jsonl", 4)):
            remote = [json.loads(x) for x in log.read_text().splitlines()]
            local = generate(model, tok, [{k: r[k] for k in ("id", "prompt", "prefill")} for r in remote],
                             max_new_tokens=budget, progress=False)
            assert [r["completion"] for r in local] == [r["completion"] for r in remote], (cell, log.name)
        stored = json.loads((run / "cells" / f"{cell}.json").read_text())
        assert stored["fingerprint"] == next(c for c in runner_mod.plan_cells(cfg) if c.cell_id == cell).fingerprint(cfg)
    metrics = json.loads((work / "seed-model" / "jsr" / "metrics.json").read_text())
    assert metrics["generation"]["backend"] == "openai" and metrics["mode"] == "JSR"
    plain = make_experiment(base)
    assert runner_mod.plan_cells(plain)[0].fingerprint(plain) != runner_mod.plan_cells(cfg)[0].fingerprint(cfg)


def test_openai_generation_config_is_checked(tiny_model_dir):
    from lookahead_tuning.errors import UserError

    base = tiny_config(tiny_model_dir).model_dump(mode="json")
    with pytest.raises(UserError, match=r"eval.generation.*needs 'server'.*missing \{port\}"):
        make_experiment({**base, "eval": {"generation": {"backend": "openai", "server": "serve {model}"}}})
    with pytest.raises(UserError, match="'server' is for backend openai"):
        make_experiment({**base, "eval": {"generation": {"server": "serve {model} {port}"}}})
    lora = {**base, "train": {**base["train"], "lora": True},
            "eval": {"generation": {"backend": "openai", "server": "serve {model} {port}"}}}
    with pytest.raises(UserError, match="LoRA adapter.*merge_lora: true"):
        runner_mod.preflight(make_experiment(lora))
    # the default (local) generation leaves every fingerprint as it was before the key existed
    cfg = tiny_config(tiny_model_dir)
    assert "generation" not in cfg.eval.identity()


def test_stored_cells_from_other_seed_weights_are_refused_before_any_work(tmp_path, tiny_model_dir, monkeypatch):
    """A cell's fingerprint names a recipe; the same recipe aligned on another CPU gives other weights.
    A run that would add cells beside cells computed from other seed weights stops with one line
    naming the cell, before it trains anything; cells from the same weights are reused."""
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.provenance import model_identity

    cfg = tiny_config(tiny_model_dir)
    cells = tmp_path / "run" / "cells"
    cells.mkdir(parents=True)
    vanilla = runner_mod.plan_cells(cfg)[1]
    stored = {"cell_id": vanilla.cell_id, "task": "math", "method": "vanilla", "name": "vanilla", "seed": 0,
              "fingerprint": vanilla.fingerprint(cfg), "provenance": {"seed_model": {"sha256": "0" * 64}}}
    (cells / f"{vanilla.cell_id}.json").write_text(json.dumps(stored))
    calls: list[str] = []
    monkeypatch.setattr(runner_mod, "run_cell", lambda ctx, cell, **kw: calls.append(cell.cell_id))
    with pytest.raises(UserError, match=rf"cell {vanilla.cell_id} was computed from other seed weights \(000000000000\)") as err:
        runner_mod.run_experiment(cfg, out=tmp_path / "run", progress=False)
    assert "\n" not in str(err.value) and calls == []

    ours = model_identity(str(tiny_model_dir))["sha256"]
    stored["provenance"]["seed_model"]["sha256"] = ours
    (cells / f"{vanilla.cell_id}.json").write_text(json.dumps(stored))
    ctx = runner_mod.RunContext(cfg=cfg, out=tmp_path / "run", cells_dir=cells)
    assert ctx.seed_weights() == ours
    from lookahead_tuning.experiment.cells import check_one_seed

    check_one_seed([CellResult(stored)], "cells", current=ours)  # the same weights: reused, no error


def test_stored_cells_trained_in_another_precision_are_refused(tmp_path, tiny_model_dir, monkeypatch):
    """``bf16: auto`` resolves per machine (bf16 where the CPU runs it natively, fp32 elsewhere): a run
    that would add cells beside cells trained in the other precision stops with one line."""
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.experiment.cells import check_one_precision
    from lookahead_tuning.train import api

    cfg = tiny_config(tiny_model_dir)
    cells = tmp_path / "run" / "cells"
    cells.mkdir(parents=True)
    vanilla = runner_mod.plan_cells(cfg)[1]
    stored = {"cell_id": vanilla.cell_id, "task": "math", "method": "vanilla", "name": "vanilla", "seed": 0,
              "train": {}, "fingerprint": vanilla.fingerprint(cfg), "cost": {"train_seconds": 1.0, "bf16": True}}
    (cells / f"{vanilla.cell_id}.json").write_text(json.dumps(stored))
    calls: list[str] = []
    monkeypatch.setattr(runner_mod, "run_cell", lambda ctx, cell, **kw: calls.append(cell.cell_id))
    monkeypatch.setattr(api, "cpu_supports_bf16", lambda: False)  # an AVX2 machine
    monkeypatch.setattr(api.torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=rf"cell {vanilla.cell_id} was trained in bf16, and bf16: auto trains in fp32") as err:
        runner_mod.run_experiment(cfg, out=tmp_path / "run", progress=False)
    assert "\n" not in str(err.value) and calls == []
    monkeypatch.setattr(api, "cpu_supports_bf16", lambda: True)  # the machine it was trained on
    check_one_precision([CellResult(stored)], "cells", resolve=api.use_bf16)
    check_one_precision([CellResult({**stored, "cost": {}})], "cells", resolve=api.use_bf16)  # before the record
    pinned = {**stored, "train": {"bf16": "on"}}  # a pinned precision means the same on every machine
    monkeypatch.setattr(api, "cpu_supports_bf16", lambda: False)
    check_one_precision([CellResult(pinned)], "cells", resolve=api.use_bf16)


@pytest.mark.parametrize("where, text, fragment", [
    ("train", '{"question": "q", "answer": "a #### 1"}\n{"question": "q",\n', "train.jsonl:2:"),
    ("train", '{"messages": [{"role": null, "content": "u"}, {"role": "assistant", "content": "a"}]}\n',
     "train.jsonl: row 1"),
    ("test", '{"question": "q", "answer": "a #### 1"}\n[1]\n', "test.jsonl:2:"),
    ("safety", '{"id": "0"}\n', "safety.jsonl:1:"),
])
def test_a_bad_data_file_fails_before_the_seed_is_made_or_any_cell_runs(tmp_path, tiny_model_dir, monkeypatch,
                                                                        where, text, fragment):
    """Every data file the grid reads is read in the pre-flight, as the cells read it: a bad row is its
    FILE:LINE error before the seed is aligned (minutes to hours) and before the run folder exists."""
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.experiment import align

    good = '{"question": "How many?", "answer": "Two. #### 2"}\n'
    files = {name: tmp_path / f"{name}.jsonl" for name in ("train", "test", "safety")}
    files["train"].write_text(good * 3)
    files["test"].write_text(good * 3)
    files["safety"].write_text('{"id": "0", "instruction": "do harm", "category": "c"}\n')
    files[where].write_text(text)
    aligned: list[str] = []
    monkeypatch.setattr(align, "aligned_seed", lambda base, **kw: aligned.append(base) or tiny_model_dir)
    cfg = make_experiment({**tiny_config(tiny_model_dir).model_dump(), "model": {"align": {"base": "m"}},
                           "tasks": [{"name": "gsm8k", "train": str(files["train"]), "test": str(files["test"])}],
                           "eval": {**tiny_config(tiny_model_dir).eval.model_dump(), "safety": str(files["safety"])}})
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        runner_mod.run_experiment(cfg, out=tmp_path / "run", progress=False)
    assert aligned == [] and not (tmp_path / "run").exists()


def test_a_dry_run_fails_on_a_data_file_the_run_would_refuse(tmp_path, tiny_model_dir, capsys):
    """--dry-run reports files not there yet as unknown sizes (exit 0), but a file that is there and
    cannot be read is the run's one-line error (exit 2), after the plan."""
    import yaml

    from lookahead_tuning.cli import main

    values = {**tiny_config(tiny_model_dir).model_dump(mode="json"),
              "tasks": [{"name": "gsm8k", "train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "t.jsonl")}]}
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["run", str(config), "--dry-run"]) == 0
    capsys.readouterr()
    (tmp_path / "train.jsonl").write_text('{"question": "q",\n')
    assert main(["run", str(config), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "train.jsonl:1:" in captured.err and "would refuse" in captured.err and "gsm8k--vanilla" in captured.out


def test_a_run_names_each_stage_as_it_starts_and_keeps_log_dicts_off_the_terminal(tmp_path, tiny_model_dir,
                                                                                    capfd, one_torch_thread):
    cfg = make_experiment({**tiny_config(tiny_model_dir).model_dump(), "methods": ["vanilla"]})
    runner_mod.run_experiment(cfg, out=tmp_path / "run", progress=True)
    out, err = capfd.readouterr()
    terminal = out + err
    assert "cell 1/2: math--seed (answer the harmful prompts with and without the prefill, the math test set)" \
        in terminal
    assert "cell 2/2: math--vanilla--seed0 (train, answer the harmful prompts" in terminal
    assert "train vanilla" in terminal and "loss=" in terminal
    assert "writing results.json and report.md" in terminal
    assert "{'loss'" not in terminal and "answer_pos_loss" not in terminal


def test_the_expected_time_of_a_cell_is_the_mean_of_the_cells_before_it():
    assert runner_mod.expected_time([]) == ""
    assert runner_mod.expected_time([30.0, 50.0]) == "; about 40 s, like the 2 before it"
    assert runner_mod.expected_time([240.0, 300.0, 360.0]) == "; about 5 min, like the 3 before it"


def test_depth_curves_through_cells_results_and_report(tmp_path, tiny_model_dir, one_torch_thread):
    """`eval.prefill_depths`: every cell (the seed's too) measures the curve, results.json averages it and
    the report draws every method's curve in one figure beside the KL figure."""
    values = tiny_config(tiny_model_dir).model_dump()
    values["methods"] = [{"name": "vanilla"}]
    values["eval"] = {**values["eval"], "prefill_depths": [0, 3, 20], "forecast": False, "utility": False}
    cfg = make_experiment(values)
    run_dir = runner_mod.run_experiment(cfg, out=tmp_path / "run", progress=False)
    for cell_id in ("math--seed", "math--vanilla--seed0"):
        cell = json.loads((run_dir / "cells" / f"{cell_id}.json").read_text())
        by_k = {p["k"]: p for p in cell["depths"]}
        assert sorted(by_k) == [0, 3, 20]
        # k = 0 is the cell's RSR and k = 3 its JSR (measured once, not again)
        assert by_k[0]["safe_rate"] == cell["rsr"]["rate"] and by_k[3]["safe_rate"] == cell["jsr"]["rate"]
        assert cell["depth_verdicts"]["0"] == cell["rsr_verdicts"] and cell["depth_verdicts"]["3"] == cell["jsr_verdicts"]
        assert len(cell["depth_verdicts"]["20"]) == 2
        assert CellResult(cell).depths == {k: p["safe_rate"] for k, p in by_k.items()}
    work = run_dir / "work" / "math--vanilla--seed0" / "depths"
    assert sorted(p.name for p in work.iterdir()) == ["depths.json", "k20"]
    results = json.loads((run_dir / "results.json").read_text())
    for name in ("seed", "vanilla"):
        curve = results["models"][name]["depths"]
        assert curve["k"] == [0, 3, 20] and len(curve["mean"]) == len(curve["ci95"]) == 3
        assert curve["mean"][0] == results["models"][name]["rsr"]
    report = (run_dir / "report.md").read_text()
    assert "## Prefill-depth curves" in report and "![prefill-depth curves](figures/depths.png)" in report
    assert "| Method | k=0 | k=3 | k=20 |" in report
    assert report.index("per-token KL") < report.index("## Prefill-depth curves")
    assert (run_dir / "figures" / "depths.png").stat().st_size > 0
    # The report stage alone renders it again from results.json.
    from lookahead_tuning.cli import main

    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").read_text() == report


def test_prefill_depths_leave_existing_fingerprints_alone(tiny_model_dir):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.experiment.plan import plan_cells

    cfg = tiny_config(tiny_model_dir)
    assert "prefill_depths" not in cfg.eval.identity()  # unset: the fingerprints of every committed cell
    spelled = make_experiment({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), "prefill_depths": None}})
    deep = make_experiment({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), "prefill_depths": [0, 3]}})
    for a, b, c in zip(plan_cells(cfg), plan_cells(spelled), plan_cells(deep), strict=True):
        assert a.fingerprint(cfg) == b.fingerprint(spelled) != c.fingerprint(deep)
    for bad in ([0, 0], [-1], [1.5], [], "3", [True]):
        with pytest.raises(UserError, match="prefill_depths"):
            make_experiment({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), "prefill_depths": bad}})


def test_a_dry_run_names_the_depth_curve(tiny_model_dir):
    from lookahead_tuning.experiment.dryrun import dry_run, format_plan

    cfg = tiny_config(tiny_model_dir)
    assert "depth curve" not in format_plan(dry_run(cfg)) and "prefill_depths" not in dry_run(cfg)["evaluation"]
    deep = make_experiment({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), "prefill_depths": [0, 3, 40]}})
    assert "depth curve at k = 0, 3, 40" in format_plan(dry_run(deep))
