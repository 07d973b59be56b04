"""The statistics of the leaderboard, on ``scipy.stats``, with what each interval covers spelled out.

Accuracy of one strategy (:func:`accuracy_interval`):

- one trained model (``replicates = 1``): mean over episodes ± t(0.975, E-1) · s / √E, s the standard
  deviation of the per-episode accuracies with ddof = 1. It covers the sampling of episodes only.
- N ≥ 2 training seeds evaluated on the same episodes: the mean of the replicate means ± t · SE with
  SE² = s²_train / N + s²_episodes / E, s²_train the variance of the replicate means and s²_episodes that
  of the replicate-averaged per-episode accuracies, and Welch-Satterthwaite degrees of freedom. It covers
  training seeds and episode sampling.

Difference of a strategy from another (:func:`difference`), paired on shared episodes: the same two
components for the difference (training variance of each strategy when both have replicates, episode
variance of the per-episode differences). With ``family`` comparisons the interval is at the Bonferroni
level 1 - α / family and the p-value is multiplied by ``family``, both from one t statistic, so the
interval excludes zero exactly when the adjusted p-value is below α: the table's CI and its ties never
disagree. Unpaired (different episodes): Welch's test on the two accuracy estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

ALPHA = 0.05


def _var_mean(values: np.ndarray) -> tuple[float, int]:
    """(variance of the mean, degrees of freedom) of a sample, ddof = 1."""
    n = values.size
    return (float(values.var(ddof=1)) / n if n >= 2 else 0.0), n - 1


def _t_interval(estimate: float, components: list[tuple[float, int]], level: float) -> tuple[float, float, float]:
    """(half-width, t statistic denominator se, df) for an estimate with independent variance components
    (variance of the estimate, df); Welch-Satterthwaite df."""
    var = sum(v for v, _ in components)
    if var <= 0:
        return 0.0, 0.0, math.inf
    df = var**2 / sum(v**2 / d for v, d in components if v > 0 and d > 0)
    se = math.sqrt(var)
    return float(scipy.stats.t.ppf(0.5 + level / 2, df)) * se, se, df


def ci95(accuracies: Sequence[float]) -> float:
    """Half-width of the 95% t interval of a mean over episodes (ddof = 1); 0 for fewer than 2 values."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size < 2:
        return 0.0
    return _t_interval(float(values.mean()), [_var_mean(values)], 0.95)[0]


@dataclass(frozen=True)
class Interval:
    estimate: float
    half_width: float
    covers: str  # what the interval covers, for records and report headers


COVERS_EPISODES = "episode sampling only, for one trained model per strategy"
COVERS_SEEDS = "training seeds and episode sampling"


def accuracy_interval(episode_accuracies: Sequence[float], replicate_accuracies: Sequence[float] = ()) -> Interval:
    """The 95% interval of a strategy's accuracy (see the module docstring)."""
    episodes = np.asarray(episode_accuracies, dtype=np.float64)
    replicates = np.asarray(replicate_accuracies, dtype=np.float64)
    if replicates.size >= 2:
        estimate = float(replicates.mean())
        half, _, _ = _t_interval(estimate, [_var_mean(replicates), _var_mean(episodes)], 0.95)
        return Interval(estimate, half, COVERS_SEEDS)
    return Interval(float(episodes.mean()), ci95(episodes), COVERS_EPISODES)


@dataclass(frozen=True)
class Difference:
    """``a - b`` with its interval at level ``level`` and p-values (raw, and adjusted for the family)."""

    delta: float
    low: float
    high: float
    p_raw: float
    p_adjusted: float
    level: float
    test: str  # "paired t", "paired t, training seeds", "Welch t (unpaired)"


def difference(a_episodes: Sequence[float], b_episodes: Sequence[float], a_replicates: Sequence[float] = (),
               b_replicates: Sequence[float] = (), paired: bool = True, family: int = 1,
               alpha: float = ALPHA) -> Difference | None:
    """a - b, tested; None when there are too few episodes to say anything (fewer than 2)."""
    a, b = np.asarray(a_episodes, dtype=np.float64), np.asarray(b_episodes, dtype=np.float64)
    ra, rb = np.asarray(a_replicates, dtype=np.float64), np.asarray(b_replicates, dtype=np.float64)
    seeds = ra.size >= 2 and rb.size >= 2
    if paired:
        if a.size != b.size or a.size < 2:
            return None
        components = [_var_mean(a - b)]
        test = "paired t"
    else:
        if a.size < 2 or b.size < 2:
            return None
        components = [_var_mean(a), _var_mean(b)]
        test = "Welch t (unpaired)"
    if seeds:
        delta = float(ra.mean() - rb.mean())
        components += [_var_mean(ra), _var_mean(rb)]
        test += ", training seeds"
    else:
        delta = float(a.mean() - b.mean())
    level = 1 - alpha / max(1, family)
    half, se, df = _t_interval(delta, components, level)
    if se == 0:
        p = 1.0 if delta == 0 else 0.0
    else:
        p = float(2 * scipy.stats.t.sf(abs(delta) / se, df))
    return Difference(delta, delta - half, delta + half, p, min(1.0, p * max(1, family)), level, test)


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test of mean(a - b) = 0 (scipy.stats.ttest_rel); identical
    samples give t = 0 and p = 1 (scipy: nan)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        return math.nan, math.nan
    if np.all(d == d[0]):
        return (0.0, 1.0) if d[0] == 0 else (math.copysign(math.inf, d[0]), 0.0)
    result = scipy.stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def welch_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of Welch's unequal-variance t-test (scipy.stats.ttest_ind, equal_var=False)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return math.nan, math.nan
    if a.var() + b.var() == 0:
        diff = float(a.mean() - b.mean())
        return (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    result = scipy.stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)
