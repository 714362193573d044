"""Confidence intervals and paired tests for the rates the evaluation reports.

The paper reports single numbers. On 110 or 330 prompts one prompt moves a rate by 0.3-0.9 points,
so every rate we write carries an interval, and two models judged on the same prompts are compared
with a paired test. Pure Python (no SciPy dependency): the distributions needed are small enough.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n.

    Chosen over the normal ("Wald") interval because safe rates sit near 0 or 1, where Wald
    collapses to a zero-width interval or leaves [0, 1]. For n = 0 the interval is (0, 1): nothing
    is known.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At k = 0 or k = n the bound is exactly 0 or 1; floating point gives 0.9999999999999999.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def rate_with_ci(k: int, n: int) -> dict:
    """``{"rate", "k", "n", "ci95": [lo, hi]}`` — the shape every rate takes in ``metrics.json``."""
    lo, hi = wilson_interval(k, n)
    return {"rate": (k / n) if n else None, "k": k, "n": n, "ci95": [lo, hi]}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    ``b`` = pairs where only the first model was safe, ``c`` = only the second. Under the null
    hypothesis each discordant pair falls either way with probability 1/2, so the p-value is
    ``min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``. With no discordant pairs
    there is no evidence of a difference: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    lo = min(b, c)
    # Sum in log space so thousands of pairs do not underflow.
    log_half_n = -n * math.log(2.0)
    tail = sum(math.exp(_log_comb(n, i) + log_half_n) for i in range(lo + 1))
    return min(1.0, 2.0 * tail)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def paired_counts(first: Sequence[bool], second: Sequence[bool]) -> dict:
    """The 2x2 table of paired verdicts: both safe, only first, only second, neither."""
    if len(first) != len(second):
        raise ValueError("paired verdicts must have the same length")
    table = {"both": 0, "only_first": 0, "only_second": 0, "neither": 0}
    for a, b in zip(first, second, strict=True):
        key = "both" if a and b else "only_first" if a else "only_second" if b else "neither"
        table[key] += 1
    return table


def cohen_kappa(table: dict) -> float | None:
    """Cohen's kappa of two judges from their 2x2 table (:func:`paired_counts`' keys): agreement beyond
    what their own safe shares would give by chance. ``None`` when chance agreement is already total
    (both judges gave one and the same verdict to every answer: nothing to measure)."""
    n = sum(table.values())
    if not n:
        return None
    observed = (table["both"] + table["neither"]) / n
    first = (table["both"] + table["only_first"]) / n
    second = (table["both"] + table["only_second"]) / n
    chance = first * second + (1 - first) * (1 - second)
    return None if chance >= 1 else (observed - chance) / (1 - chance)


# --- mean with a Student-t interval (multi-seed aggregates) ----------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse of :func:`t_cdf` by bisection (monotone; 100 halvings reach double precision)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def mean_present(values: Iterable[float | None]) -> float | None:
    """The mean of the values that were measured (``None`` and NaN left out); ``None`` when none was."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean of per-seed results with a Student-t interval.

    Returns ``{"mean", "n", "std", "ci95": [lo, hi]}``. With a single value the spread is unknown,
    so ``std`` and ``ci95`` are ``None`` rather than a misleading zero-width interval.
    """
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "n": 1, "std": None, "ci95": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "n": n, "std": std, "ci95": [mean - half, mean + half]}
