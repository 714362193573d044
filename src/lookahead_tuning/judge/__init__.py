"""Judges of harmful-prompt responses, by name; :mod:`.registry` is the table of them.

- ``keyword-reference``: the official evaluation scripts' keyword evaluator, exactly (the default).
- ``keyword``: the project's keyword judge (longer list, apostrophes normalised, empty = safe).
- ``llm``: a chat model behind an OpenAI-compatible URL scores 1-5 (``both``: the same; kept for
  old configs, from when the keyword verdicts were not always recorded beside it).

The offline judges are free, so every safety evaluation records both of their verdicts whatever the
primary judge is. See docs/evaluation.md for how each decides, where each fails and how far they differ.
"""

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
from .registry import (
    Judge,
    ModelJudge,
    get,
    judge_names,
    offline_judges,
    recorded_names,
    register,
    stored_fields,
    unregister,
    verdict_key,
)

DEFAULT_JUDGE = "keyword-reference"

__all__ = ["DEFAULT_JUDGE", "REFERENCE_MARKERS", "REFUSAL_MARKERS", "RUBRIC_VERSION", "Judge", "LLMJudge",
           "ModelJudge", "get", "is_refusal", "judge_names", "keyword_reference_safe", "keyword_safe",
           "matched_markers", "offline_judges", "parse_score", "recorded_names", "reference_markers", "register",
           "stored_fields", "unregister", "verdict_key"]
