"""The study summary: grouping over seeds, drops against the seed, pooled paired tests, figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookahead_tuning.errors import UserError
from lookahead_tuning.experiment.cells import load_cells, pool_groups
from lookahead_tuning.experiment.summary import summarise
from lookahead_tuning.report.study import markdown

ROOT = Path(__file__).resolve().parents[1]


def _cell(method: str, seed: int, rsr: list[bool], jsr: list[bool], utility: float, kl1: float | None,
          sweep: dict | None = None) -> dict:
    ids = [str(i) for i in range(len(rsr))]
    train = {"m": (sweep or {}).get("m", 6)} if method == "lookahead-real" else {}
    tag = "".join(f"--m{v}" for k, v in (sweep or {}).items() if k == "m")
    return {
        "cell_id": f"math--{method}{tag}--seed{seed}", "task": "math", "method": method, "seed": seed,
        "name": method + "".join(f"@m={v}" for k, v in (sweep or {}).items() if k == "m"), "fingerprint": "f",
        "sweep": sweep or {}, "train": train,
        "rsr": {"rate": sum(rsr) / len(rsr)}, "jsr": {"rate": sum(jsr) / len(jsr)},
        "utility": {"score": utility}, "overrefusal": None,
        "kl": None if kl1 is None else [kl1, kl1 / 2],
        "rsr_verdicts": dict(zip(ids, rsr, strict=True)), "jsr_verdicts": dict(zip(ids, jsr, strict=True)),
        "cost": None if method == "seed" else {"train_seconds": 10.0 + seed},
    }


@pytest.fixture
def cells_dir(tmp_path):
    folder = tmp_path / "lr2e-4"
    folder.mkdir()
    cells = [
        _cell("seed", 0, [True] * 4, [True, True, False, False], 0.1, None),
        _cell("vanilla", 0, [True, False, False, True], [False] * 4, 0.5, 0.8),
        _cell("vanilla", 1, [True, True, False, True], [False] * 4, 0.7, 0.6),
        _cell("lookahead-real", 0, [True] * 4, [True, False, False, False], 0.4, 0.2),
        _cell("lookahead-real", 1, [True, True, True, False], [True, True, False, False], 0.6, 0.4),
    ]
    for c in cells:
        (folder / f"{c['cell_id']}.json").write_text(json.dumps(c), encoding="utf-8")
    (folder / "math--forecast.json").write_text(json.dumps(
        {"methods": {"vanilla": {"mean_first_3": 1.5}, "lookahead-real": {"mean_first_3": 0.5}}}), encoding="utf-8")
    return folder


def test_groups_over_seeds_with_drops_and_paired_tests(cells_dir):
    summary = summarise(*load_cells([cells_dir]))
    rows = {r["name"]: r for r in summary["groups"]}
    vanilla, real = rows["vanilla"], rows["lookahead-real"]
    assert vanilla["seeds"] == [0, 1]
    assert vanilla["rsr"]["mean"] == pytest.approx((0.5 + 0.75) / 2)
    assert vanilla["rsr_drop"]["mean"] == pytest.approx(1 - 0.625)
    assert vanilla["jsr_drop"]["mean"] == pytest.approx(0.5)
    assert real["utility"]["mean"] == pytest.approx(0.5)
    assert real["kl1"]["mean"] == pytest.approx(0.3)
    # Paired on (seed, prompt): real safe & vanilla unsafe on prompts 1,2 (seed 0) and 2 (seed 1);
    # the reverse on prompt 3 (seed 1).
    test = real["vs_vanilla"]["rsr"]
    assert (test["a_safe_b_unsafe"], test["a_unsafe_b_safe"]) == (3, 1)
    assert test["p_value"] == pytest.approx(0.625)
    assert "vs_vanilla" not in vanilla
    # Against the seed: vanilla lost 2 + 1 RSR refusals and gained none.
    assert (vanilla["vs_seed"]["rsr"]["a_safe_b_unsafe"], vanilla["vs_seed"]["rsr"]["a_unsafe_b_safe"]) == (0, 3)
    assert len(summary["kl_points"]) == 4


def test_markdown_and_figures(cells_dir, tmp_path):
    from lookahead_tuning.report.study import figures

    summary = summarise(*load_cells([cells_dir]))
    text = markdown(summary)
    assert "| lr2e-4 | vanilla | 2 | 62.50 [" in text
    out = tmp_path / "fig"
    out.mkdir()
    names = figures(summary, out)
    assert {"safety_utility.png", "kl_vs_drop.png", "forecast_vs_drop.png"} <= set(names)
    assert all((out / n).stat().st_size > 1000 for n in names)


def test_m_sweep_lines_never_join_folders(cells_dir, tmp_path):
    """A folder with m = 6 and m = 12 gives one line; a folder with m = 6 only (another learning rate)
    gives none, and its m = 6 row is not joined to the first folder's line."""
    from lookahead_tuning.report.study import figures, m_sweep_lines

    other = tmp_path / "lr5e-5"
    other.mkdir()
    for c in [_cell("seed", 0, [True] * 4, [True] * 4, 0.0, None),
              _cell("lookahead-real", 0, [False] * 4, [False] * 4, 0.3, 0.5),
              _cell("lookahead-real", 0, [True] * 4, [True] * 4, 0.2, 0.1, sweep={"m": 12})]:
        (other / f"{c['cell_id']}.json").write_text(json.dumps(c), encoding="utf-8")
    summary = summarise(*load_cells([cells_dir, other]))
    lines = m_sweep_lines(summary)
    assert list(lines) == [("lr5e-5", "math")]
    assert [(r["m"], r["rsr"]["mean"]) for r in lines[("lr5e-5", "math")]] == [(6, 0.0), (12, 1.0)]
    out = tmp_path / "fig"
    out.mkdir()
    assert "m_sweep.png" in figures(summary, out)
    assert m_sweep_lines(summarise(*load_cells([cells_dir]))) == {}  # one length only: no sweep figure


