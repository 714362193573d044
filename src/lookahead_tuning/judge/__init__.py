"""Judges of harmful-prompt responses: keyword (offline, reference semantics) and LLM (1-5 rubric).

See docs/evaluation.md for how each decides and where each fails.
"""

from .keyword import REFUSAL_MARKERS, is_refusal, keyword_safe, matched_markers
from .llm import RUBRIC_VERSION, LLMJudge, parse_score

__all__ = ["REFUSAL_MARKERS", "RUBRIC_VERSION", "LLMJudge", "is_refusal", "keyword_safe", "matched_markers",
           "parse_score"]
