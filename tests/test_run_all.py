"""The benchmark runner (benchmarks/run_all.py): output parsing and medians, plus a --quick smoke run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
run_all = importlib.util.module_from_spec(spec)
sys.modules["run_all"] = run_all  # dataclasses look their module up while the class is built
spec.loader.exec_module(run_all)


def test_json_objects_finds_one_line_and_indented_output():
    text = 'input: 10 rows\n{"mode": "virtual", "rows_per_s": 10}\nnoise {"not": "top"}\n{\n  "a": {"b": 2}\n}\n'
    assert run_all.json_objects(text) == [{"mode": "virtual", "rows_per_s": 10}, {"a": {"b": 2}}]


def test_summarise_takes_medians_per_figure():
    runs = [[{"mode": "real", "rows_per_s": 10, "ok": True, "note": "x"}, {"t": {"s": 1.0}}],
            [{"mode": "real", "rows_per_s": 30, "ok": True, "note": "y"}, {"t": {"s": 5.0}}],
            [{"mode": "real", "rows_per_s": 20, "ok": False, "note": "z"}, {"t": {"s": 2.0}}]]
    table = run_all.summarise(runs)
    assert table["real:rows_per_s"]["median"] == 20
    assert table["1:t.s"]["median"] == 2.0
    assert table["real:ok"]["median"] is True  # booleans are not averaged
    assert table["real:note"]["median"] == "x"
    assert run_all._preview_ratio([{"mode": "real", "rows_per_s": 10}, {"mode": "virtual", "rows_per_s": 40}]) == 4.0


def test_machine_description_names_the_hardware_and_versions():
    info = run_all.machine()
    assert info["logical_cpus"] >= 1 and info["torch"] != "not installed" and "python" in info


@pytest.mark.slow  # two benchmark scripts, twice each, in fresh processes (about 30 s on 2 cores)
def test_quick_suite_writes_a_report(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, "benchmarks/run_all.py", "--quick", "--only", "eval_time",
                           "preview_throughput", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert "## Machine" in report and "| cpu |" in report and "load average" in report
    assert "`python benchmarks/eval_time.py --limit 2" in report
    assert "| virtual_over_real_rows_per_s |" in report
    assert "real:rows_per_s" in report and "failed" not in report
    assert str(tmp_path) not in report.replace(str(out), "")
