"""Evaluation and analysis: safety (RSR/JSR, over-refusal), utility, per-token KL, the forecast,
statistics and the compare gate. Modules import torch lazily, so ``stats`` and ``compare`` stay cheap.

- ``safety.evaluate_safety`` / ``evaluate_overrefusal``
- ``utility.evaluate_utility`` (GSM8K/math accuracy, SAMSum ROUGE-1)
- ``kl.per_position_kl`` (the paper's Figure 3), ``forecast.forecast_loss``
- ``stats`` (Wilson, McNemar exact, mean with t-interval), ``compare.compare`` (the CI gate)
"""
