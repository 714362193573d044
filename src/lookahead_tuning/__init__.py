"""LookAhead Tuning: safer fine-tuning through partial answer previews.

The pipeline, one sub-package per stage:
data -> preview -> train -> generate -> judge -> analyse -> report.
"""

__version__ = "0.1.0"
