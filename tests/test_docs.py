"""The docs name what exists: every module, file, function and constant written in backticks in docs/ and the
README is in the checkout (a removed function such as ``benign_pairs`` fails here), and every developer
script is listed in docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
import errno
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lookahead_tuning"
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# Names in backticks that belong to something outside the checkout, each with what it is.
OUTSIDE = {
    "strip": "str.strip, the reference rule's one normalisation",
    "SEED_D": "a shell variable of a command shown in docs/data.md",
    "WANDB_PROJECT": "Weights & Biases' environment variable",
    "AVX2": "a CPU instruction set",
    # and every errno name (ENOSPC, EROFS, ...): the operating system's, which the docs of write errors name
    **{name: "an errno code" for name in errno.errorcode.values()},
}


def _sources() -> list[Path]:
    return list(PACKAGE.rglob("*.py")) + [p for d in ("scripts", "study", "builtin_sources", "benchmarks")
                                          for p in (ROOT / d).glob("*.py")]


def _names() -> tuple[set[str], set[str]]:
    """Every function, class and assigned name of the checkout's Python, and every string literal (an
    environment variable the code reads is named by one)."""
    defined, strings = set(), set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return defined, strings


def missing_names(docs: list[Path]) -> list[str]:
    """``DOC:LINE: what`` for each name in backticks that nothing in the checkout defines."""
    defined, strings = _names()
    modules = {p.stem for p in PACKAGE.rglob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    files = {p.name for d in ("src", "scripts", "study", "builtin_sources", "benchmarks", "tests")
             for p in (ROOT / d).rglob("*.py")}
    out = []
    for doc in docs:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for span in re.findall(r"`([^`\n]+)`", line):
                span = span.strip()
                where = f"{doc.name}:{n}: {span}"
                if span.split("(")[0] in OUTSIDE:
                    continue
                if call := re.match(r"([A-Za-z_][\w.]*)\(", span):
                    parts = call.group(1).split(".")
                    ours = len(parts) == 1 or parts[0] in modules or parts[0] == "lookahead_tuning"
                    if ours and parts[-1] not in defined:
                        out.append(where)
                elif re.fullmatch(r"[\w./-]+\.py", span):
                    if not any(p.exists() for p in (ROOT / span, PACKAGE / span, ROOT / "src" / span)) \
                            and not ("/" not in span and span in files):
                        out.append(where)
                elif re.fullmatch(r"lookahead_tuning(\.\w+)+", span):
                    parts = span.split(".")
                    module = PACKAGE.joinpath(*parts[1:])
                    if not (module.with_suffix(".py").is_file() or module.is_dir() or parts[-1] in defined):
                        out.append(where)
                elif re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", span) and span not in defined | strings:
                    out.append(where)
    return out


def test_every_module_function_and_script_the_docs_name_exists():
    assert missing_names(DOCS) == []


def test_the_check_sees_a_removed_function_and_module(tmp_path):
    doc = tmp_path / "stale.md"
    doc.write_text("`benign_pairs()` and `CATEGORY_NAMES`; `lookahead_tuning.data.nowhere`; `scripts/gone.py`;\n"
                   "`load_task(...)` and `lookahead_tuning.data.tasks` exist.\n")
    assert missing_names([doc]) == ["stale.md:1: benign_pairs()", "stale.md:1: CATEGORY_NAMES",
                                    "stale.md:1: lookahead_tuning.data.nowhere", "stale.md:1: scripts/gone.py"]


def test_every_developer_script_is_listed_in_the_architecture():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `scripts/` |"))
    assert [p.name for p in sorted((ROOT / "scripts").glob("*.py")) if f"`{p.name}`" not in row] == []
