"""The significance code against scipy.stats (a dev dependency only) and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from harness.stats import (
    betainc,
    holm,
    paired_bootstrap_ci,
    paired_ttest,
    t_two_sided_p,
    unpaired_bootstrap_ci,
    welch_ttest,
)


def episode_accuracies(rng: np.random.Generator, n: int, level: float, queries: int = 75) -> np.ndarray:
    """Per-episode accuracies like the harness's: correct queries out of `queries`."""
    return rng.binomial(queries, level, size=n) / queries


@pytest.mark.parametrize("n", [2, 3, 8, 30, 600, 2000])
@pytest.mark.parametrize("gap", [0.0, 0.005, 0.02, 0.1])
def test_paired_ttest_equals_scipy_ttest_rel(n, gap):
    rng = np.random.default_rng(n * 1000 + int(gap * 1000))
    a = episode_accuracies(rng, n, 0.6)
    b = np.clip(a - gap + rng.normal(0, 0.05, n), 0, 1)
    t, p = paired_ttest(a, b)
    expected = scipy.stats.ttest_rel(a, b)
    assert abs(p - expected.pvalue) <= 1e-10
    assert math.isclose(t, expected.statistic, rel_tol=1e-10, abs_tol=1e-12)


@pytest.mark.parametrize("na, nb", [(2, 2), (5, 9), (600, 600), (600, 2000)])
@pytest.mark.parametrize("gap", [0.0, 0.01, 0.1])
def test_welch_ttest_equals_scipy(na, nb, gap):
    rng = np.random.default_rng(na + nb)
    a, b = episode_accuracies(rng, na, 0.6), episode_accuracies(rng, nb, 0.6 - gap, queries=25)
    t, p = welch_ttest(a, b)
    expected = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert abs(p - expected.pvalue) <= 1e-10
    assert math.isclose(t, expected.statistic, rel_tol=1e-10, abs_tol=1e-12)


@pytest.mark.parametrize("df", [1, 2, 2.5, 7, 30, 599, 1e5])
@pytest.mark.parametrize("t", [0.0, 0.05, 0.7, 1.96, 3.0, 8.0, 40.0])
def test_t_tail_equals_scipy(df, t):
    assert abs(t_two_sided_p(t, df) - 2 * scipy.stats.t.sf(t, df)) <= 1e-10
    assert t_two_sided_p(-t, df) == t_two_sided_p(t, df)


@pytest.mark.parametrize("a, b, x", [(0.5, 0.5, 0.3), (2, 3, 0.9), (300, 0.5, 0.99), (0.5, 300, 0.001)])
def test_betainc_equals_scipy(a, b, x):
    assert abs(betainc(a, b, x) - scipy.special.betainc(a, b, x)) <= 1e-12


def test_degenerate_differences():
    a = [0.5, 0.6, 0.7]
    assert paired_ttest(a, a) == (0.0, 1.0)  # identical results: no evidence of a difference
    t, p = paired_ttest([0.75, 1.0, 0.5], [0.5, 0.75, 0.25])  # the same +0.25 in every episode
    assert t == math.inf and p == 0.0
    assert all(math.isnan(v) for v in paired_ttest([0.5], [0.4]))


def test_holm_hand_worked():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # capped at 1; NaNs are left out of the family (m = 2 here)
    adjusted = holm([0.7, math.nan, 0.2])
    assert adjusted[0] == pytest.approx(0.7) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.4)
    assert holm([0.6, 0.6, 0.6]) == [1.0, 1.0, 1.0]
    assert holm([]) == []


def test_bootstrap_is_seeded_and_covers_the_difference():
    rng = np.random.default_rng(3)
    a = episode_accuracies(rng, 200, 0.6)
    b = np.clip(a - 0.03 + rng.normal(0, 0.05, 200), 0, 1)
    lo, hi = paired_bootstrap_ci(a, b)
    assert (lo, hi) == paired_bootstrap_ci(a, b)  # deterministic
    assert lo < float(np.mean(a - b)) < hi and hi - lo < 0.03
    ulo, uhi = unpaired_bootstrap_ci(a, b)
    assert (ulo, uhi) == unpaired_bootstrap_ci(a, b)
    assert uhi - ulo > hi - lo  # pairing removes the shared episode difficulty
