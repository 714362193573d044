"""Statistics against numbers worked out by hand (or from standard tables)."""

from __future__ import annotations

import math

import pytest

from lookahead_tuning.analyse.stats import (
    mcnemar_exact,
    mean_ci,
    paired_counts,
    rate_with_ci,
    t_quantile,
    wilson_interval,
)


def test_wilson_half():
    # 5/10: centre 0.5, half-width 1.96*sqrt(0.025 + 0.009604)/1.38416 = 0.26340
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-4)
    assert hi == pytest.approx(0.76341, abs=1e-4)


def test_wilson_zero_successes_has_positive_upper_bound():
    # 0/10: upper = (z^2/n)/(1+z^2/n) = 0.38416/1.38416
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.38416 / 1.38416, abs=1e-6)


def test_wilson_all_successes_mirrors_zero():
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0
    assert lo == pytest.approx(1 - 0.38416 / 1.38416, abs=1e-6)


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    r = rate_with_ci(81, 110)
    assert r["rate"] == pytest.approx(81 / 110)
    assert r["ci95"][0] < r["rate"] < r["ci95"][1]


def test_mcnemar_exact_known_values():
    # b=1, c=9: P(X<=1 | n=10, 1/2) = 11/1024, two-sided 22/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    # b=0, c=5: 2 * (1/32) = 0.0625
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # large counts must not underflow
    assert 0.0 < mcnemar_exact(400, 600) < 1e-9


def test_paired_counts():
    t = paired_counts([True, True, False, False, True], [True, False, True, False, False])
    assert t == {"both": 1, "only_first": 2, "only_second": 1, "neither": 1}


def test_t_quantiles_match_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-3)
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-3)


def test_mean_ci():
    r = mean_ci([1.0, 2.0, 3.0])
    # mean 2, sd 1, half = 4.3027 / sqrt(3)
    assert r["mean"] == 2.0 and r["std"] == pytest.approx(1.0)
    assert r["ci95"][1] - 2.0 == pytest.approx(4.3027 / math.sqrt(3), abs=1e-3)
    assert mean_ci([0.5])["ci95"] is None


def test_cohen_kappa():
    from lookahead_tuning.analyse.stats import cohen_kappa

    # observed 0.7, chance 0.5*0.6 + 0.5*0.4 = 0.5 -> (0.7 - 0.5) / 0.5
    assert cohen_kappa({"both": 20, "only_first": 5, "only_second": 10, "neither": 15}) == pytest.approx(0.4)
    assert cohen_kappa({"both": 3, "only_first": 0, "only_second": 0, "neither": 2}) == pytest.approx(1.0)
    assert cohen_kappa({"both": 0, "only_first": 2, "only_second": 2, "neither": 0}) == pytest.approx(-1.0)
    assert cohen_kappa({"both": 4, "only_first": 0, "only_second": 0, "neither": 0}) is None  # all one verdict
    assert cohen_kappa({"both": 0, "only_first": 0, "only_second": 0, "neither": 0}) is None
