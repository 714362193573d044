"""User text in the documents and figures the package writes (``markup.py``; docs/reliability.md, "User
text in reports"): any string stays one table cell, one heading, one bullet or one code block, renders as
its own characters, opens no HTML, link, emphasis or code span, and never turns a figure label into
mathtext. Markdown is parsed back with markdown-it-py (CommonMark with GitHub's tables), HTML enabled
as on a renderer that allows it."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from lookahead_tuning import markup

PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
PROPERTY = settings(max_examples=300, deadline=None, database=None)
# Text that reaches for every construct: Markdown and HTML punctuation, line breaks of every kind.
HOSTILE = st.text(alphabet=st.sampled_from(list("ab1 .-+_*~`|\\[]()!<>&#$=:;'\"\t\n\r\v\f\x85\u2028\x00é")) | st.characters(),
                  max_size=40)
# Inline tokens that are not plain text: any of them means the user's string was read as markup.
MARKUP = {"code_inline", "html_inline", "em_open", "strong_open", "s_open", "link_open", "image",
          "softbreak", "hardbreak"}


def _normal(s: str) -> str:
    """What a reader sees: line breaks as spaces, NUL as U+FFFD."""
    return re.sub(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]", " ", s).replace("\0", "\ufffd")


def _inline_text(token) -> str:
    assert not {c.type for c in token.children} & MARKUP, [c.type for c in token.children]
    return "".join(c.content for c in token.children)


def _tables(doc: str) -> list[list[list[str]]]:
    """Every table of ``doc`` as rows of cell texts, checking no cell holds markup."""
    tables, row = [], None
    for tok in PARSER.parse(doc):
        if tok.type == "table_open":
            tables.append([])
        elif tok.type == "tr_open":
            row = []
            tables[-1].append(row)
        elif tok.type == "inline" and row is not None:
            row.append(_inline_text(tok))
        elif tok.type == "tr_close":
            row = None
    return tables


def _raw_cells(line: str) -> int:
    """Cells of a table row as GitHub splits it: at every ``|`` not escaped by a backslash."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|"))) if line.strip() != "|" else 0


def _no_html(doc: str) -> None:
    tokens = PARSER.parse(doc)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in (t.children or [])}
    assert not kinds & {"html_block", "html_inline"}, doc


