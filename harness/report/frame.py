"""Ranking, apart from rendering: the leaderboard as one table (a pandas DataFrame, one row per
(strategy, shots, budget scale)) with ranks and the tests against the best strategy of each (shots, scale)
group. A pure function of the run directories' files.

Rows are ranked by accuracy within each (shots, budget scale). Each is compared with the best of its group
on the shared episodes (harness/stats.py ``difference``; by training seed too when both rows have replicates
of the same source models): Δ with its confidence interval at the Bonferroni
level 1 - 0.05 / m (m comparisons with the best) and the Bonferroni-adjusted p-value from the same t
statistic. A row is tied with the best ("=1") when that p-value is at least 0.05, which is exactly when its
interval holds 0.

Rows of family ``external`` (a model pretrained elsewhere, whose pretraining data may hold the novel classes)
are not ranked: rank label ``external``, each compared with the best ranked row of its group on the shared
episodes (Δ, 95% CI, p; no family of comparisons). A row whose settings name a ``PyTorch twin`` (a Keras row
running the same algorithm as a PyTorch row) carries its paired difference to that row (``twin_*``). When a
framework-check row (settings ``episode phase of``: the twin's episode phase on the Keras row's pretraining,
strategies/keras_check.py) ran too, the difference splits into the episode phase's framework (``check_*``:
Keras row - check row) and the pretraining's (``pretraining_*``: check row - twin).

Units that config.json names but that have no record are rows with status ``missing`` (harness/report/
expected.py). With several budget scales, the row of each (strategy, shots) at its largest scale carries
the accuracy gain over its second largest scale (harness/report/expected.py ``scale_gains``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.errors import UsageError
from harness.report.cells import missing, record_difference, scale_key, settings_text, total_flops
from harness.report.expected import missing_records
from harness.report.scales import scale_gains
from harness.results import Run
from harness.stats import ALPHA, COVERS_EPISODES, COVERS_SEEDS

FRAME_COLUMNS = [
    "shots", "budget_scale", "rank", "rank_label", "tied_with_best", "strategy", "code", "source_code", "family",
    "status", "reason", "backbone", "source_phase", "source_description", "episode_phase", "settings", "accuracy",
    "ci95", "ci_covers", "replicates", "ci_df", "ci_seed_df", "delta_vs_best", "delta_ci_low", "delta_ci_high",
    "delta_ci_level", "test", "p_value", "p_adjusted", "clean_and_robust_accuracy", "clean_and_robust_ci95",
    "budget_group", "matched_flops", "source_budget_images", "source_images_processed", "source_flops",
    "source_flops_method", "episode_flops", "total_flops", "source_images_per_second", "source_seconds",
    "source_cached", "source_device", "source_peak_memory_mb", "ms_per_episode", "query_images_per_second",
    "episode_peak_memory_mb", "device", "episodes", "episode_fingerprint", "novel_images", "image_reuse",
    "scale_gain", "scale_gain_ci_low", "scale_gain_ci_high", "scale_gain_p", "not_converged", "run", "twin",
    "twin_delta", "twin_ci_low", "twin_ci_high", "twin_p", "check", "check_delta", "check_ci_low", "check_ci_high",
    "check_p", "pretraining_delta", "pretraining_ci_low", "pretraining_ci_high", "pretraining_p",
    "tuning", "tuning_seconds", "tuning_flops",  # --tune (harness/tuning.py)
    # beyond accuracy (harness/predictions.py; absent in runs written before per-query predictions were kept)
    "predictions", "scores_as", "nll", "nll_ci95", "nll_delta", "nll_ci_low", "nll_ci_high", "brier", "brier_ci95",
    "brier_delta", "brier_ci_low", "brier_ci_high", "ece", "ece_ci_low", "ece_ci_high", "confidence",
    "confidence_ci95", "reliability", "class_accuracy", "confusion",
]
BEYOND_ACCURACY = tuple(FRAME_COLUMNS[FRAME_COLUMNS.index("predictions"):])
EXTERNAL = "external"  # the family of rows pretrained elsewhere: listed apart, never ranked
TWIN = "PyTorch twin"  # the settings entry naming the PyTorch row a Keras row mirrors
CHECK = "episode phase of"  # the settings entry of a framework-check row naming the Keras row it checks


def check_episodes(records: list[dict]) -> None:
    """Refuse to rank records of different episodes (or the same unit twice) against each other."""
    fingerprints: dict[int, dict[str, str]] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("episode_fingerprint"):
            fingerprints.setdefault(r["shots"], {}).setdefault(r["episode_fingerprint"], r["_run"])
    for shots, fps in sorted(fingerprints.items()):
        if len(fps) > 1:
            which = ", ".join(f"{fp[:12]} in {run}" for fp, run in fps.items())
            raise UsageError(f"the runs did not use the same {shots}-shot episodes (fingerprints {which}); "
                             f"their accuracies cannot be ranked on paired episodes: rerun with the same "
                             f"--seed/--episodes/--queries/--dataset, or use --compare for an unpaired comparison")
    seen: dict[tuple[str, int, float], str] = {}
    for r in records:
        key = (r["strategy"], r["shots"], scale_key(r.get("budget_scale")))
        if key in seen:
            scale = "" if key[2] == 1 else f" at budget scale {key[2]:g}"
            raise UsageError(f"{r['strategy']} {r['shots']}-shot{scale} is in both {seen[key]} and {r['_run']}; "
                             f"pass each strategy once, or compare the two runs with --compare")
        seen[key] = r["_run"]


def _row(r: dict[str, Any]) -> dict[str, Any]:
    metrics = r.get("metrics") or {}
    code = r.get("code") or {}
    row = {k: r.get(k) for k in FRAME_COLUMNS}
    row.update(settings=settings_text(r), run=r["_run"], code=code.get("adapter"), source_code=code.get("source"),
               budget_scale=scale_key(r.get("budget_scale")), total_flops=total_flops(r),
               clean_and_robust_accuracy=metrics.get("clean_and_robust_accuracy"),
               clean_and_robust_ci95=metrics.get("clean_and_robust_ci95"),
               replicates=len(r.get("replicate_accuracies") or []) or None, rank=None, rank_label="-",
               tied_with_best=False, delta_vs_best=None, delta_ci_low=None, delta_ci_high=None, delta_ci_level=None,
               test=None, p_value=None, p_adjusted=None, scale_gain=None, scale_gain_ci_low=None,
               scale_gain_ci_high=None, scale_gain_p=None, not_converged=None,
               twin=(r.get("settings") or {}).get(TWIN), twin_delta=None, twin_ci_low=None, twin_ci_high=None,
               twin_p=None, check=None, check_delta=None, check_ci_low=None, check_ci_high=None, check_p=None,
               pretraining_delta=None, pretraining_ci_low=None, pretraining_ci_high=None, pretraining_p=None)
    if r.get("status") != "ok":
        row.update(accuracy=None, ci95=None, **dict.fromkeys(BEYOND_ACCURACY))
    return row


def rank_shot(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of one (shots, budget scale) group, by accuracy: each compared with the best (Bonferroni over
    the m comparisons); tied with the best when not significantly worse; failed, skipped and missing rows
    last. Rows of external pretraining come after the ranked ones, unranked, each compared with the best."""
    done = sorted((r for r in records if r.get("status") == "ok"), key=lambda r: (-r["accuracy"], r["strategy"]))
    ok = [r for r in done if r.get("family") != EXTERNAL]
    external = [r for r in done if r.get("family") == EXTERNAL]
    rest = sorted((r for r in records if r.get("status") != "ok"), key=lambda r: r["strategy"])
    rows = {id(r): _row(r) for r in records}
    for r in external:
        rows[id(r)]["rank_label"] = EXTERNAL
        if ok:
            rows[id(r)].update(_compared(r, ok[0], "delta_vs_best", "delta_ci_low", "delta_ci_high", "p_value"),
                               delta_ci_level=1 - ALPHA, **score_differences(r, ok[0]))
    if not ok:
        return [rows[id(r)] for r in external + rest]
    best = ok[0]
    family = len(ok) - 1
    rows[id(best)].update(rank=1, rank_label="1", tied_with_best=True)
    for position, r in enumerate(ok[1:], start=2):
        row = rows[id(r)]
        row.update(rank=position, rank_label=str(position), delta_vs_best=r["accuracy"] - best["accuracy"],
                   **score_differences(r, best))
        paired = r.get("episode_fingerprint") == best.get("episode_fingerprint")
        d = record_difference(r, best, paired, family)
        if d is None:
            continue
        row.update(delta_vs_best=d.delta, delta_ci_low=d.low, delta_ci_high=d.high, delta_ci_level=d.level,
                   test=d.test, p_value=d.p_raw, p_adjusted=d.p_adjusted)
        if d.p_adjusted >= ALPHA:
            row.update(rank_label="=1", tied_with_best=True)
    if any(rows[id(r)]["tied_with_best"] for r in ok[1:]):
        rows[id(best)]["rank_label"] = "=1"
    return [rows[id(r)] for r in ok + external + rest]


