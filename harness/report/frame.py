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
episodes (Δ, 95% CI, p; no family of comparisons). A row whose record names a ``twin_of`` (a Keras row
running the same algorithm as a PyTorch row) carries its paired difference to that row (``twin_*``). When a
framework-check row (record ``check_of``: the twin's episode phase on the Keras row's pretraining,
strategies/keras_check.py) ran too, the difference splits into the episode phase's framework (``check_*``:
Keras row - check row) and the pretraining's (``pretraining_*``: check row - twin).

Units that config.json names but that have no record are rows with status ``missing`` (harness/report/
expected.py). With several budget scales, the row of each (strategy, shots) at its largest scale carries
the accuracy gain over its second largest scale (harness/report/expected.py ``scale_gains``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.errors import UsageError
from harness.report.cells import RunRecord, missing, record_difference, settings_text, total_flops
from harness.report.expected import MissingUnit, missing_units
from harness.report.scales import scale_gains
from harness.results import RunResults
from harness.schema import Record
from harness.stats import ALPHA, COVERS_EPISODES, COVERS_SEEDS


@dataclass(frozen=True)
class Column:
    """A column of the leaderboard frame: a copy of the record's field of that name (``computed`` False), or
    filled by the report (``_row``, the ranking, the scale gains and the twin differences below)."""

    name: str
    computed: bool


def record(*names: str) -> list[Column]:
    """Columns that copy the record's fields of these names, as loaded."""
    return [Column(name, False) for name in names]


def computed(*names: str) -> list[Column]:
    """Columns the report computes."""
    return [Column(name, True) for name in names]


#: The frame's columns, declared once, in order (the csv and json outputs' layout). Every Record field is either
#: copied here or listed in NOT_COPIED, checked when this module loads, so a new record field cannot silently miss.
FRAME_LAYOUT: tuple[Column, ...] = (
    *record("shots", "budget_scale"),
    *computed("rank", "rank_label", "tied_with_best"),
    *record("strategy"),
    *computed("code", "source_code"),  # the record's code: the adapter's file, the source phase's
    *record("family", "status", "reason", "backbone", "source_phase", "source_description", "episode_phase"),
    *computed("settings"),  # the record's settings, as one line
    *record("accuracy", "ci95", "ci_covers"),
    *computed("replicates"),
    *record("ci_df", "ci_seed_df"),
    *computed("delta_vs_best", "delta_ci_low", "delta_ci_high", "delta_ci_level", "test", "p_value", "p_adjusted",
              "clean_and_robust_accuracy", "clean_and_robust_ci95"),  # the last two: from the record's metrics
    *record("budget_group", "matched_flops", "source_budget_images", "source_images_processed", "source_flops",
            "source_flops_method", "episode_flops"),
    *computed("total_flops"),
    *record("source_images_per_second", "source_seconds", "source_cached", "source_device", "source_peak_memory_mb",
            "ms_per_episode", "query_images_per_second", "episode_peak_memory_mb", "device", "episodes",
            "episode_fingerprint", "novel_images", "image_reuse"),
    *computed("scale_gain", "scale_gain_ci_low", "scale_gain_ci_high", "scale_gain_p", "not_converged", "run",
              "twin",  # the record's twin_of
              "twin_delta", "twin_ci_low", "twin_ci_high", "twin_p", "check", "check_delta", "check_ci_low",
              "check_ci_high", "check_p", "pretraining_delta", "pretraining_ci_low", "pretraining_ci_high",
              "pretraining_p"),
    *record("tuning", "tuning_seconds", "tuning_flops"),  # --tune (harness/tuning.py)
    # beyond accuracy (harness/predictions.py; absent in runs written before per-query predictions were kept)
    *record("predictions", "scores_as", "nll", "nll_ci95"),
    *computed("nll_delta", "nll_ci_low", "nll_ci_high"),
    *record("brier", "brier_ci95"),
    *computed("brier_delta", "brier_ci_low", "brier_ci_high"),
    *record("ece", "ece_ci_low", "ece_ci_high", "confidence", "confidence_ci95", "reliability", "class_accuracy",
            "confusion"),
)
#: Record fields the frame does not copy as they are: the per-episode and per-replicate matrices (behind the
#: tests), the protocol (config.json's), provenance, and the fields computed columns are made of (code, settings,
#: metrics, replicate_accuracies, twin_of; check_of pairs a check row with its Keras row)
NOT_COPIED = frozenset({
    "schema_version", "ways", "queries", "dataset", "seed", "episode_accuracies", "replicate_seeds",
    "replicate_accuracies", "replicate_episode_accuracies", "sealed_batches", "independence_check", "seal_seconds",
    "metrics", "predictions_sha256", "episode_nll", "episode_brier", "source_keys", "source_params",
    "source_metrics", "params", "settings", "twin_of", "check_of", "episode_seconds", "torch_version", "code",
})
FRAME_COLUMNS = [c.name for c in FRAME_LAYOUT]
RECORD_COLUMNS = [c.name for c in FRAME_LAYOUT if not c.computed]
BEYOND_ACCURACY = tuple(FRAME_COLUMNS[FRAME_COLUMNS.index("predictions"):])
EXTERNAL = "external"  # the family of rows pretrained elsewhere: listed apart, never ranked


def check_layout() -> None:
    """Refuse a frame layout that names a record field the schema lacks, names a column twice, or leaves a record
    field neither copied nor in NOT_COPIED (a field added to the schema must be placed)."""
    fields = {f.name for f in dataclasses.fields(Record)}
    unknown = sorted((set(RECORD_COLUMNS) | NOT_COPIED) - fields)
    unplaced = sorted(fields - set(RECORD_COLUMNS) - NOT_COPIED)
    twice = sorted({n for n in FRAME_COLUMNS if FRAME_COLUMNS.count(n) > 1} | (set(RECORD_COLUMNS) & NOT_COPIED))
    if unknown or unplaced or twice:
        raise TypeError(f"harness/report/frame.py FRAME_LAYOUT: not Record fields {unknown}, Record fields placed "
                        f"nowhere {unplaced} (add them to FRAME_LAYOUT or NOT_COPIED), placed twice {twice}")


check_layout()


def check_episodes(entries: list[RunRecord]) -> None:
    """Refuse to rank records of different episodes (or the same unit twice) against each other."""
    fingerprints: dict[int, dict[str, str]] = {}
    for e in entries:
        if e.record.status == "ok" and e.record.episode_fingerprint:
            fingerprints.setdefault(e.record.shots, {}).setdefault(e.record.episode_fingerprint, e.run)
    for shots, fps in sorted(fingerprints.items()):
        if len(fps) > 1:
            which = ", ".join(f"{fp[:12]} in {run}" for fp, run in fps.items())
            raise UsageError(f"the runs did not use the same {shots}-shot episodes (fingerprints {which}); "
                             f"their accuracies cannot be ranked on paired episodes: rerun with the same "
                             f"--seed/--episodes/--queries/--dataset, or use --compare for an unpaired comparison")
    seen: dict[tuple[str, int, float], str] = {}
    for e in entries:
        r = e.record
        key = (r.strategy, r.shots, r.budget_scale)
        if key in seen:
            scale = "" if key[2] == 1 else f" at budget scale {key[2]:g}"
            raise UsageError(f"{r.strategy} {r.shots}-shot{scale} is in both {seen[key]} and {e.run}; "
                             f"pass each strategy once, or compare the two runs with --compare")
        seen[key] = e.run


def _row(entry: RunRecord) -> dict[str, Any]:
    """A record's frame row before ranking: its copied fields and the columns computed from the record alone."""
    r = entry.record
    metrics, code = r.metrics or {}, r.code or {}
    row: dict[str, Any] = dict.fromkeys(FRAME_COLUMNS)
    row.update({name: getattr(r, name) for name in RECORD_COLUMNS})
    row.update(settings=settings_text(r), run=entry.run, code=code.get("adapter"), source_code=code.get("source"),
               total_flops=total_flops(row), clean_and_robust_accuracy=metrics.get("clean_and_robust_accuracy"),
               clean_and_robust_ci95=metrics.get("clean_and_robust_ci95"),
               replicates=len(r.replicate_accuracies or []) or None, rank_label="-", tied_with_best=False,
               twin=r.twin_of)
    if r.status != "ok":
        row.update(accuracy=None, ci95=None, **dict.fromkeys(BEYOND_ACCURACY))
    return row


def _missing_row(unit: MissingUnit) -> dict[str, Any]:
    """The frame row of a unit without a record: status ``missing``, no measurement."""
    row: dict[str, Any] = dict.fromkeys(FRAME_COLUMNS)
    row.update(strategy=unit.strategy, shots=unit.shots, budget_scale=unit.budget_scale, status=unit.status,
               reason=unit.reason, family=unit.family, run=unit.run, settings="", rank_label="-",
               tied_with_best=False)
    return row


def rank_shot(entries: list[RunRecord], absent: Sequence[MissingUnit] = ()) -> list[dict[str, Any]]:
    """Rows of one (shots, budget scale) group, by accuracy: each compared with the best (Bonferroni over
    the m comparisons); tied with the best when not significantly worse; failed, skipped and missing rows
    (``absent``: units without a record) last. Rows of external pretraining come after the ranked ones,
    unranked, each compared with the best."""
    done = sorted((e for e in entries if e.record.status == "ok"),
                  key=lambda e: (-(e.record.accuracy or 0.0), e.record.strategy))
    ok = [e for e in done if e.record.family != EXTERNAL]
    external = [e for e in done if e.record.family == EXTERNAL]
    rows = {id(e): _row(e) for e in entries}
    rest = sorted([rows[id(e)] for e in entries if e.record.status != "ok"] + [_missing_row(u) for u in absent],
                  key=lambda row: row["strategy"])
    for e in external:
        rows[id(e)]["rank_label"] = EXTERNAL
        if ok:
            best = ok[0].record
            rows[id(e)].update(_compared(e.record, best, "delta_vs_best", "delta_ci_low", "delta_ci_high", "p_value"),
                               delta_ci_level=1 - ALPHA, **score_differences(e.record, best))
    if not ok:
        return [rows[id(e)] for e in external] + rest
    best = ok[0].record
    family = len(ok) - 1
    rows[id(ok[0])].update(rank=1, rank_label="1", tied_with_best=True)
    for position, e in enumerate(ok[1:], start=2):
        r, row = e.record, rows[id(e)]
        row.update(rank=position, rank_label=str(position), delta_vs_best=_gap(r, best),
                   **score_differences(r, best))
        paired = r.episode_fingerprint == best.episode_fingerprint
        d = record_difference(r, best, paired, family)
        if d is None:
            continue
        row.update(delta_vs_best=d.delta, delta_ci_low=d.low, delta_ci_high=d.high, delta_ci_level=d.level,
                   test=d.test, p_value=d.p_raw, p_adjusted=d.p_adjusted)
        if d.p_adjusted >= ALPHA:
            row.update(rank_label="=1", tied_with_best=True)
    if any(rows[id(e)]["tied_with_best"] for e in ok[1:]):
        rows[id(ok[0])]["rank_label"] = "=1"
    return [rows[id(e)] for e in ok + external] + rest


def _gap(a: Record, b: Record) -> float:
    """a's accuracy minus b's (both successful records)."""
    return (a.accuracy or 0.0) - (b.accuracy or 0.0)


def _compared(a: Record, b: Record, *keys: str) -> dict[str, Any]:
    """a - b on the shared episodes (one comparison, 95% CI) as {delta, low, high, p} under ``keys``."""
    d = record_difference(a, b, a.episode_fingerprint == b.episode_fingerprint, 1)
    values = (_gap(a, b), None, None, None) if d is None else (d.delta, d.low, d.high, d.p_raw)
    return dict(zip(keys, values, strict=True))


def score_differences(a: Record, b: Record) -> dict[str, Any]:
    """``nll_delta`` / ``nll_ci_low`` / ``nll_ci_high`` and the same for ``brier``: a's proper score minus b's,
    paired on the shared episodes (and by training seed as for accuracy), one comparison at 95% each; absent
    when either record lacks the per-episode scores (written before predictions were kept)."""
    out: dict[str, Any] = {}
    paired = a.episode_fingerprint == b.episode_fingerprint
    for name in ("nll", "brier"):
        if getattr(a, f"episode_{name}") and getattr(b, f"episode_{name}"):
            d = record_difference(a, b, paired, 1, f"episode_{name}")
            if d is not None:
                out.update({f"{name}_delta": d.delta, f"{name}_ci_low": d.low, f"{name}_ci_high": d.high})
    return out


def twin_differences(entries: list[RunRecord], where: dict[tuple, dict[str, Any]]) -> None:
    """Fill the ``twin_*`` columns: each row whose record names a PyTorch twin (``twin_of``), minus that twin, on
    the shared episodes; and, when a framework-check row of it (``check_of``) ran, the ``check_*`` and
    ``pretraining_*`` columns."""
    done = {(e.record.strategy, e.record.shots, e.record.budget_scale): e for e in entries if e.record.status == "ok"}
    checks = {(e.record.check_of, shots, scale): e.record for (_, shots, scale), e in done.items()
              if e.record.check_of}
    for (name, shots, scale), e in done.items():
        twin = done.get((e.record.twin_of or "", shots, scale))
        if twin is None:
            continue
        row = where[(e.run, name, shots, scale)]
        row.update(_compared(e.record, twin.record, "twin_delta", "twin_ci_low", "twin_ci_high", "twin_p"))
        check = checks.get((name, shots, scale))  # the twin's episode phase on this row's Keras pretraining
        if check is not None:
            row.update(check=check.strategy, **_compared(e.record, check, "check_delta", "check_ci_low",
                                                         "check_ci_high", "check_p"),
                       **_compared(check, twin.record, "pretraining_delta", "pretraining_ci_low",
                                   "pretraining_ci_high", "pretraining_p"))


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


def leaderboard_frame(runs: list[RunResults], names: list[str] | None = None) -> pd.DataFrame:
    """The aggregated table: one row per (strategy, shots, budget scale), ordered by shots, then budget
    scale (largest first), then rank; accuracies, CIs and differences as fractions (0..1). Units named by
    config.json without a record are rows with status ``missing``. Raises UsageError when runs used
    different episodes."""
    names = names or [f"run{i + 1}" for i in range(len(runs))]
    entries = [RunRecord(name, r) for name, run in zip(names, runs, strict=True) for r in run.records]
    check_episodes(entries)
    absent = missing_units(runs, names)
    keys = {(e.record.shots, e.record.budget_scale) for e in entries} | {(u.shots, u.budget_scale) for u in absent}
    rows: list[dict[str, Any]] = []
    for shots, scale in sorted(keys, key=lambda g: (g[0], -g[1])):
        rows += rank_shot([e for e in entries if (e.record.shots, e.record.budget_scale) == (shots, scale)],
                          [u for u in absent if (u.shots, u.budget_scale) == (shots, scale)])
    where = {(row["run"], row["strategy"], row["shots"], row["budget_scale"]): row for row in rows}
    for (run, strategy, shots, scale), gain in scale_gains(entries).items():
        where[(run, strategy, shots, scale)].update(gain)
    twin_differences(entries, where)
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame
