"""Run B against run A, strategy by strategy: accuracy change (paired t-test on shared episodes, else
Welch's unpaired test; training seeds included when both runs have replicates), with intervals at the
Bonferroni level and Bonferroni-adjusted p-values over all rows, so an interval excludes zero exactly when
the change is marked significant; and throughput ratios B / A. A pure function of the records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.errors import UsageError
from harness.registry import REPORT_FORMATS
from harness.report.cells import (
    cell,
    level_text,
    missing,
    p_text,
    pp,
    record_difference,
    run_names,
    scale_text,
)
from harness.report.markdown import SMOKE_BANNER, env_value, machine
from harness.report.write import write_files
from harness.results import RunResults, load_run
from harness.stats import ALPHA

NOTABLE_RATIO = 1.2  # compare: throughput ratios beyond this (either way) are flagged

COMPARE_COLUMNS = [
    "shots", "budget_scale", "strategy", "status_a", "status_b", "accuracy_a", "ci95_a", "accuracy_b", "ci95_b",
    "delta", "delta_ci_low", "delta_ci_high", "test", "p_value", "p_adjusted", "change", "source_images_per_second_a",
    "source_images_per_second_b", "source_ips_ratio", "ms_per_episode_a", "ms_per_episode_b", "ms_ratio",
]


def _ratio(b: Any, a: Any) -> float | None:
    return None if missing(a) or missing(b) or not a else float(b) / float(a)


def compare_frame(run_a: RunResults, run_b: RunResults) -> pd.DataFrame:
    """Run B against run A for strategies present in both: Δ = B - A (paired t-test when the episodes
    are the same, else Welch's unpaired test), Bonferroni over all rows, throughput ratios B / A."""
    pa, pb = run_a.header.protocol, run_b.header.protocol
    for key in ("dataset", "ways", "queries"):
        if pa.get(key) != pb.get(key):
            raise UsageError(f"the runs use different protocols ({key} {pa.get(key)} vs {pb.get(key)}); their "
                             f"accuracies are not comparable")
    a_recs = {(r.strategy, r.shots, r.budget_scale): r for r in run_a.records}
    b_recs = {(r.strategy, r.shots, r.budget_scale): r for r in run_b.records}
    keys = sorted(set(a_recs) & set(b_recs), key=lambda k: (k[1], -k[2], k[0]))
    family = sum(a_recs[k].status == "ok" and b_recs[k].status == "ok" for k in keys)
    rows = []
    for key in keys:
        a, b = a_recs[key], b_recs[key]
        row: dict[str, Any] = dict.fromkeys(COMPARE_COLUMNS)
        row.update(shots=key[1], budget_scale=key[2], strategy=key[0], status_a=a.status, status_b=b.status)
        if a.status == "ok" and b.status == "ok":
            row.update(accuracy_a=a.accuracy, ci95_a=a.ci95, accuracy_b=b.accuracy, ci95_b=b.ci95,
                       delta=(b.accuracy or 0.0) - (a.accuracy or 0.0))
            paired = bool(a.episode_fingerprint) and a.episode_fingerprint == b.episode_fingerprint
            d = record_difference(b, a, paired, family)
            if d is not None:
                row.update(delta=d.delta, delta_ci_low=d.low, delta_ci_high=d.high, test=d.test, p_value=d.p_raw,
                           p_adjusted=d.p_adjusted)
                row["change"] = ("better" if d.delta > 0 else "worse") if d.p_adjusted < ALPHA else \
                    "no significant change"
        row.update(source_images_per_second_a=a.source_images_per_second,
                   source_images_per_second_b=b.source_images_per_second,
                   ms_per_episode_a=a.ms_per_episode, ms_per_episode_b=b.ms_per_episode)
        row["source_ips_ratio"] = _ratio(row["source_images_per_second_b"], row["source_images_per_second_a"])
        row["ms_ratio"] = _ratio(row["ms_per_episode_b"], row["ms_per_episode_a"])
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def _ratio_cell(ratio: Any, higher_is_faster: bool) -> str:
    if missing(ratio):
        return "-"
    faster = ratio >= NOTABLE_RATIO if higher_is_faster else ratio <= 1 / NOTABLE_RATIO
    slower = ratio <= 1 / NOTABLE_RATIO if higher_is_faster else ratio >= NOTABLE_RATIO
    return f"{ratio:.2f}×" + (" (faster)" if faster else " (slower)" if slower else "")


def _acc(row: dict[str, Any], x: str) -> str:
    if row[f"status_{x}"] != "ok":
        return str(row[f"status_{x}"])
    return f"{100 * row[f'accuracy_{x}']:.2f} ± {100 * row[f'ci95_{x}']:.2f}"


def _coverage(frame: pd.DataFrame) -> str:
    tests = set(frame["test"].dropna())
    seeds = {t for t in tests if "seeds" in t}
    if tests and seeds == tests:
        return ("training seeds and episode sampling: both runs have replicates (`--replicates N ≥ 2`), so a "
                "change is tested against the variation of retraining with other seeds as well as of the episodes.")
    text = ("episode sampling only: each strategy is one trained model per run, so the CI and p do not cover how "
            "much a retrained model (another training seed) would differ; run both with `--replicates N ≥ 2` "
            "to cover training seeds too.")
    return text + (" Rows whose test names seeds cover both." if seeds else "")


def render_comparison(run_a: RunResults, run_b: RunResults, names: tuple[str, str] = ("A", "B"),
                      frame: pd.DataFrame | None = None) -> str:
    frame = compare_frame(run_a, run_b) if frame is None else frame
    na, nb = names
    lines = [f"# Comparison: `{nb}` vs `{na}`", ""]
    if any(run.header.protocol.get("preset") == "smoke" for run in (run_a, run_b)):
        lines += [SMOKE_BANNER, ""]
    for label, name, run in (("A", na, run_a), ("B", nb, run_b)):
        p, env = run.header.protocol, run.environment
        lines.append(f"- **{label}** `{name}`: {env_value(env, 'dataset')}; {p['dataset']}, {p['ways']}-way, "
                     f"{p['queries']} queries, {p['episodes']} episodes, seed {p['seed']}, preset `{p['preset']}`; "
                     f"{machine(env)}")
    lines += [
        "- **Δ** = B − A in percentage points with its CI at the Bonferroni level (1 − 0.05 / rows). When both "
        "runs used the same "
        "episodes (equal fingerprints) the test is the paired t-test over those episodes; otherwise "
        "(different seed or episode count) it is Welch's unpaired t-test, marked *unpaired*, which is weaker "
        "and ignores that both are samples of the same protocol. Runs with a different dataset, ways or queries "
        f"are refused. With replicates in both runs, training seeds enter the test too: paired by seed (test "
        f"\"seeds paired\") when both rows used the same source models seed by seed, else as independent. p is "
        f"Bonferroni-adjusted over all rows; ▲ / ▼ mark significant changes (p < {ALPHA}), exactly the rows whose "
        "CI excludes 0.",
        f"- **What the CI and p cover:** {_coverage(frame)}",
        f"- **Throughput ratios** are B / A (source img/s: higher is faster; ms / episode: lower is faster), "
        f"single measurements, not tested; flagged when they differ by more than {NOTABLE_RATIO:.1f}× either "
        "way. Cached source phases repeat the measurement of the run that trained them.",
    ]
    family = int(frame["p_value"].notna().sum())
    level = f"{level_text(1 - ALPHA / family)} CI" if family else "CI"
    headers = ["Strategy", f"A: {na} (%)", f"B: {nb} (%)", f"Δ (pp) [{level}]", "Test", "p (adj.)", "Change",
               "Source img/s B/A", "ms / episode B/A"]
    for s in sorted(frame["shots"].unique().tolist()):
        rows = []
        for row in frame[frame["shots"] == s].to_dict("records"):
            row = {k: None if missing(v) else v for k, v in row.items()}
            delta = "-" if row["delta"] is None else pp(row["delta"])
            if row["delta_ci_low"] is not None:
                delta += f" [{pp(row['delta_ci_low'])}, {pp(row['delta_ci_high'])}]"
            change = {"better": "▲ better", "worse": "▼ worse"}.get(row["change"], row["change"] or "-")
            test = "-" if row["test"] is None else row["test"].replace("(unpaired)", "*unpaired*")
            name = row["strategy"] + ("" if row["budget_scale"] == 1 else f" {scale_text(row['budget_scale'])}")
            cells = [name, _acc(row, "a"), _acc(row, "b"), delta, test, p_text(row["p_adjusted"]), change,
                     _ratio_cell(row["source_ips_ratio"], True), _ratio_cell(row["ms_ratio"], False)]
            rows.append([cell(c) for c in cells])
        lines += ["", f"## {s}-shot", "", tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)]
    only_a = sorted({r.strategy for r in run_a.records} - {r.strategy for r in run_b.records})
    only_b = sorted({r.strategy for r in run_b.records} - {r.strategy for r in run_a.records})
    if frame.empty:
        lines += ["", "No strategy and shot setting is present in both runs."]
    if only_a or only_b:
        lines += [""] + [f"Only in {label}: {', '.join(only)}." for label, only in (("A", only_a), ("B", only_b))
                         if only]
    return "\n".join(lines) + "\n"


def write_comparison(run_dirs: list[str | Path], out: str | Path, fmt: str = "md") -> list[Path]:
    if len(run_dirs) != 2:
        raise UsageError(f"--compare takes exactly two run directories (RUN_A RUN_B), got {len(run_dirs)}")
    REPORT_FORMATS.get(fmt)
    run_a, run_b = (load_run(d) for d in run_dirs)
    na, nb = run_names(run_dirs)
    frame = compare_frame(run_a, run_b)
    text = render_comparison(run_a, run_b, (na, nb), frame) if fmt == "md" else \
        REPORT_FORMATS.load(fmt).render([run_a, run_b], [na, nb], frame, Path(out), ())
    write_files({Path(out): text})
    return [Path(out)]