def _compared(a: dict[str, Any], b: dict[str, Any], *keys: str) -> dict[str, Any]:
    """a - b on the shared episodes (one comparison, 95% CI) as {delta, low, high, p} under ``keys``."""
    paired = a.get("episode_fingerprint") == b.get("episode_fingerprint")
    d = record_difference(a, b, paired, 1)
    values = (a["accuracy"] - b["accuracy"], None, None, None) if d is None else (d.delta, d.low, d.high, d.p_raw)
    return dict(zip(keys, values, strict=True))


def score_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``nll_delta`` / ``nll_ci_low`` / ``nll_ci_high`` and the same for ``brier``: a's proper score minus b's,
    paired on the shared episodes (and by training seed as for accuracy), one comparison at 95% each; absent
    when either record lacks the per-episode scores (written before predictions were kept)."""
    out: dict[str, Any] = {}
    paired = a.get("episode_fingerprint") == b.get("episode_fingerprint")
    for name in ("nll", "brier"):
        if a.get(f"episode_{name}") and b.get(f"episode_{name}"):
            d = record_difference(a, b, paired, 1, f"episode_{name}")
            if d is not None:
                out.update({f"{name}_delta": d.delta, f"{name}_ci_low": d.low, f"{name}_ci_high": d.high})
    return out


def twin_differences(records: list[dict[str, Any]], where: dict[tuple, dict[str, Any]]) -> None:
    """Fill the ``twin_*`` columns: each row naming a PyTorch twin, minus that twin, on the shared episodes."""
    done = {(r["strategy"], r["shots"], scale_key(r.get("budget_scale"))): r for r in records
            if r.get("status") == "ok"}
    checks = {((r.get("settings") or {}).get(CHECK), shots, scale): r for (_, shots, scale), r in done.items()
              if (r.get("settings") or {}).get(CHECK)}
    for (name, shots, scale), r in done.items():
        twin = done.get(((r.get("settings") or {}).get(TWIN), shots, scale))
        if twin is None:
            continue
        row = where[(r["_run"], name, shots, scale)]
        row.update(_compared(r, twin, "twin_delta", "twin_ci_low", "twin_ci_high", "twin_p"))
        check = checks.get((name, shots, scale))  # the twin's episode phase on this row's Keras pretraining
        if check is not None:
            row.update(check=check["strategy"], **_compared(r, check, "check_delta", "check_ci_low", "check_ci_high",
                                                            "check_p"),
                       **_compared(check, twin, "pretraining_delta", "pretraining_ci_low", "pretraining_ci_high",
                                   "pretraining_p"))


def ci_coverage(frame: pd.DataFrame) -> str:
    """What the intervals of a leaderboard cover, in words (for the report header)."""
    covers = set(frame["ci_covers"].dropna())
    if covers == {COVERS_SEEDS}:
        return COVERS_SEEDS
    if covers <= {COVERS_EPISODES}:
        return COVERS_EPISODES
    return "training seeds and episode sampling for rows with replicates, episode sampling only for the others"


def _distinct(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if not missing(v)))


def _replicated(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[frame["status"] == "ok"]
    return ok[[not missing(n) and n >= 2 for n in ok["replicates"]]]


def ci_scope(frame: pd.DataFrame) -> str:
    """What the intervals cover, in numbers, as a sentence (for the report header): the distinct novel images
    behind each shot setting's episodes and how often each is reused (records' ``novel_images``,
    ``image_reuse``, when recorded), and the training seeds with their degrees of freedom for rows with
    replicates."""
    ok = frame[frame["status"] == "ok"]
    pools = []
    for shots in sorted(ok["shots"].unique().tolist()):
        rows = ok[ok["shots"] == shots]
        images = _distinct(rows["novel_images"].tolist())
        if not images:
            continue
        reuse = _distinct([round(float(v), 1) for v in rows["image_reuse"] if not missing(v)])
        pools.append(f"{' / '.join(f'{int(n):,}' for n in images)} distinct novel images at {shots}-shot"
                     + (f" (each used in {' / '.join(f'{r:g}' for r in reuse)} episodes on average)" if reuse else ""))
    text = "episode sampling from " + ("; ".join(pools) if pools else "this run's pool of novel images")
    replicated = _replicated(frame)
    if not replicated.empty:
        seeds = sorted({int(n) for n in replicated["replicates"]})
        seed_df = sorted({int(d) if not missing(d) else int(n) - 1
                          for n, d in zip(replicated["replicates"], replicated["ci_seed_df"], strict=True)})
        where = " and " if len(replicated) == len(ok) else " and, for rows with replicates, "
        text += (f"{where}{' / '.join(map(str, seeds))} training seeds (seed df "
                 f"{' / '.join(map(str, seed_df))})")
    return ("In numbers, it covers " if pools else "It covers ") + text + "; not other images of these classes."


def replicate_ci_text(frame: pd.DataFrame) -> str:
    """How the interval of rows with replicates is computed, with its degrees of freedom (report header);
    empty without replicates."""
    replicated = _replicated(frame)
    if replicated.empty:
        return ""
    seed_df = sorted({int(d) if not missing(d) else int(n) - 1
                      for n, d in zip(replicated["replicates"], replicated["ci_seed_df"], strict=True)})
    dfs = [float(d) for d in replicated["ci_df"] if not missing(d)]
    seeds = f"seed df = replicates − 1 = {' / '.join(map(str, seed_df))}"
    two_components = ("s²(replicate means) / seeds + s²(replicate-averaged episode accuracies) / episodes with "
                      "Welch-Satterthwaite df")
    if not dfs:
        return (f"With replicates these records (schema 3, no replicate × episode matrix) give the CI the variance "
                f"{two_components}; {seeds}.")
    low, high = min(dfs), max(dfs)
    text = ("With replicates, each row's training seeds × episodes accuracies form a crossed design: the CI is the "
            "t interval of the grand mean with variance (MS seeds + MS episodes − MS interaction) / (seeds × "
            "episodes) and Satterthwaite degrees of freedom, at least min(seed df, episodes − 1); "
            f"{seeds}; the intervals' df here: {low:.1f}" + (f" to {high:.1f}." if high - low >= 0.05 else "."))
    if len(dfs) < len(replicated):
        text += f" Rows recorded without the replicate × episode matrix (schema 3) use {two_components}."
    return text


def leaderboard_frame(runs: list[Run], names: list[str] | None = None) -> pd.DataFrame:
    """The aggregated table: one row per (strategy, shots, budget scale), ordered by shots, then budget
    scale (largest first), then rank; accuracies, CIs and differences as fractions (0..1). Units named by
    config.json without a record are rows with status ``missing``. Raises UsageError when runs used
    different episodes."""
    names = names or [f"run{i + 1}" for i in range(len(runs))]
    records = [{**r, "_run": name} for name, (_, _, recs) in zip(names, runs, strict=True) for r in recs]
    check_episodes(records)
    records += missing_records(runs, names)
    rows: list[dict[str, Any]] = []
    groups = sorted({(r["shots"], scale_key(r.get("budget_scale"))) for r in records}, key=lambda g: (g[0], -g[1]))
    for shots, scale in groups:
        rows += rank_shot([r for r in records if r["shots"] == shots and scale_key(r.get("budget_scale")) == scale])
    where = {(row["run"], row["strategy"], row["shots"], row["budget_scale"]): row for row in rows}
    for (run, strategy, shots, scale), gain in scale_gains(records).items():
        where[(run, strategy, shots, scale)].update(gain)
    twin_differences(records, where)
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame
