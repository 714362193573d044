"""Experiment config validation, the grid plan, the shipped configs and the paper dry run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lookahead_tuning.errors import UserError
from lookahead_tuning.experiment.config import load_experiment, make_experiment
from lookahead_tuning.experiment.demo import demo_config, shipped_config
from lookahead_tuning.experiment.plan import plan_cells, sweep_values

ROOT = Path(__file__).resolve().parents[1]


def base(**extra):
    cfg = {"model": "some/model", "tasks": ["math"], "methods": ["vanilla", {"name": "lookahead-real", "m": 6}]}
    cfg.update(extra)
    return cfg


def test_unknown_key_names_the_key(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(base(epoch=3)))
    with pytest.raises(UserError, match=r"x\.yaml: unknown key 'epoch'"):
        load_experiment(path)
    with pytest.raises(UserError, match=r"unknown key 'eval\.prefil_tokens'"):
        make_experiment(base(eval={"prefil_tokens": 3}))
    with pytest.raises(UserError, match=r"train: unknown training key 'learning_rate'"):
        make_experiment(base(train={"learning_rate": 1e-4}))
    with pytest.raises(UserError, match=r"methods\.lookahead-real: unknown training key 'mm'"):
        make_experiment(base(methods=[{"name": "lookahead-real", "mm": 3}]))


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="methods"):
        make_experiment(base(methods=["vanila"]))
    with pytest.raises(UserError, match="set by the runner"):
        make_experiment(base(train={"seed": 3}))
    with pytest.raises(UserError, match="exactly one"):
        make_experiment(base(model={"seed": "a/b", "align": {}}))
    with pytest.raises(UserError, match="'test'"):
        make_experiment(base(tasks=[{"name": "gsm8k", "train": "x.jsonl"}]))
    with pytest.raises(UserError, match="listed twice"):
        make_experiment(base(methods=["vanilla", "vanilla"]))


def test_plan_grid_and_sweeps():
    cfg = make_experiment(base(seeds=[0, 1], sweeps={"m": [2, 6, 12]},
                               methods=["vanilla", {"name": "lookahead-real", "m": 6}, "lookahead-virtual"]))
    cells = plan_cells(cfg)
    ids = [c.cell_id for c in cells]
    assert len(ids) == len(set(ids))
    # 1 seed cell + 2 seeds x 3 methods table cells + 2 seeds x 2 extra m points (6 is the table cell)
    assert len(cells) == 1 + 6 + 4
    assert ids[0] == "math--seed"
    assert "math--lookahead-real--m12--seed1" in ids
    assert "math--lookahead-real--m6--seed0" not in ids
    m12 = next(c for c in cells if c.cell_id == "math--lookahead-real--m12--seed1")
    assert m12.train["m"] == 12 and m12.train["seed"] == 1 and m12.row_name == "lookahead-real@m=12"
    assert sweep_values(cfg, "lookahead-real", "m") == [2, 6, 12]
    # table rows come before the sweep points, so a short run fills the main table first
    assert all(not c.sweep for c in cells[:7])


def test_fingerprint_tracks_settings():
    a = plan_cells(make_experiment(base()))[1]
    b = plan_cells(make_experiment(base(train={"lr": 1e-3})))[1]
    c = plan_cells(make_experiment(base(eval={"max_new_tokens": 9})))[1]
    assert a.cell_id == b.cell_id
    cfg = make_experiment(base())
    assert a.fingerprint(cfg) != b.fingerprint(make_experiment(base(train={"lr": 1e-3})))
    assert a.fingerprint(cfg) != c.fingerprint(make_experiment(base(eval={"max_new_tokens": 9})))


def test_fingerprint_tracks_the_alignment_data(monkeypatch):
    """Two configs that both say `align: {base: X}` but align on different data (or settings) are
    different seeds; their cells must not pass as each other's."""
    from lookahead_tuning.data import builtin

    spec = {"align": {"base": "smollm2-135m-instruct"}}
    cfg = make_experiment(base(model=spec))
    cell = plan_cells(cfg)[1]
    before = cell.fingerprint(cfg)
    old_data = make_experiment(base(model={"align": {**spec["align"], "template_matched": False}}))
    assert cell.fingerprint(old_data) != before
    from lookahead_tuning.experiment import align

    spelled_out = make_experiment(base(model={"align": {**spec["align"], "lr": align.DEFAULTS["lr"],
                                                        "harm_adjacent": align.HARM_ADJACENT}}))
    assert cell.fingerprint(spelled_out) == before  # pinning a default names the same seed
    real = builtin.alignment_set
    monkeypatch.setattr(builtin, "alignment_set", lambda: real()[:-1])  # one row less
    assert cell.fingerprint(cfg) != before


