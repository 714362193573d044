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
