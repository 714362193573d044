"""Generation stage: batched, resumable answers for a list of prompts (``lookahead-tuning generate``)."""

from .engine import generate, plan_batches, prefill_text

__all__ = ["generate", "plan_batches", "prefill_text"]