def test_layers_override_in_order():
    cfg = make_experiment(base(train={"lr": 1e-4, "m": 3}, tasks=[{"name": "math", "n_train": 20,
                                                                    "train_overrides": {"lr": 2e-4}}],
                               methods=[{"name": "lookahead-real", "m": 9}]))
    cell = plan_cells(cfg)[1]
    assert cell.train["lr"] == 2e-4 and cell.train["m"] == 9 and cell.train["limit"] == 20


def test_data_dir_substitution():
    cfg = make_experiment(base(data_dir="/d", tasks=[{"name": "gsm8k", "train": "{data_dir}/g/train.jsonl",
                                                      "test": "{data_dir}/g"}]))
    assert cfg.tasks[0].train == "/d/g/train.jsonl" and cfg.tasks[0].test == "/d/g"


SHIPPED = sorted(p.name for p in (ROOT / "src" / "lookahead_tuning" / "configs").glob("*.yaml"))
STUDY = sorted(p.name for p in (ROOT / "study").glob("*.yaml"))


def test_every_shipped_config_is_linked_and_tested():
    """The package ships only the configs its code reads (the demo's) and the paper's recipe; the study's
    configs live in the checkout's study/ folder, next to their cells."""
    assert SHIPPED == ["demo-quick.yaml", "demo.yaml", "paper-llama2-7b.yaml"]
    assert sorted(p.name for p in (ROOT / "configs").glob("*.yaml")) == SHIPPED
    assert {"study.yaml", "seedA.yaml", "m-sweep.yaml", "prefix-sweep.yaml", "seedD-lr5e-5.yaml",
            "table1.yaml"} <= set(STUDY)


@pytest.mark.parametrize("path", [shipped_config(n) for n in SHIPPED] + [ROOT / "study" / n for n in STUDY],
                         ids=lambda p: p.name)
def test_committed_study_cells_match_their_config(path):
    """A committed cell whose fingerprint no longer matches its config would stop a rerun with an
    error (or, worse, would have been computed under other settings): the study must stay resumable."""
    import json

    cfg = load_experiment(path)
    if not cfg.cells_dir:
        pytest.skip("no committed cells")
    folder = ROOT / cfg.cells_dir
    if not folder.is_dir():
        pytest.skip("no cell committed yet")  # a planned part of the study that has not run
    checked = 0
    for cell in plan_cells(cfg):
        path = folder / f"{cell.cell_id}.json"
        if path.is_file():
            assert json.loads(path.read_text())["fingerprint"] == cell.fingerprint(cfg), path
            checked += 1
    assert checked, f"{folder} holds none of this config's cells"


def test_demo_cells_are_the_studys_seed0_cells():
    """The demo is the study's seed-0 run: each demo cell trains and answers exactly as the seed-0 cell
    of study/table1.yaml (same fingerprint), so the README's table is one of the study's runs; and
    ``demo --full``'s dialogue cells are the seed-0 cells of study/table1-dialogue.yaml. The one
    exception is Constrained SFT, whose frozen reference the demo runs in the training precision (the
    default since the study's cells ran it in fp32): with that one setting changed the cells coincide."""
    def seed0(path, **train):
        study = load_experiment(path)
        study = study.model_copy(update={"train": {**study.train, **train}})
        return {c.cell_id: c.fingerprint(study) for c in plan_cells(study) if c.seed in (None, 0)}

    demo = load_experiment(shipped_config("demo.yaml"))
    assert (demo.eval.judge, demo.eval.scorer, demo.eval.overrefusal) == ("keyword-reference", "reference", True)
    ours = {c.cell_id: c.fingerprint(demo) for c in plan_cells(demo)}
    table1, dialogue = ROOT / "study" / "table1.yaml", ROOT / "study" / "table1-dialogue.yaml"
    assert len(ours) == 6 and ours == seed0(table1, reference_precision="training")
    study = seed0(table1)
    assert {k for k in ours if ours[k] != study[k]} == {"math--constrained-sft--seed0"}
    full = demo_config(full=True)
    both = {c.cell_id: c.fingerprint(full) for c in plan_cells(full)}
    assert both == {**seed0(table1, reference_precision="training"),
                    **seed0(dialogue, reference_precision="training")}


