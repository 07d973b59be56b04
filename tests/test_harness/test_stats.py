"""The statistics against scipy.stats and hand-worked formulas: t intervals (ddof = 1), the paired and
Welch tests, the training-seed variance components, and Bonferroni intervals that agree with the
adjusted p-values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from harness.stats import (
    COVERS_EPISODES,
    COVERS_SEEDS,
    accuracy_interval,
    ci95,
    crossed,
    difference,
    image_pool,
)


def episode_accuracies(rng: np.random.Generator, n: int, level: float, queries: int = 75) -> np.ndarray:
    """Per-episode accuracies like the harness's: correct queries out of `queries`."""
    return rng.binomial(queries, level, size=n) / queries


@pytest.mark.parametrize("n", [2, 3, 8, 30, 600, 2000])
@pytest.mark.parametrize("gap", [0.0, 0.005, 0.02, 0.1])
def test_paired_difference_equals_scipy_ttest_rel(n, gap):
    rng = np.random.default_rng(n * 1000 + int(gap * 1000))
    a = episode_accuracies(rng, n, 0.6)
    b = np.clip(a - gap + rng.normal(0, 0.05, n), 0, 1)
    expected = scipy.stats.ttest_rel(a, b)
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
    d = difference(a, b, paired=False)
    assert abs(d.p_raw - expected.pvalue) <= 1e-10 and d.test == "Welch t (unpaired)"


@pytest.mark.parametrize("n", [2, 8, 300])
def test_ci95_is_the_t_interval_with_ddof_1(n):
    values = episode_accuracies(np.random.default_rng(n), n, 0.5)
    low, high = scipy.stats.t.interval(0.95, n - 1, loc=values.mean(), scale=scipy.stats.sem(values))
    assert ci95(values) == pytest.approx((high - low) / 2, rel=1e-12)
    interval = accuracy_interval(values)
    assert interval.half_width == ci95(values) and interval.covers == COVERS_EPISODES
    assert interval.df == n - 1 and interval.seed_df is None
    one_seed = accuracy_interval(values[None, :])  # a 1 x E matrix: one trained model
    assert one_seed == interval


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
    assert interval.df == pytest.approx(df, rel=1e-12) and interval.seed_df == 2


def test_difference_with_seeds_on_both_sides():
    rng = np.random.default_rng(0)
    a, b = episode_accuracies(rng, 50, 0.6), episode_accuracies(rng, 50, 0.55)
    ra, rb = [0.61, 0.58, 0.62], [0.56, 0.55, 0.51]
    d = difference(a, b, ra, rb)
    components = [np.var(a - b, ddof=1) / 50, np.var(ra, ddof=1) / 3, np.var(rb, ddof=1) / 3]
    df = sum(components) ** 2 / (components[0] ** 2 / 49 + components[1] ** 2 / 2 + components[2] ** 2 / 2)
    t = (np.mean(ra) - np.mean(rb)) / math.sqrt(sum(components))
    assert difference(a, b, ra, rb, a_matrix=np.tile(a, (3, 1)), b_matrix=np.tile(b, (3, 1)), a_sources=["x", "y", "z"],
                      b_sources=["x", "y", "w"]) == d  # other source models: the seeds stay independent
    assert d.delta == pytest.approx(np.mean(ra) - np.mean(rb)) and d.test == "paired t, training seeds independent"
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
    same = difference(a, a)
    assert (same.delta, same.low, same.high, same.p_raw) == (0.0, 0.0, 0.0, 1.0)
    assert difference([0.75, 1.0, 0.5], [0.5, 0.75, 0.25]).p_raw == 0.0
    assert difference([0.5], [0.4]) is None and ci95([0.5]) == 0.0


# --- crossed seed x episode design --------------------------------------------------------------------------

MATRIX = np.array([[0.60, 0.40, 0.80, 0.55, 0.70],
                   [0.50, 0.35, 0.65, 0.50, 0.60],
                   [0.72, 0.41, 0.88, 0.61, 0.69]])


def two_way_anova(x: np.ndarray) -> tuple[float, float, float]:
    """(MS seeds, MS episodes, MS interaction) of a two-way layout without replication, by the textbook sums."""
    s, e = x.shape
    grand = sum(sum(row) for row in x) / (s * e)
    rows = [sum(x[i]) / e for i in range(s)]
    cols = [sum(x[i][j] for i in range(s)) / s for j in range(e)]
    ss_rows = e * sum((r - grand) ** 2 for r in rows)
    ss_cols = s * sum((c - grand) ** 2 for c in cols)
    ss_total = sum((x[i][j] - grand) ** 2 for i in range(s) for j in range(e))
    ss_inter = ss_total - ss_rows - ss_cols
    return ss_rows / (s - 1), ss_cols / (e - 1), ss_inter / ((s - 1) * (e - 1))


