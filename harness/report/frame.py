"""Ranking, apart from rendering: the leaderboard as one table (a pandas DataFrame, one row per
(strategy, shots)) with ranks and the paired tests against the best strategy of each shot setting.
A pure function of the records."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.errors import UsageError
from harness.report.cells import settings_text
from harness.results import Run
from harness.stats import holm, paired_bootstrap_ci, paired_ttest

ALPHA = 0.05  # significance level of the Holm-corrected tests

FRAME_COLUMNS = [
    "shots", "rank", "rank_label", "tied_with_best", "strategy", "code", "family", "status", "reason", "backbone",
    "source_phase", "source_description", "episode_phase", "settings", "accuracy", "ci95", "delta_vs_best",
    "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "robust_accuracy", "robust_ci95", "source_budget_images",
    "source_images_per_second", "source_seconds", "source_cached", "ms_per_episode", "query_images_per_second",
    "peak_memory_mb", "device", "episodes", "episode_fingerprint", "run",
]


def check_episodes(records: list[dict]) -> None:
    """Refuse to rank records of different episodes (or the same strategy twice) against each other."""
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
    seen: dict[tuple[str, int], str] = {}
    for r in records:
        key = (r["strategy"], r["shots"])
        if key in seen:
            raise UsageError(f"{r['strategy']} {r['shots']}-shot is in both {seen[key]} and {r['_run']}; pass "
                             f"each strategy once, or compare the two runs with --compare")
        seen[key] = r["_run"]


def _row(r: dict[str, Any]) -> dict[str, Any]:
    peak = max(r.get("source_peak_memory_mb") or 0, r.get("episode_peak_memory_mb") or 0) or None
    metrics = r.get("metrics") or {}
    row = {k: r.get(k) for k in FRAME_COLUMNS}
    row.update(settings=settings_text(r), peak_memory_mb=peak, run=r["_run"], code=(r.get("code") or {}).get("adapter"),
               robust_accuracy=metrics.get("robust_accuracy"), robust_ci95=metrics.get("robust_ci95"),
               rank=None, rank_label="-", tied_with_best=False, delta_vs_best=None, delta_ci_low=None,
               delta_ci_high=None, p_value=None, p_holm=None)
    if r.get("status") != "ok":
        row.update(accuracy=None, ci95=None)
    return row


def rank_shot(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of one shot setting: paired tests against the best, Holm, ties at rank 1, then the others."""
    ok = sorted((r for r in records if r.get("status") == "ok"), key=lambda r: (-r["accuracy"], r["strategy"]))
    rest = sorted((r for r in records if r.get("status") != "ok"), key=lambda r: r["strategy"])
    rows = {id(r): _row(r) for r in records}
    if not ok:
        return [rows[id(r)] for r in rest]
    best = ok[0]
    best_accs = best.get("episode_accuracies") or []
    pvalues = []
    for r in ok[1:]:
        accs = r.get("episode_accuracies") or []
        row = rows[id(r)]
        row["delta_vs_best"] = r["accuracy"] - best["accuracy"]
        if len(accs) >= 2 and len(accs) == len(best_accs):
            row["p_value"] = paired_ttest(accs, best_accs)[1]
            row["delta_ci_low"], row["delta_ci_high"] = paired_bootstrap_ci(accs, best_accs)
        pvalues.append(math.nan if row["p_value"] is None else row["p_value"])
    for r, p in zip(ok[1:], holm(pvalues), strict=True):
        rows[id(r)]["p_holm"] = None if math.isnan(p) else p
    tied = [best] + [r for r in ok[1:] if rows[id(r)]["p_holm"] is not None and rows[id(r)]["p_holm"] >= ALPHA]
    others = [r for r in ok[1:] if r not in tied]
    for r in tied:
        rows[id(r)].update(rank=1, rank_label="=1" if len(tied) > 1 else "1", tied_with_best=True)
    for i, r in enumerate(others):
        rows[id(r)].update(rank=len(tied) + 1 + i, rank_label=str(len(tied) + 1 + i))
    return [rows[id(r)] for r in tied + others + rest]


def leaderboard_frame(runs: list[Run], names: list[str] | None = None) -> pd.DataFrame:
    """The aggregated table: one row per (strategy, shots), ordered by shots then rank; accuracies,
    CIs and differences as fractions (0..1). Raises UsageError when runs used different episodes."""
    names = names or [f"run{i + 1}" for i in range(len(runs))]
    records = [{**r, "_run": name} for name, (_, _, recs) in zip(names, runs, strict=True) for r in recs]
    check_episodes(records)
    rows: list[dict[str, Any]] = []
    for shots in sorted({r["shots"] for r in records}):
        rows += rank_shot([r for r in records if r["shots"] == shots])
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame
