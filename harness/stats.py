"""The statistics of the leaderboard, on ``scipy.stats``, with what each interval covers spelled out.

Accuracy of one strategy (:func:`accuracy_interval`):

- one trained model (a per-episode vector, or ``replicates = 1``): mean over episodes ± t(0.975, E-1) ·
  s / √E, s the standard deviation of the per-episode accuracies with ddof = 1. It covers the sampling of
  episodes only.
- S ≥ 2 training seeds evaluated on the same E episodes (an S x E matrix): a two-way crossed design
  without replication (seed x episode). The estimate is the grand mean; with the mean squares of seeds,
  episodes and their interaction (MS_S, MS_E, MS_SE), the variance of the grand mean is
  (MS_S + MS_E - MS_SE) / (S·E) (= σ²_S / S + σ²_E / E + σ²_SE / (S·E)), with Satterthwaite degrees of
  freedom (MS_S + MS_E - MS_SE)² / (MS_S² / (S-1) + MS_E² / (E-1) + MS_SE² / ((S-1)(E-1))), floored at
  min(S-1, E-1) and at 1. When MS_S + MS_E - MS_SE ≤ 0 it falls back to the two-component form
  SE² = s²_train / S + s²_episodes / E (s²_train the variance of the replicate means, s²_episodes that of
  the replicate-averaged per-episode accuracies; = (MS_S + MS_E) / (S·E)) with Welch-Satterthwaite degrees
  of freedom. That two-component form is also what the older call with the averaged per-episode
  accuracies and the replicate means (no matrix) computes. It covers training seeds and episode sampling:
  the sampling of episodes from this pool of novel images, and of training seeds; not other images of
  these classes.

Difference of a strategy from another (:func:`difference`), paired on shared episodes. When both rows
have replicates on the same pretrained models seed by seed (equal source keys, e.g. two adapters on the
same supervised models), the difference is paired by seed too: the S x E matrix of differences gets the
crossed-design interval above ("seeds paired"), so a seed effect both rows share cancels. Otherwise the
training seeds of the two rows are independent: the training variance of each strategy (when both have
replicates) is added to the episode variance of the per-episode differences. With ``family`` comparisons
the interval is at the Bonferroni level 1 - α / family and the p-value is multiplied by ``family``, both
from one t statistic, so the interval excludes zero exactly when the adjusted p-value is below α: the
table's CI and its ties never disagree. Unpaired (different episodes): Welch's test on the two accuracy
estimates.
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
    df: float  # degrees of freedom of the t interval (Satterthwaite with training seeds)
    seed_df: int | None  # degrees of freedom of the training-seed term (S - 1), None for one model


COVERS_EPISODES = "episode sampling only, for one trained model per strategy"
COVERS_SEEDS = "training seeds and episode sampling"


@dataclass(frozen=True)
class Crossed:
    """The two-way crossed seed x episode design without replication, on an S x E matrix."""

    estimate: float  # grand mean
    ms_seeds: float
    ms_episodes: float
    ms_interaction: float
    variance: float  # variance of the grand mean
    df: float
    fallback: bool  # True: MS_S + MS_E - MS_SE <= 0, the two-component (Welch-Satterthwaite) form was used


def crossed(matrix: np.ndarray) -> Crossed:
    """Variance of the grand mean of an S x E matrix (S, E ≥ 2) and its degrees of freedom (module docstring)."""
    x = np.asarray(matrix, dtype=np.float64)
    s, e = x.shape
    if s < 2 or e < 2:
        raise ValueError(f"the crossed design needs at least 2 seeds and 2 episodes, not {s} x {e}")
    grand = float(x.mean())
    seed_means, episode_means = x.mean(axis=1), x.mean(axis=0)
    ms_s = e * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    ms_e = s * float(((episode_means - grand) ** 2).sum()) / (e - 1)
    residual = x - seed_means[:, None] - episode_means[None, :] + grand
    ms_se = float((residual**2).sum()) / ((s - 1) * (e - 1))
    combined = ms_s + ms_e - ms_se
    floor = max(1, min(s - 1, e - 1))
    if combined > 0:
        df = combined**2 / (ms_s**2 / (s - 1) + ms_e**2 / (e - 1) + ms_se**2 / ((s - 1) * (e - 1)))
        return Crossed(grand, ms_s, ms_e, ms_se, combined / (s * e), max(float(df), float(floor)), False)
    components = [(ms_s / (s * e), s - 1), (ms_e / (s * e), e - 1)]  # s²(seed means) / S, s²(episode means) / E
    var = sum(v for v, _ in components)
    df = var**2 / sum(v**2 / d for v, d in components if v > 0) if var > 0 else float(floor)
    return Crossed(grand, ms_s, ms_e, ms_se, var, float(df), True)


def _t_half(var: float, df: float, level: float) -> float:
    return float(scipy.stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(var) if var > 0 else 0.0


def accuracy_interval(episode_accuracies: Sequence[float] | np.ndarray,
                      replicate_accuracies: Sequence[float] = ()) -> Interval:
    """The 95% interval of a strategy's accuracy (see the module docstring).

    ``episode_accuracies``: a per-episode vector (one trained model, or the replicate-averaged accuracies
    together with ``replicate_accuracies``, the replicate means: the two-component form), or an S x E
    matrix of S training-seed replicates on the same E episodes (``replicate_accuracies`` is then unused)."""
    values = np.asarray(episode_accuracies, dtype=np.float64)
    if values.ndim == 2:
        if values.shape[0] == 1:
            values = values[0]
        elif values.shape[1] < 2:  # one episode: the seeds are the only replication
            if values.shape[1] == 0:
                raise ValueError("no episode accuracies")
            seeds = values[:, 0]
            var, df = _var_mean(seeds)
            return Interval(float(seeds.mean()), _t_half(var, df, 0.95), COVERS_SEEDS, float(df), df)
        else:
            design = crossed(values)
            s = values.shape[0]
            return Interval(design.estimate, _t_half(design.variance, design.df, 0.95), COVERS_SEEDS, design.df,
                            s - 1)
    elif values.ndim != 1:
        raise ValueError(f"episode accuracies must be a vector or a seeds x episodes matrix, not {values.ndim}-D")
    replicates = np.asarray(replicate_accuracies, dtype=np.float64)
    if replicates.size >= 2:
        estimate = float(replicates.mean())
        components = [_var_mean(replicates), _var_mean(values)]
        half, _, df = _t_interval(estimate, components, 0.95)
        if not math.isfinite(df):
            df = float(max(1, min(d for _, d in components)))
        return Interval(estimate, half, COVERS_SEEDS, float(df), replicates.size - 1)
    return Interval(float(values.mean()), ci95(values), COVERS_EPISODES, float(values.size - 1), None)


def image_pool(episode_images: Sequence[np.ndarray]) -> tuple[int, float]:
    """(distinct images, average number of episodes each distinct image appears in), from each episode's
    pool indices (supports and queries); an index repeated within one episode counts once there."""
    per_episode = [np.unique(np.asarray(ix).ravel()) for ix in episode_images]
    if not per_episode or not any(ix.size for ix in per_episode):
        return 0, 0.0
    distinct = int(np.unique(np.concatenate(per_episode)).size)
    return distinct, sum(ix.size for ix in per_episode) / distinct


@dataclass(frozen=True)
class Difference:
    """``a - b`` with its interval at level ``level`` and p-values (raw, and adjusted for the family)."""

    delta: float
    low: float
    high: float
    p_raw: float
    p_adjusted: float
    level: float
    test: str  # "paired t", "paired t, seeds paired", "paired t, training seeds independent", "Welch t (unpaired)"


SEEDS_PAIRED = "seeds paired"
SEEDS_INDEPENDENT = "training seeds independent"


def _seed_matrices(a_matrix: Sequence[Sequence[float]] | np.ndarray | None,
                   b_matrix: Sequence[Sequence[float]] | np.ndarray | None,
                   a_sources: Sequence[str] | None, b_sources: Sequence[str] | None) -> np.ndarray | None:
    """The S x E matrix of a - b when the two rows can be paired by seed (same pretrained model per seed,
    S ≥ 2, the same shape), else None."""
    if a_matrix is None or b_matrix is None or a_sources is None or b_sources is None:
        return None
    a, b = np.asarray(a_matrix, dtype=np.float64), np.asarray(b_matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] < 2 or a.shape[1] < 2:
        return None
    if list(a_sources) != list(b_sources) or len(a_sources) != a.shape[0]:
        return None
    return a - b


def _result(delta: float, var: float, df: float, test: str, family: int, alpha: float) -> Difference:
    level = 1 - alpha / max(1, family)
    se = math.sqrt(var) if var > 0 else 0.0
    half = _t_half(var, df, level)
    if se == 0:
        p = 1.0 if delta == 0 else 0.0
    else:
        p = float(2 * scipy.stats.t.sf(abs(delta) / se, df))
    return Difference(delta, delta - half, delta + half, p, min(1.0, p * max(1, family)), level, test)


def difference(a_episodes: Sequence[float], b_episodes: Sequence[float], a_replicates: Sequence[float] = (),
               b_replicates: Sequence[float] = (), paired: bool = True, family: int = 1,
               alpha: float = ALPHA, *, a_matrix: Sequence[Sequence[float]] | np.ndarray | None = None,
               b_matrix: Sequence[Sequence[float]] | np.ndarray | None = None,
               a_sources: Sequence[str] | None = None, b_sources: Sequence[str] | None = None) -> Difference | None:
    """a - b, tested; None when there are too few episodes to say anything (fewer than 2).

    ``a_matrix`` / ``b_matrix``: each row's S x E replicate x episode accuracies; ``a_sources`` /
    ``b_sources``: the source model (cache key) of each replicate. When the episodes are shared, both have
    S ≥ 2 replicates and the sources are equal seed by seed, the difference is paired by seed: the
    crossed-design interval of the S x E matrix of differences. Otherwise the seeds of the two rows count as
    independent."""
    a, b = np.asarray(a_episodes, dtype=np.float64), np.asarray(b_episodes, dtype=np.float64)
    ra, rb = np.asarray(a_replicates, dtype=np.float64), np.asarray(b_replicates, dtype=np.float64)
    if paired:
        diff = _seed_matrices(a_matrix, b_matrix, a_sources, b_sources)
        if diff is not None:
            design = crossed(diff)
            return _result(design.estimate, design.variance, design.df, f"paired t, {SEEDS_PAIRED}", family, alpha)
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
        test += f", {SEEDS_INDEPENDENT}"
    else:
        delta = float(a.mean() - b.mean())
    level = 1 - alpha / max(1, family)
    half, se, df = _t_interval(delta, components, level)
    if se == 0:
        p = 1.0 if delta == 0 else 0.0
    else:
        p = float(2 * scipy.stats.t.sf(abs(delta) / se, df))
    return Difference(delta, delta - half, delta + half, p, min(1.0, p * max(1, family)), level, test)