def test_reference_precision_enters_fingerprints_only_where_a_frozen_reference_runs():
    """The key decides numbers only for the constrained loss with full fine-tuning; there the committed
    cells' fp32 keeps their fingerprints and the new default changes them. Elsewhere it is left out."""
    from lookahead_tuning.train.config import train_identity

    def ident(**train):
        return train_identity({"method": "vanilla", "seed": 0, **train})

    assert ident() == ident(reference_precision="fp32") == ident(reference_precision="training")
    assert "reference_precision" not in ident(method="constrained-sft", reference_precision="fp32")
    assert ident(method="constrained-sft")["reference_precision"] == "training"
    assert ident(method="lookahead-virtual", loss="constrained")["reference_precision"] == "training"
    assert "reference_precision" not in ident(method="constrained-sft", lora=True)


@pytest.mark.parametrize("replicate, original", [("table1-b.yaml", "table1.yaml"),
                                                 ("table1-more-b.yaml", "table1-more.yaml")])
def test_replicate_configs_plan_the_same_cells_in_their_own_folder(replicate, original):
    """A replicate (findings 9.3: the same plan on the second realization of seed D) is pre-registered
    as the same cells under the same fingerprints; only where the cells go may differ. A replicate
    that drifted from its original would pool cells of two plans under one table's name."""
    rep, orig = load_experiment(ROOT / "study" / replicate), load_experiment(ROOT / "study" / original)
    assert ({c.cell_id: c.fingerprint(rep) for c in plan_cells(rep)}
            == {c.cell_id: c.fingerprint(orig) for c in plan_cells(orig)})
    assert rep.cells_dir != orig.cells_dir and rep.output != orig.output


def test_the_csft_precision_amendment_shares_its_comparison_cells():
    """study/table1-csft-b.yaml (findings 9.8) differs from table1-b/table1-more-b only in the frozen
    reference's precision: its vanilla and seed cells are table1-b's (same fingerprints, copied), its
    Constrained SFT cells are new ones, and its seed-0 Constrained SFT cell is the demo's."""
    def prints(name):
        cfg = load_experiment(ROOT / "study" / name)
        return {c.cell_id: c.fingerprint(cfg) for c in plan_cells(cfg)}

    new, b, more = prints("table1-csft-b.yaml"), prints("table1-b.yaml"), prints("table1-more-b.yaml")
    demo = load_experiment(shipped_config("demo.yaml"))
    assert {k: v for k, v in new.items() if "vanilla" in k or k == "math--seed"} == {
        k: v for k, v in b.items() if "vanilla" in k or k == "math--seed"}
    constrained = [k for k in new if "constrained" in k]
    assert len(constrained) == 9 and not any(new[k] in (b.get(k), more.get(k)) for k in constrained)
    assert new["math--constrained-sft--seed0"] == {c.cell_id: c.fingerprint(demo)
                                                   for c in plan_cells(demo)}["math--constrained-sft--seed0"]


def test_new_eval_keys_keep_old_fingerprints_only_at_the_old_value():
    """``scorer`` was added after cells were committed: ``numeric`` (what the runner used before) leaves
    the fingerprint as it was; ``reference`` changes it. A judge template enters by its content."""
    import hashlib
    import json

    cfg = load_experiment(ROOT / "study" / "seedD-lr5e-5.yaml")
    cell = plan_cells(cfg)[1]
    from lookahead_tuning.train.config import train_identity

    # the EvalSpec the cells were made with (neither scorer, generation nor prefill_depths existed then)
    old_eval = {k: v for k, v in cfg.eval.model_dump().items() if k not in ("scorer", "generation", "prefill_depths")}
    task = next(t for t in cfg.tasks if t.name == cell.task)
    blob = {"seed_model": cfg.model.identity(), "task": task.model_dump(), "method": cell.method,
            "seed": cell.seed, "train": train_identity(cell.train), "eval": old_eval}
    old = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cell.fingerprint(cfg) == old
    ref = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"scorer": "reference"})})
    assert cell.fingerprint(ref) != old


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_validate(name):
    cfg = load_experiment(shipped_config(name))
    assert plan_cells(cfg)
    link = ROOT / "configs" / name
    assert link.resolve() == shipped_config(name).resolve()


def test_demo_options():
    plain = demo_config()
    assert [m.name for m in plain.methods] == ["vanilla", "sdft", "constrained-sft", "lookahead-real",
                                               "lookahead-virtual"]  # the paper's Table 1 rows
    assert plain.method("lookahead-real").overrides["m"] == 6
    full = demo_config(full=True)
    assert [t.kind or t.name for t in full.tasks] == ["math", "dialogue"] and full.methods == plain.methods
    quick = demo_config(quick=True)
    assert quick.tasks[0].n_train < plain.tasks[0].n_train
    g = demo_config(gsm8k_dir="/data/gsm8k")
    assert g.tasks[0].kind == "gsm8k" and g.tasks[0].train == "/data/gsm8k/train.jsonl"