def test_crossed_variance_is_the_two_way_anova():
    s, e = MATRIX.shape
    ms_s, ms_e, ms_se = two_way_anova(MATRIX)
    assert ms_s + ms_e - ms_se > 0
    design = crossed(MATRIX)
    anova = (design.ms_seeds, design.ms_episodes, design.ms_interaction)
    assert anova == pytest.approx((ms_s, ms_e, ms_se), rel=1e-12)
    variance = (ms_s + ms_e - ms_se) / (s * e)
    df = (ms_s + ms_e - ms_se) ** 2 / (ms_s**2 / (s - 1) + ms_e**2 / (e - 1) + ms_se**2 / ((s - 1) * (e - 1)))
    assert df > min(s - 1, e - 1)  # the floor does not bind here
    interval = accuracy_interval(MATRIX)
    assert interval.estimate == pytest.approx(MATRIX.mean()) and not design.fallback
    assert interval.df == pytest.approx(df, rel=1e-12) and interval.seed_df == s - 1
    assert interval.half_width == pytest.approx(scipy.stats.t.ppf(0.975, df) * math.sqrt(variance), rel=1e-12)
    assert interval.covers == COVERS_SEEDS == "training seeds and episode sampling"
    # the crossed form does not count the interaction twice, as the two-component form does
    old = accuracy_interval(MATRIX.mean(axis=0), MATRIX.mean(axis=1))
    two_components = np.var(MATRIX.mean(axis=1), ddof=1) / s + np.var(MATRIX.mean(axis=0), ddof=1) / e
    assert two_components == pytest.approx((ms_s + ms_e) / (s * e), rel=1e-12) and design.variance < two_components
    assert old.estimate == pytest.approx(interval.estimate) and old.df != pytest.approx(interval.df)
    # the variance components: sigma2_seeds / S + sigma2_episodes / E + sigma2_interaction / (S E)
    components = (ms_s - ms_se) / e / s + (ms_e - ms_se) / s / e + ms_se / (s * e)
    assert design.variance == pytest.approx(components, rel=1e-12)


def test_crossed_falls_back_to_two_components_when_the_anova_estimate_is_not_positive():
    # seeds and episodes barely matter, the interaction dominates: MS_S + MS_E - MS_SE < 0
    x = np.array([[0.9, 0.1, 0.8, 0.2], [0.1, 0.9, 0.25, 0.8], [0.5, 0.5, 0.45, 0.5]])
    ms_s, ms_e, ms_se = two_way_anova(x)
    assert ms_s + ms_e - ms_se < 0
    design = crossed(x)
    assert design.fallback
    seed_means, episode_means = x.mean(axis=1), x.mean(axis=0)
    var = np.var(seed_means, ddof=1) / 3 + np.var(episode_means, ddof=1) / 4
    assert design.variance == pytest.approx(var, rel=1e-12) and design.variance > 0
    interval = accuracy_interval(x)
    assert interval == dataclasses.replace(accuracy_interval(episode_means, seed_means), seed_df=2)
    assert interval.half_width > 0 and interval.seed_df == 2


def test_satterthwaite_df_is_floored_at_the_smaller_factor_df():
    # a small positive combined mean square next to a large interaction: Satterthwaite df below min(S-1, E-1)
    x = 0.5 + np.random.default_rng(4).normal(0, 0.2, size=(6, 8))  # no seed or episode effect: noise only
    ms_s, ms_e, ms_se = two_way_anova(x)
    combined = ms_s + ms_e - ms_se
    raw = combined**2 / (ms_s**2 / 5 + ms_e**2 / 7 + ms_se**2 / 35)
    assert combined > 0 and raw < 1, raw  # below 1 too
    interval = accuracy_interval(x)
    assert interval.df == 5
    assert interval.half_width == pytest.approx(scipy.stats.t.ppf(0.975, 5) * math.sqrt(combined / 48), rel=1e-12)
    # two seeds: the floor is 1
    two = crossed(x[:2])
    assert two.df >= 1