def _check_table_rows(doc: str) -> None:
    """Each table row of ``doc`` has as many cells as its header, as GitHub splits them."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"\|(-{3}:?\|)+", line):
            width = _raw_cells(lines[i - 1])
            for body in lines[i + 1:]:
                if not body.startswith("|"):
                    break
                assert _raw_cells(body) == width, body


# --------------------------------------------------------------------------- the helper, any string


@PROPERTY
@given(HOSTILE)
def test_any_string_is_one_table_cell_of_its_own_text(s):
    doc = f"| name | rate |\n|---|---:|\n| {markup.text(s)} | 1.00 |\n"
    _check_table_rows(doc)
    _no_html(doc)
    (table,) = _tables(doc)
    assert len(table) == 2
    assert table[1][0].strip() == _normal(s).strip()
    assert table[1][1] == "1.00"


@PROPERTY
@given(HOSTILE)
def test_any_string_is_one_heading_and_one_bullet(s):
    tokens = PARSER.parse(f"# {markup.text(s)}: report\n\n- {markup.text(s)} kept RSR\n")
    assert [t.type for t in tokens] == ["heading_open", "inline", "heading_close", "bullet_list_open",
                                        "list_item_open", "paragraph_open", "inline", "paragraph_close",
                                        "list_item_close", "bullet_list_close"]
    assert _inline_text(tokens[1]).strip() == (_normal(s) + ": report").strip()
    assert _inline_text(tokens[6]).strip() == (_normal(s) + " kept RSR").strip()


@PROPERTY
@given(HOSTILE)
def test_any_string_is_one_code_block_and_one_code_span(s):
    block = "\n".join(markup.code_block(s, "yaml")) + "\n\nafter\n"
    tokens = PARSER.parse(block)
    assert tokens[0].type == "fence"
    assert tokens[0].content == re.sub(r"\r\n?", "\n", s.replace("\0", "\ufffd")) + "\n"
    assert [t.type for t in tokens[1:]] == ["paragraph_open", "inline", "paragraph_close"]
    tokens = PARSER.parse(f"Seed model: {markup.code(s)} (hash).\n")
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"]
    children = [c for c in tokens[1].children if c.type != "text"]
    assert [c.type for c in children] == ["code_inline"]
    assert children[0].content == (_normal(s) or " ")


@PROPERTY
@given(HOSTILE)
def test_figure_text_is_never_mathtext_and_shows_the_string(s):
    from matplotlib import cbook

    label = markup.figure_text(s)
    assert not cbook.is_math_text(label)
    assert label.replace("\\$", "$") == s  # what matplotlib shows for text that is not mathtext


def test_ordinary_names_pass_unchanged():
    """Reports of ordinary runs keep their bytes (tests/golden, the committed study summaries)."""
    for name in ("lookahead-real", "lookahead-real@m=12", "seedB-lr2e-4", "avx512_bf16", "torch 2.13.0+cpu",
                 "lookahead-virtual@prefix=\"Let's deal with this situation. \"", "2026-12-02T01:15:51"):
        assert markup.text(name) == name
    assert markup.code("/tmp/h17/tiny-model") == "`/tmp/h17/tiny-model`"
    assert markup.code_block("lookahead-tuning run x.yaml") == ["```", "lookahead-tuning run x.yaml", "```"]


# --------------------------------------------------------------------------- every writer


SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
PREFIX = "a | b\n<img src=x onerror=alert(1)> `c` $\\frac{x}$ [l](javascript:x) *e*"


def _hostile_results():
    from test_report import cell, results_doc

    cells = [cell("seed", 0, 0.95, 0.3, 0.02), cell("vanilla", 0, 0.7, 0.1, 0.2, kl=[0.5, 0.4]),
             cell("lookahead-virtual", 0, 0.8, 0.2, 0.19, kl=[0.3, 0.2]),
             cell("lookahead-virtual", 0, 0.9, 0.25, 0.15, sweep={"prefix": PREFIX}, kl=[0.1, 0.1]),
             cell("lookahead-virtual", 0, 0.7, 0.2, 0.1, sweep={"prefix": "$\\undefinedcommand$"}, kl=[0.2, 0.1])]
    doc = results_doc(cells, sweep_base={"lookahead-virtual": {"prefix": "Let's solve this problem. "}},
                      commands={"ran": "lookahead-tuning run x.yaml\n```\n" + SCRIPT, "rerun": "x"},
                      config="name: x\nnote: |\n  ```\n  " + SCRIPT + "\n", environment={"torch|x": IMG},
                      seed_model="/tmp/`seed`\n\n" + SCRIPT, machines=[{"cpu": "EPYC | " + IMG}])
    doc["name"] = "exp\n# " + SCRIPT
    doc["models"][IMG] = dict(doc["models"]["vanilla"])
    doc["evaluation"]["judge"] = "llm|" + SCRIPT
    doc["instruments"] = {}
    return doc


def test_report_md_keeps_every_table_row_and_runs_no_html(tmp_path):
    """A sweep prefix holding ``|``, a newline and HTML, a row named by an ``<img onerror>``, a config that
    holds a code fence and a script: report.md keeps every row's column count, shows the names as text and
    holds no HTML; the figures draw (a ``$\\command$`` prefix is not mathtext)."""
    from lookahead_tuning.report.writer import draw_figures, render_report

    doc = _hostile_results()
    figures = draw_figures(doc, tmp_path)
    assert set(figures) == {"kl", "prefix_sweep"}
    text = render_report(doc, figures)
    _check_table_rows(text)
    _no_html(text)
    cells = [row[0] for table in _tables(text) for row in table]
    assert repr(PREFIX) in cells
    assert IMG in cells
    heading = next(t for t in PARSER.parse(text) if t.type == "inline")
    assert _inline_text(heading) == "exp # " + SCRIPT + ": LookAhead Tuning experiment report"
    fences = [t for t in PARSER.parse(text) if t.type == "fence"]
    assert [f.content.count(SCRIPT) for f in fences] == [1, 0, 1]  # the command, the rerun, the config


def test_report_command_on_a_hostile_results_file(tmp_path):
    from lookahead_tuning.cli import main

    (tmp_path / "results.json").write_text(json.dumps(_hostile_results()))
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    _check_table_rows(text)
    _no_html(text)


def test_study_summary_tables_and_figures_take_any_group_name(tmp_path):
    from lookahead_tuning.report.study import figures, markdown

    stat = {"mean": 0.5, "ci95": [0.4, 0.6]}
    group = "lr|1e-4 <b onclick=x>$\\x$ \nx"
    row = {"group": group, "task": "math", "name": "lookahead-virtual@prefix='" + SCRIPT + "'", "seeds": [0, 1],
           "m": None, "rsr": stat, "jsr": stat, "utility": stat, "rsr_drop": stat, "jsr_drop": stat, "kl1": stat}
    summary = {"seed_models": [{"group": group, "task": "math", "rsr": 0.9, "jsr": 0.5, "utility": 0.1,
                                "overrefusal": None}],
               "groups": [row, {**row, "name": "vanilla"}],
               "kl_points": [{"group": group, "name": row["name"], "seed": 0, "kl1": 0.1, "kl2": 0.1,
                              "rsr_drop": 0.1, "jsr_drop": 0.1}],
               "forecasts": {f"{group}/math": {"methods": {row["name"]: {"mean_first_3": 1.0}}}}, "n_cells": 3}
    text = markdown(summary)
    _check_table_rows(text)
    _no_html(text)
    assert [t[1][0] for t in _tables(text)] == [_normal(group)] * 2
    assert set(figures(summary, tmp_path)) == {"safety_utility.png", "kl_vs_drop.png", "forecast_vs_drop.png"}


def test_forecast_and_rejudge_tables_take_any_name():
    from lookahead_tuning.analyse.forecast import forecast_markdown
    from lookahead_tuning.experiment.rejudge import changes_table

    result = {"k": 2, "n": 3, "methods": {IMG: {"per_position": [1.0, 2.0], "mean_first_3": 1.5,
                                                "mean_first_k": 1.5}}, "ranking": [IMG]}
    text = forecast_markdown(result)
    _check_table_rows(text)
    _no_html(text)
    text = changes_table({"math--x|" + SCRIPT: {"rejudged": {"changed": {}}}})
    _check_table_rows(text)
    _no_html(text)


@pytest.mark.parametrize("label", ["$\\undefinedcommand$", "$x$ and \\$", "50$ or $$"])
def test_the_drawing_helpers_take_any_series_name(tmp_path, label):
    from lookahead_tuning.analyse.plots import grouped_bars, position_lines

    grouped_bars({label: [1.0, 2.0], "b": [1.0, 0.5]}, tmp_path / "bars.png", xlabel="x", ylabel="y")
    position_lines({label: [1.0, 2.0]}, tmp_path / "lines.png", xlabel="x", ylabel="y")
    assert (tmp_path / "bars.png").read_bytes()[:4] == (tmp_path / "lines.png").read_bytes()[:4] == b"\x89PNG"