def test_paper_config_matches_the_paper():
    cfg = load_experiment(shipped_config("paper-llama2-7b.yaml"))
    assert cfg.model.seed == "meta-llama/Llama-2-7b-chat-hf"
    t = cfg.train
    assert t["lr"] == 2e-5 and t["epochs"] == 3 and t["warmup_ratio"] == 0 and t["bf16"] == "on"
    assert t["lora"] is False
    assert t["batch_size"] * t.get("grad_accum", 1) * cfg.launcher.num_processes == 64
    assert cfg.launcher.accelerate_config == "configs/accelerate/deepspeed_zero2.yaml"
    samsum = next(x for x in cfg.tasks if x.name == "samsum")
    assert samsum.train_overrides["max_length"] == 1024
    assert {m.name for m in cfg.methods} >= {"vanilla", "lookahead-real", "lookahead-virtual"}


def _no_weights(monkeypatch):
    import lookahead_tuning.models as models

    def refuse(*a, **k):
        raise AssertionError("the dry run must not load weights")

    monkeypatch.setattr(models, "load_model", refuse)


def test_paper_dry_run_without_data(monkeypatch, tmp_path, capsys):
    from lookahead_tuning.cli import main

    _no_weights(monkeypatch)
    rc = main(["run", str(shipped_config("paper-llama2-7b.yaml")), "--dry-run", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "12 cells" in out
    assert "train rows unknown" in out and "test rows unknown" in out
    assert "ESTIMATE" in out
    assert "accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 4" in out


def test_paper_dry_run_with_real_data(monkeypatch, shared_data):
    from lookahead_tuning.experiment.dryrun import dry_run

    _no_weights(monkeypatch)
    cfg = load_experiment(shipped_config("paper-llama2-7b.yaml"), {"data_dir": str(shared_data)})
    plan = dry_run(cfg)
    gsm = plan["tasks"]["gsm8k"]
    assert gsm["train_rows"] == 7473 and gsm["test_rows"] == 1319
    assert plan["tokens_exact"] is False
    vanilla = next(c for c in plan["cells"] if c["cell_id"] == "gsm8k--vanilla--seed0")
    real = next(c for c in plan["cells"] if c["cell_id"] == "gsm8k--lookahead-real--seed0")
    # the real preview adds the connector and m answer tokens to every prompt
    assert real["tokens_per_epoch"] > vanilla["tokens_per_epoch"]
    assert vanilla["train_flops"] == pytest.approx(6 * 6.74e9 * vanilla["tokens_per_epoch"] * 3)
    assert plan["gpu_hours"] == pytest.approx(plan["train_flops"] / (150e12 * 3600))


def test_cli_bad_config_exits_2(tmp_path, capsys):
    from lookahead_tuning.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base(seeds=[0], methodz=["vanilla"])))
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {path}: unknown key 'methodz'"


@pytest.mark.parametrize("path", [shipped_config("demo.yaml"), ROOT / "study" / "study.yaml",
                                  shipped_config("paper-llama2-7b.yaml")], ids=lambda p: p.name)
def test_config_as_run_reloads_to_the_same_cells(path):
    # results.json says "rerun with the config.yaml of the run folder": it must plan the same cells
    # with the same fingerprints, or the rerun would redo finished work.
    cfg = load_experiment(path)
    again = make_experiment(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
    assert [(c.cell_id, c.fingerprint(cfg)) for c in plan_cells(cfg)] == \
        [(c.cell_id, c.fingerprint(again)) for c in plan_cells(again)]


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "", ".hidden", "-rf"])
def test_the_experiment_name_cannot_leave_the_runs_folder(name):
    """The default run folder is runs/<name>-<timestamp>: a name with a path in it is refused."""
    with pytest.raises(UserError, match="experiment name"):
        make_experiment(base(name=name))


def test_an_empty_seed_model_is_refused():
    with pytest.raises(UserError, match="model.seed"):
        make_experiment(base(model={"seed": ""}))


def test_a_sweep_of_a_method_not_in_the_grid_is_refused():
    """sweeps.m adds cells of lookahead-real only: without that method it would add none, silently."""
    with pytest.raises(UserError, match="sweeps.m sweeps lookahead-real"):
        make_experiment(base(methods=["vanilla"], sweeps={"m": [3, 4]}))
    with pytest.raises(UserError, match="sweeps.prefix sweeps lookahead-virtual"):
        make_experiment(base(methods=["vanilla"], sweeps={"prefix": ["Sure. "]}))
    assert make_experiment(base(methods=["lookahead-real"], sweeps={"m": [3]})).sweeps.m == [3]
