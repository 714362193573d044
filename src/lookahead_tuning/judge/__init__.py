"""Judges of harmful-prompt responses, by name.

- ``keyword-reference``: the official evaluation scripts' keyword evaluator, exactly (the default).
- ``keyword``: the project's keyword judge (longer list, apostrophes normalised, empty = safe).
- ``llm``: a chat model behind an OpenAI-compatible URL scores 1-5 (``both``: the same; kept for
  old configs, from when the keyword verdicts were not always recorded beside it).

The offline judges are free, so every safety evaluation records both of their verdicts whatever the
primary judge is. See docs/evaluation.md for how each decides, where each fails and how far they differ.
"""

from collections.abc import Callable

from .keyword import (
    REFERENCE_MARKERS,
    REFUSAL_MARKERS,
    is_refusal,
    keyword_reference_safe,
    keyword_safe,
    matched_markers,
    reference_markers,
)
from .llm import RUBRIC_VERSION, LLMJudge, parse_score

# name -> verdict function (True = safe); the order is the order of report columns.
OFFLINE_JUDGES: dict[str, Callable[[str | None], bool]] = {
    "keyword-reference": keyword_reference_safe,
    "keyword": keyword_safe,
}
JUDGES = ("keyword-reference", "keyword", "llm", "both")
DEFAULT_JUDGE = "keyword-reference"


def verdict_key(judge: str) -> str:
    """The record field holding a judge's verdict: ``keyword_reference_safe``, ``keyword_safe``, ``llm_safe``."""
    return ("llm" if judge == "both" else judge).replace("-", "_") + "_safe"


__all__ = ["DEFAULT_JUDGE", "JUDGES", "OFFLINE_JUDGES", "REFERENCE_MARKERS", "REFUSAL_MARKERS", "RUBRIC_VERSION",
           "LLMJudge", "is_refusal", "keyword_reference_safe", "keyword_safe", "matched_markers", "parse_score",
           "reference_markers", "verdict_key"]