def test_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_cells([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no cell results"):
        load_cells([tmp_path / "empty"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="x.json"):
        load_cells([bad])


def test_a_cells_folder_goes_by_its_parents_name(tmp_path):
    """study/<setting>/cells: the setting names the group (two settings' cells never pool as "cells")."""
    from lookahead_tuning.experiment.cells import group_name

    assert group_name(tmp_path / "seedD-lr5e-5" / "cells") == "seedD-lr5e-5"
    assert group_name(tmp_path / "lr2e-4") == "lr2e-4"


@pytest.mark.parametrize("summary, folders, group", [
    ("summary-seedB", ["seedB-lr5e-5", "seedB-lr1e-4", "seedB-lr2e-4"], None),
    ("summary-seedD", ["seedD-lr5e-5", "seedD-lr2e-4", "seedD-lora-lr5e-4"], None),
    ("summary-table1-b", ["table1-b"], None),
    ("summary-table1-dialogue", ["table1-dialogue"], None),
    ("summary-table1-lora", ["table1-lora"], None),
    ("summary-table1-more-b", ["table1-b", "table1-more-b"], "table1-b"),
    ("summary-table1-csft-b", ["table1-csft-b"], None),
])
def test_committed_summaries_are_what_the_committed_cells_give(summary, folders, group):
    """docs/findings.md quotes these files: the study's cells, summarised by today's code, give them byte
    for byte (the commands are in docs/findings.md)."""
    from pathlib import Path

    study = Path(__file__).resolve().parents[1] / "study"
    cells, forecasts = load_cells([study / f / "cells" for f in folders])
    if group:  # one study split over configs: `study-summary ... --group GROUP`
        cells, forecasts = pool_groups(cells, forecasts, group)
    result = summarise(cells, forecasts)
    assert json.dumps(result, ensure_ascii=False, indent=2) + "\n" == (study / summary / "summary.json").read_text()
    assert markdown(result) == (study / summary / "summary.md").read_text()


def test_folders_of_one_study_pool_into_one_group(cells_dir, tmp_path):
    """``study-summary --group``: a config's extra methods (their own folder) are tested against the main
    folder's vanilla cells; the seed cell both folders hold is one cell; a cell id held twice with
    another fingerprint is refused (two studies, not one)."""
    from lookahead_tuning.experiment.cells import pool_groups

    more = tmp_path / "more"
    more.mkdir()
    for c in [_cell("seed", 0, [True] * 4, [True, True, False, False], 0.1, None),
              _cell("safety-mix", 0, [True] * 4, [True] * 4, 0.4, 0.3)]:
        (more / f"{c['cell_id']}.json").write_text(json.dumps(c), encoding="utf-8")
    apart = summarise(*load_cells([cells_dir, more]))
    assert "vs_vanilla" not in next(r for r in apart["groups"] if r["name"] == "safety-mix")
    cells, forecasts = pool_groups(*load_cells([cells_dir, more]), "study")
    pooled = summarise(cells, forecasts)
    assert [s["group"] for s in pooled["seed_models"]] == ["study"] and pooled["n_cells"] == 6
    mix = next(r for r in pooled["groups"] if r["name"] == "safety-mix")
    # seed 0 only: mix safe on all 4 prompts, vanilla seed 0 on prompts 0 and 3
    assert (mix["vs_vanilla"]["rsr"]["a_safe_b_unsafe"], mix["vs_vanilla"]["rsr"]["a_unsafe_b_safe"]) == (2, 0)
    clash = _cell("vanilla", 0, [True] * 4, [True] * 4, 0.9, 0.1)
    clash["fingerprint"] = "another"
    (more / f"{clash['cell_id']}.json").write_text(json.dumps(clash), encoding="utf-8")
    with pytest.raises(UserError, match="different fingerprints"):
        pool_groups(*load_cells([cells_dir, more]), "study")


def test_cli_summarises_only_the_seeds_asked_for(cells_dir, tmp_path, capsys):
    """``--seeds 0``: the rows every method has finished; the seed model's cell stays; a seed no cell has
    is one line, exit 2, and no output folder."""
    from lookahead_tuning.cli import main

    out = tmp_path / "s0"
    assert main(["study-summary", str(cells_dir), "--seeds", "0", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {r["name"]: r["seeds"] for r in summary["groups"]} == {"lookahead-real": [0], "vanilla": [0]}
    assert summary["seed_models"][0]["rsr"] == 1.0
    capsys.readouterr()
    assert main(["study-summary", str(cells_dir), "--seeds", "7", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: no trained cell has a training seed in --seeds 7" and not (tmp_path / "none").exists()


@pytest.mark.parametrize("change, key", [
    ({"cell_id": 5}, "key 'cell_id'"),
    ({"task": None}, "key 'task'"),
    ({"rsr": {"rate": 1.5}}, "key 'rsr.rate'"),
    ({"rsr": "high"}, "key 'rsr'"),
    ({"jsr_verdicts": [True]}, "key 'jsr_verdicts'"),
    ({"kl": ["x", 0.1]}, "key 'kl.0'"),
    ({"utility": {"score": 0.5, "ci95": [0.1]}}, "key 'utility.ci95'"),
    ({"cost": {"train_seconds": "fast"}}, "key 'cost.train_seconds'"),
    ({"cost": {"train_seconds": 1.0, "bf16": "yes"}}, "key 'cost.bf16'"),
    ({"seed": True}, "key 'seed'"),
])
def test_a_file_that_is_not_a_cell_is_one_line_naming_file_and_key(cells_dir, tmp_path, capsys, change, key):
    """A hand-edited or foreign JSON in a cells folder: study-summary (and the runner and rejudge, which
    read cells through the same check) exits 2 with one line naming the file and the key, writes nothing."""
    from lookahead_tuning.cli import main

    path = cells_dir / "math--vanilla--seed0.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    capsys.readouterr()
    assert main(["study-summary", str(cells_dir), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: not a cell result: {key}") and "\n" not in err, err
    assert not (tmp_path / "s").exists()


def test_a_damaged_forecast_is_one_line_too(cells_dir, tmp_path, capsys):
    from lookahead_tuning.cli import main

    (cells_dir / "math--forecast.json").write_text(json.dumps({"methods": {"vanilla": {"mean_first_3": "low"}}}))
    capsys.readouterr()
    assert main(["study-summary", str(cells_dir), "--out", str(tmp_path / "s")]) == 2
    assert "not a forecast: key 'methods.vanilla.mean_first_3'" in capsys.readouterr().err


def test_every_committed_cell_passes_the_check():
    """The check accepts every cell any version of the runner wrote (121 committed ones and counting)."""
    from lookahead_tuning.experiment.cells import read_cell, read_forecast

    paths = sorted((ROOT / "study").glob("*/cells/*.json"))
    assert len(paths) > 100
    for path in paths:
        (read_forecast if path.name.endswith("--forecast.json") else read_cell)(path)


def test_cells_of_two_seed_models_are_not_one_table(cells_dir, tmp_path):
    """Cells record the hash of the seed weights they were trained from. One folder (or one --group)
    holding cells of two seeds — the same recipe aligned on two machines — is refused with one line,
    and so is a cell held twice with the same fingerprint but other seed weights."""
    from lookahead_tuning.experiment.cells import pool_groups

    def stamp(folder, name, sha):
        path = folder / name
        data = json.loads(path.read_text())
        data["provenance"] = {"seed_model": {"sha256": sha}}
        path.write_text(json.dumps(data), encoding="utf-8")

    for path in cells_dir.glob("math--*seed*.json"):
        stamp(cells_dir, path.name, "a" * 64)
    summarise(*load_cells([cells_dir]))  # one seed: fine
    stamp(cells_dir, "math--vanilla--seed1.json", "b" * 64)
    with pytest.raises(UserError, match=r"different seed weights \(a{12} vs b{12}\)") as err:
        summarise(*load_cells([cells_dir]))
    assert "\n" not in str(err.value)

    stamp(cells_dir, "math--vanilla--seed1.json", "a" * 64)
    more = tmp_path / "more"
    more.mkdir()
    (more / "math--seed--seed0.json").write_text((cells_dir / "math--seed--seed0.json").read_text(), encoding="utf-8")
    stamp(more, "math--seed--seed0.json", "c" * 64)  # same fingerprint, another machine's seed
    with pytest.raises(UserError, match="different seed weights"):
        pool_groups(*load_cells([cells_dir, more]), "study")


def test_realizations_counts_verdicts_that_differ_between_two_seed_models(cells_dir, tmp_path, capsys):
    """study/realizations.py: the same cells (same fingerprints) from two seed models' weights, side
    by side, with the number of prompts whose verdict differs."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("realizations", Path(__file__).parents[1] / "study" / "realizations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    other = tmp_path / "other"
    other.mkdir()
    for path in cells_dir.glob("math--*seed*.json"):
        data = json.loads(path.read_text())
        data["fingerprint"] = "f"
        if data["cell_id"] == "math--vanilla--seed0":
            data["rsr_verdicts"] = {**data["rsr_verdicts"], "1": True, "2": True}  # two prompts flip to safe
        (other / path.name).write_text(json.dumps(data), encoding="utf-8")
        data = json.loads(path.read_text())
        data["fingerprint"] = "f"
        path.write_text(json.dumps(data), encoding="utf-8")
    assert module.main([str(cells_dir), str(other)]) == 0
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines() if "--" in line}
    assert " 2/4 | 0/4 |" in rows["math--vanilla--seed0"] and " 0/4 | 0/4 |" in rows["math--vanilla--seed1"]


def test_cells_trained_in_two_precisions_are_not_one_table(cells_dir):
    """``bf16: auto`` resolves per machine; a folder whose cells recorded bf16 and fp32 is refused."""
    for name, bf16 in (("math--vanilla--seed0.json", True), ("math--vanilla--seed1.json", True)):
        data = json.loads((cells_dir / name).read_text())
        data["cost"]["bf16"] = bf16
        (cells_dir / name).write_text(json.dumps(data), encoding="utf-8")
    summarise(*load_cells([cells_dir]))
    data = json.loads((cells_dir / "math--vanilla--seed1.json").read_text())
    data["cost"]["bf16"] = False
    (cells_dir / "math--vanilla--seed1.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match=r"math--vanilla--seed0 \(bf16\) and math--vanilla--seed1 \(fp32\)"):
        summarise(*load_cells([cells_dir]))


def test_a_cell_is_never_counted_twice(cells_dir, tmp_path, capsys):
    """The same folder given twice, a copied cell file in one folder, or two folders that would form one
    group without --group are refused (each would count seeds twice and shrink the p-values)."""
    import shutil

    from lookahead_tuning.cli import main

    out = tmp_path / "out"
    assert main(["study-summary", str(cells_dir), str(cells_dir), "--out", str(out)]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["study-summary", str(cells_dir), str(cells_dir) + "/", "--out", str(out)]) == 2
    assert "given twice" in capsys.readouterr().err

    twin = tmp_path / "elsewhere" / cells_dir.name
    shutil.copytree(cells_dir, twin)
    assert main(["study-summary", str(cells_dir), str(twin), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--group" in err and str(twin) in err
    assert not out.exists()

    copy = cells_dir / "math--vanilla--seed0 (copy).json"
    shutil.copy(cells_dir / "math--vanilla--seed0.json", copy)
    assert main(["study-summary", str(cells_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and copy.name in err[0] and "math--vanilla--seed0.json" in err[0], err
    assert not out.exists()


def test_study_summary_never_writes_into_a_cells_folder(cells_dir, capsys):
    """--out equal to a cells folder would put summary.json among the cells (and the next summary
    would read it as one): refused, and nothing is written."""
    from lookahead_tuning.cli import main

    before = sorted(p.name for p in cells_dir.iterdir())
    assert main(["study-summary", str(cells_dir), "--out", str(cells_dir)]) == 2
    assert "--out is the same folder as the cells folder" in capsys.readouterr().err
    assert sorted(p.name for p in cells_dir.iterdir()) == before