def test_one_episode_and_constant_matrices():
    one = accuracy_interval(np.array([[0.5], [0.7], [0.6]]))
    assert one.estimate == pytest.approx(0.6) and one.df == 2 and one.seed_df == 2
    assert one.half_width == pytest.approx(ci95([0.5, 0.7, 0.6]))
    flat = accuracy_interval(np.full((3, 4), 0.5))
    assert (flat.estimate, flat.half_width, flat.seed_df) == (0.5, 0.0, 2) and math.isfinite(flat.df)
    with pytest.raises(ValueError):
        accuracy_interval(np.zeros((2, 2, 2)))


def shared_seed_rows(seed: int = 0, seeds: int = 4, episodes: int = 40, gap: float = 0.02):
    """Two adapters on the same pretrained models: a large seed effect both share, a small constant gap."""
    rng = np.random.default_rng(seed)
    seed_effect = np.array([0.15, -0.12, 0.05, -0.09, 0.1, -0.02][:seeds])[:, None]
    episode_effect = rng.normal(0, 0.1, size=episodes)[None, :]
    a = 0.6 + seed_effect + episode_effect + rng.normal(0, 0.01, size=(seeds, episodes))
    b = a - gap + rng.normal(0, 0.01, size=(seeds, episodes))
    return a, b


def test_paired_by_seed_removes_a_shared_seed_effect():
    a, b = shared_seed_rows()
    sources = [f"supervised-{i}" for i in range(4)]
    args = (a.mean(axis=0), b.mean(axis=0), a.mean(axis=1), b.mean(axis=1))
    paired = difference(*args, a_matrix=a, b_matrix=b, a_sources=sources, b_sources=list(sources))
    independent = difference(*args)
    assert paired.test == "paired t, seeds paired" and independent.test == "paired t, training seeds independent"
    assert paired.delta == pytest.approx(independent.delta) == pytest.approx((a - b).mean())
    assert paired.low > 0  # the 2-point gap is resolved once the shared seed effect cancels
    assert independent.low < 0 < independent.high  # with the seeds independent it is not
    assert paired.high - paired.low < (independent.high - independent.low) / 3
    diff = accuracy_interval(a - b)  # the crossed-design interval of the matrix of differences
    assert (paired.high - paired.low) / 2 == pytest.approx(diff.half_width, rel=1e-12)
    t = paired.delta / math.sqrt(crossed(a - b).variance)
    assert paired.p_raw == pytest.approx(2 * scipy.stats.t.sf(abs(t), diff.df), rel=1e-10)
    # other models for a seed, a missing matrix, one replicate or different episodes: not paired by seed
    assert difference(*args, a_matrix=a, b_matrix=b, a_sources=sources, b_sources=sources[::-1]) == independent
    assert difference(*args, a_matrix=a, b_matrix=None, a_sources=sources, b_sources=sources) == independent
    assert difference(*args, a_matrix=a, b_matrix=b).test == independent.test
    assert difference(a[0], b[0], a_matrix=a[:1], b_matrix=b[:1], a_sources=sources[:1],
                      b_sources=sources[:1]).test == "paired t"
    unpaired = difference(*args, paired=False, a_matrix=a, b_matrix=b, a_sources=sources, b_sources=sources)
    assert unpaired.test == "Welch t (unpaired), training seeds independent"


@pytest.mark.parametrize("seed", range(10))
def test_seed_paired_bonferroni_interval_agrees_with_adjusted_p(seed):
    a, b = shared_seed_rows(seed, seeds=3, episodes=12, gap=0.01 * seed)
    family = 1 + seed % 4
    sources = ["s0", "s1", "s2"]
    d = difference(a.mean(axis=0), b.mean(axis=0), a.mean(axis=1), b.mean(axis=1), family=family, a_matrix=a,
                   b_matrix=b, a_sources=sources, b_sources=sources)
    assert d.test.endswith("seeds paired") and d.level == pytest.approx(1 - 0.05 / family)
    assert (d.low > 0 or d.high < 0) == (d.p_adjusted < 0.05)


def test_image_pool_counts_distinct_images_and_their_reuse():
    episodes = [np.array([0, 1, 2]), np.array([2, 3]), np.array([3, 3, 4])]  # 3 repeated in one episode: once
    assert image_pool(episodes) == (5, pytest.approx(7 / 5))
    assert image_pool([np.array([[5, 6], [7, 5]])]) == (3, pytest.approx(1.0))  # any shape, flattened
    assert image_pool([np.arange(10)] * 4) == (10, pytest.approx(4.0))
    assert image_pool([]) == (0, 0.0)
