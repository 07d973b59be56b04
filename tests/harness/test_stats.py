"""The statistics against scipy.stats and hand-worked formulas: t intervals (ddof = 1), the paired and
Welch tests, the training-seed variance components, and Bonferroni intervals that agree with the
adjusted p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from harness.stats import (
    COVERS_EPISODES,
    COVERS_SEEDS,
    accuracy_interval,
    ci95,
    difference,
    paired_ttest,
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
    d = difference(a, b)
    assert abs(d.p_raw - expected.pvalue) <= 1e-10 and d.p_adjusted == d.p_raw and d.test == "paired t"
    low, high = scipy.stats.t.interval(0.95, n - 1, loc=np.mean(a - b), scale=scipy.stats.sem(a - b))
    if np.std(a - b) > 0:
        assert d.low == pytest.approx(low, abs=1e-12) and d.high == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize("na, nb", [(2, 2), (5, 9), (600, 600), (600, 2000)])
@pytest.mark.parametrize("gap", [0.0, 0.01, 0.1])
def test_welch_equals_scipy(na, nb, gap):
    rng = np.random.default_rng(na + nb)
    a, b = episode_accuracies(rng, na, 0.6), episode_accuracies(rng, nb, 0.6 - gap, queries=25)
    expected = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert abs(welch_ttest(a, b)[1] - expected.pvalue) <= 1e-10
    d = difference(a, b, paired=False)
    assert abs(d.p_raw - expected.pvalue) <= 1e-10 and d.test == "Welch t (unpaired)"


@pytest.mark.parametrize("n", [2, 8, 300])
def test_ci95_is_the_t_interval_with_ddof_1(n):
    values = episode_accuracies(np.random.default_rng(n), n, 0.5)
    low, high = scipy.stats.t.interval(0.95, n - 1, loc=values.mean(), scale=scipy.stats.sem(values))
    assert ci95(values) == pytest.approx((high - low) / 2, rel=1e-12)
    interval = accuracy_interval(values)
    assert interval.half_width == ci95(values) and interval.covers == COVERS_EPISODES


def test_the_z_interval_was_22_percent_too_narrow_at_8_episodes():
    values = np.array([0.2, 0.4, 0.3, 0.5, 0.35, 0.25, 0.45, 0.3])
    z_interval = 1.96 * values.std() / math.sqrt(8)  # the old formula: normal quantile, ddof = 0
    assert 1.2 < ci95(values) / z_interval < 1.35


def test_replicate_interval_adds_training_variance():
    episodes = np.array([0.4, 0.6, 0.5, 0.7, 0.5, 0.3])
    replicates = np.array([0.50, 0.55, 0.45])
    interval = accuracy_interval(episodes, replicates)
    var_train, var_episodes = replicates.var(ddof=1) / 3, episodes.var(ddof=1) / 6
    df = (var_train + var_episodes) ** 2 / (var_train**2 / 2 + var_episodes**2 / 5)  # Welch-Satterthwaite
    expected = scipy.stats.t.ppf(0.975, df) * math.sqrt(var_train + var_episodes)
    assert interval.estimate == pytest.approx(0.5) and interval.half_width == pytest.approx(expected, rel=1e-12)
    assert interval.covers == COVERS_SEEDS and interval.half_width > ci95(episodes)


def test_difference_with_seeds_on_both_sides():
    rng = np.random.default_rng(0)
    a, b = episode_accuracies(rng, 50, 0.6), episode_accuracies(rng, 50, 0.55)
    ra, rb = [0.61, 0.58, 0.62], [0.56, 0.55, 0.51]
    d = difference(a, b, ra, rb)
    components = [np.var(a - b, ddof=1) / 50, np.var(ra, ddof=1) / 3, np.var(rb, ddof=1) / 3]
    df = sum(components) ** 2 / (components[0] ** 2 / 49 + components[1] ** 2 / 2 + components[2] ** 2 / 2)
    t = (np.mean(ra) - np.mean(rb)) / math.sqrt(sum(components))
    assert d.delta == pytest.approx(np.mean(ra) - np.mean(rb)) and d.test == "paired t, training seeds"
    assert d.p_raw == pytest.approx(2 * scipy.stats.t.sf(abs(t), df), rel=1e-10)
    assert difference(a, b, ra, [0.55]).test == "paired t"  # one side without replicates: episodes only


@pytest.mark.parametrize("seed", range(30))
def test_bonferroni_interval_excludes_zero_exactly_when_adjusted_p_is_significant(seed):
    rng = np.random.default_rng(seed)
    a = episode_accuracies(rng, 30, 0.6)
    b = np.clip(a - rng.uniform(0, 0.05) + rng.normal(0, 0.08, 30), 0, 1)
    family = int(rng.integers(1, 14))
    d = difference(a, b, family=family)
    assert d.level == pytest.approx(1 - 0.05 / family)
    assert d.p_adjusted == pytest.approx(min(1.0, family * d.p_raw))
    assert (d.low > 0 or d.high < 0) == (d.p_adjusted < 0.05)


def test_degenerate_differences():
    a = [0.5, 0.6, 0.7]
    assert paired_ttest(a, a) == (0.0, 1.0)  # identical results: no evidence of a difference
    t, p = paired_ttest([0.75, 1.0, 0.5], [0.5, 0.75, 0.25])  # the same +0.25 in every episode
    assert t == math.inf and p == 0.0
    assert all(math.isnan(v) for v in paired_ttest([0.5], [0.4]))
    same = difference(a, a)
    assert (same.delta, same.low, same.high, same.p_raw) == (0.0, 0.0, 0.0, 1.0)
    assert difference([0.75, 1.0, 0.5], [0.5, 0.75, 0.25]).p_raw == 0.0
    assert difference([0.5], [0.4]) is None and ci95([0.5]) == 0.0
