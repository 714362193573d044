"""The experiment report: ``results.json`` -> Table 1, the cost table, figures and ``report.md``."""

from .writer import build_results, render_report, write_outputs

__all__ = ["build_results", "render_report", "write_outputs"]
