"""The report stage: ``report.md``, its tables and figures from a run's ``results.json``, the study
summary's tables and figures, and the paper's own Table 1. A pure reader: nothing here imports
``experiment/`` or runs a model."""

from .writer import render_report

__all__ = ["render_report"]
