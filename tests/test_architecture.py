"""The house rules a refactor must keep: citations inside the repository, every stage's verbs registered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_stage_module_fails_loudly(monkeypatch):
    from lookahead_tuning import cli

    monkeypatch.setattr(cli, "STAGES", [*cli.STAGES, "lookahead_tuning.no_such_stage"])
    with pytest.raises(ModuleNotFoundError, match="no_such_stage"):
        cli.build_parser()


def _text_files():
    for folder in ("src", "docs", "tests", "scripts", "benchmarks", "study", "configs"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".md", ".yaml", ".toml"}:
                yield path
    yield ROOT / "README.md"


def test_citations_point_inside_the_repository():
    """The method is cited as docs/method.md (sections 2-5); no file outside the checkout is named."""
    outside = re.compile("METHOD" + r"\.md")  # spelled apart so this file does not match itself
    offenders = [str(p.relative_to(ROOT)) for p in _text_files() if outside.search(p.read_text(errors="replace"))]
    assert offenders == []
    method = (ROOT / "docs" / "method.md").read_text()
    for section in ("## 2. LookAhead", "## 3. The methods", "## 4. The measurements", "## 5. The paper"):
        assert section in method


def test_the_report_speaks_of_the_users_run():
    from lookahead_tuning.report.writer import render_report

    text = render_report({"name": "x", "models": {}, "tasks": [{"name": "math", "kind": "math"}]})
    assert "issue" not in text.lower()


def _package_data_globs() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lookahead_tuning"]


def test_the_wheel_ships_only_what_the_code_reads():
    """Every package-data glob matches a file, every non-Python file in the package is shipped by one, and
    none of them is a study file (the study lives in the checkout's study/ folder)."""
    package = ROOT / "src" / "lookahead_tuning"
    globs = _package_data_globs()
    matched = {p for g in globs for p in package.glob(g)}
    assert all(list(package.glob(g)) for g in globs), [g for g in globs if not list(package.glob(g))]
    data = {p for p in package.rglob("*") if p.is_file() and p.suffix not in {".py", ".pyc"}}
    assert data == matched
    assert sorted(p.name for p in matched if p.parent.name == "configs") == [
        "demo-quick.yaml", "demo.yaml", "paper-llama2-7b.yaml"]
    assert not any("study" in p.name for p in matched)


def test_every_committed_cells_folder_belongs_to_a_study_config():
    """Cells under study/ are resumable only through a config that names their folder."""
    from lookahead_tuning.experiment.config import load_experiment

    named = {load_experiment(p).cells_dir for p in (ROOT / "study").glob("*.yaml")}
    folders = {str(p.relative_to(ROOT)) for p in (ROOT / "study").glob("*/cells")}
    assert folders and folders <= named
    assert not (ROOT / "docs" / "study").exists()


def _commands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def test_every_command_that_loads_a_model_has_the_shared_model_switches():
    """``--model`` comes from ``models.add_model_arguments`` wherever a command loads the model itself.
    ``train`` and ``align`` take the model as a training setting (a YAML key of the config / the base of
    the seed's cache key), which the shared switches are not part of."""
    from lookahead_tuning.cli import build_parser

    shared = {"--allow-pickle", "--trust-remote-code", "--merge-adapter"}
    seen = []
    for path, sub in _commands(build_parser()):
        options = {o for a in sub._actions for o in a.option_strings}
        if "--model" in options and path not in {("train",), ("align",)}:
            seen.append(" ".join(path))
            assert shared <= options, path
    assert {"generate", "eval safety", "eval utility", "eval overrefusal", "forecast"} <= set(seen)


def test_verbs_live_in_their_stages_cli_module():
    from lookahead_tuning.cli import STAGES, build_parser

    assert all(name.endswith(".cli") for name in STAGES)
    owner = {path[0]: sub._defaults["func"].__module__ for path, sub in _commands(build_parser())
             if len(path) == 1 and "func" in sub._defaults}
    assert owner["report"] == "lookahead_tuning.report.cli"
    # study-summary aggregates cell files (experiment's CellResult) before report/ renders them
    assert owner["align"] == owner["run"] == owner["study-summary"] == "lookahead_tuning.experiment.cli"
    assert owner["train"] == "lookahead_tuning.train.cli"


# The house, bottom floor first. A module may import its own floor and the floors below it, never one above
# (function-level imports included). generate stands below train because SDFT's rewrite generates; analyse
# above train because the forecast builds each method's training data; report renders what experiment
# computed. The package root only holds the lazy public API and the version (provenance records it).
LAYERS = [
    {"__init__"},
    {"redact", "markup"}, {"errors"}, {"validate", "chat", "methods", "endpoint"}, {"io"}, {"models"}, {"provenance"},
    {"data"}, {"preview"}, {"generate"}, {"judge"}, {"train"}, {"analyse"}, {"report"}, {"experiment"},
    {"cli", "__main__"},
]


def _imports(path: Path, module: str) -> set[str]:
    import ast

    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target if node.module else f"{target}.{node.names[0].name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {t for t in found if t == "lookahead_tuning" or t.startswith("lookahead_tuning.")}


def _floor(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top == "__version__":
        top = "__init__"
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_the_import_graph_has_no_arrow_running_back_up():
    package = ROOT / "src" / "lookahead_tuning"
    upward = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for target in _imports(path, module):
            if _floor(target) > _floor(module):
                upward.append(f"{module} -> {target}")
    assert upward == []
    assert _floor("lookahead_tuning.report.writer") < _floor("lookahead_tuning.experiment.runner")


def test_the_layer_walk_sees_a_function_level_import_up():
    """The check itself: a function-level ``from ..experiment import x`` inside report/ is caught."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tables.py"
        path.write_text("def f():\n    from ..experiment.config import sweep_values\n    return sweep_values\n")
        targets = _imports(path, "lookahead_tuning.report.tables")
    assert targets == {"lookahead_tuning.experiment.config"}
    assert _floor("lookahead_tuning.experiment.config") > _floor("lookahead_tuning.report.tables")
