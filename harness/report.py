"""Leaderboards and run comparisons: a pure function of the results files (config, environment,
records), the strategy registry (for links to the source files) and where the report is written.

- ``leaderboard_frame``: the aggregated table (one row per record), with ranks and the paired tests
  against the best strategy of each shot setting; ``--format csv|json`` writes it as it is.
- ``render_markdown``: the leaderboard page (header, one table per shot setting, plots, footer).
- ``compare_frame`` / ``render_comparison``: run B against run A, strategy by strategy.
- ``write_report`` / ``write_comparison``: compute everything first, then write (nothing on error).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.errors import UsageError
from harness.results import load_run
from harness.stats import (
    holm,
    paired_bootstrap_ci,
    paired_ttest,
    unpaired_bootstrap_ci,
    welch_ttest,
)

ALPHA = 0.05  # significance level of the Holm-corrected tests
NOTABLE_RATIO = 1.2  # compare: throughput ratios beyond this (either way) are flagged
FORMATS = ("md", "csv", "json")

Run = tuple[dict, dict, list[dict]]  # (config, environment, records), as results.load_run returns

FRAME_COLUMNS = [
    "shots", "rank", "rank_label", "tied_with_best", "strategy", "module", "family", "status", "reason",
    "source_phase", "episode_phase", "settings", "accuracy", "ci95", "delta_vs_best", "delta_ci_low",
    "delta_ci_high", "p_value", "p_holm", "robust_accuracy", "robust_ci95", "source_budget_images",
    "source_images_per_second", "source_seconds", "source_cached", "ms_per_episode", "query_images_per_second",
    "peak_memory_mb", "device", "episodes", "episode_fingerprint", "run",
]


# ---------------------------------------------------------------------------------------------- helpers

def _settings(rec: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (rec.get("settings") or {}).items())


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: Any, fmt: str) -> str:
    return "-" if _missing(value) else format(value, fmt)


def _cell(text: Any) -> str:
    """A table cell: one line, with pipes escaped so a reason or a setting cannot break the table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _pp(value: float) -> str:
    """A difference in percentage points, signed."""
    return f"{100 * value:+.2f}"


def _p(value: Any) -> str:
    if _missing(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def run_names(run_dirs: Sequence[str | Path]) -> list[str]:
    return [Path(d).resolve().name for d in run_dirs]


def strategy_module(name: str) -> str | None:
    """The built-in module defining a registered strategy ("strategies.frozen_features"), else None
    (unknown, unavailable, failing to import, or defined outside this repository's strategies package)."""
    from harness import registry

    try:
        entry = registry.get(name)
        if not entry.available():
            return None
        module = entry.load().__module__
    except Exception:  # noqa: BLE001 - a strategy that cannot be loaded just gets no link
        return None
    return module if module.startswith("strategies.") else None


def source_link(module: str | None, out: str | Path | None) -> str | None:
    """Relative link from the report's folder to the module's file, when the file exists."""
    if module is None or out is None:
        return None
    import strategies

    path = Path(strategies.__file__).resolve().parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    if not path.is_file():
        return None
    return Path(os.path.relpath(path, Path(out).resolve().parent)).as_posix()


# ---------------------------------------------------------------------------------------- leaderboard

def _check_episodes(records: list[dict]) -> None:
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
                             f"--seed/--episodes/--queries/--split, or use --compare for an unpaired comparison")
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
    row.update(settings=_settings(r), peak_memory_mb=peak, run=r["_run"], module=strategy_module(r["strategy"]),
               robust_accuracy=metrics.get("robust_accuracy"), robust_ci95=metrics.get("robust_ci95"),
               rank=None, rank_label="-", tied_with_best=False, delta_vs_best=None, delta_ci_low=None,
               delta_ci_high=None, p_value=None, p_holm=None)
    if r.get("status") != "ok":
        row.update(accuracy=None, ci95=None)
    return row


def _rank_shot(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
    _check_episodes(records)
    rows: list[dict[str, Any]] = []
    for shots in sorted({r["shots"] for r in records}):
        rows += _rank_shot([r for r in records if r["shots"] == shots])
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def _strategy_cell(row: dict[str, Any], out: str | Path | None) -> str:
    link = source_link(row["module"], out)
    return f"{row['strategy']} ([code]({link}))" if link else row["strategy"]


def _table(frame: pd.DataFrame, out: str | Path | None, robust: bool, multi_run: bool) -> str:
    headers = ["#", "Strategy", "Family", "Source phase", "Episode phase", "Settings", "Accuracy (%)",
               "Δ best (pp) [95% CI]", "p (Holm)"]
    headers += ["Robust acc. (%)"] if robust else []
    headers += ["Source budget (img)", "Source img/s", "Source time (s)", "ms / episode", "Peak mem (MB)", "Device"]
    headers += ["Run"] if multi_run else []
    lines = []
    for row in frame.to_dict("records"):
        row = {k: None if _missing(v) or v is pd.NA else v for k, v in row.items()}
        ok = row["status"] == "ok"
        if not ok:
            accuracy, delta = f"{row['status'] or '?'}: {row['reason'] or ''}".strip(), "-"
        else:
            accuracy = f"{100 * row['accuracy']:.2f} ± {100 * row['ci95']:.2f}"
            if row["delta_vs_best"] is None:
                delta = "best"
            elif row["delta_ci_low"] is None:
                delta = _pp(row["delta_vs_best"])
            else:
                delta = f"{_pp(row['delta_vs_best'])} [{_pp(row['delta_ci_low'])}, {_pp(row['delta_ci_high'])}]"
        cells = [row["rank_label"], _strategy_cell(row, out), row["family"] or "-", row["source_phase"] or "-",
                 row["episode_phase"] or "-", row["settings"] or "-", accuracy, delta, _p(row["p_holm"])]
        if robust:
            cells.append("-" if row["robust_accuracy"] is None else
                         f"{100 * row['robust_accuracy']:.2f} ± {100 * (row['robust_ci95'] or 0):.2f}")
        cells += [_num(row["source_budget_images"], ",.0f"), _num(row["source_images_per_second"], ",.0f"),
                  _num(row["source_seconds"], ".1f"), _num(row["ms_per_episode"], ".2f"),
                  _num(row["peak_memory_mb"], ",.0f"), row["device"] or "-"]
        cells += [row["run"]] if multi_run else []
        lines.append([_cell(c) for c in cells])
    return tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True)


def _distinct(values: list[str]) -> str:
    return ", ".join(dict.fromkeys(values))


def _versions(env: dict[str, Any]) -> str:
    return (f"{env.get('device', '?')}; Python {env.get('python', '?')}, torch {env.get('torch', '?')}, "
            f"torchvision {env.get('torchvision', '?')}, numpy {env.get('numpy', '?')}, "
            f"harness {env.get('harness_version', '?')}; commit {env.get('git_commit') or 'unknown'}")


def render_markdown(runs: list[Run], out: str | Path | None = None, plot_files: Sequence[str] = (),
                    names: list[str] | None = None, frame: pd.DataFrame | None = None) -> str:
    """The leaderboard page. ``out`` is where it will be written (strategy links are relative to it);
    ``plot_files`` are PNG names next to it, linked in a Plots section."""
    names = names or [f"run{i + 1}" for i in range(len(runs))]
    frame = leaderboard_frame(runs, names) if frame is None else frame
    config, env, _ = runs[0]
    p = config["protocol"]
    shots = sorted(frame["shots"].unique().tolist())
    ok = frame[frame["status"] == "ok"]
    fps = {s: _distinct(sorted(ok.loc[ok["shots"] == s, "episode_fingerprint"].dropna())) for s in shots}
    fp_text = "; ".join(f"{s}-shot {fp}" for s, fp in fps.items() if fp) or "-"
    envs = [e for _, e, _ in runs]
    if len({_versions(e) for e in envs}) == 1:
        machine = [f"- **Machine:** {_versions(env)}"]
    else:
        machine = ["- **Machines:**"] + [f"  - `{n}`: {_versions(e)}" for n, e in zip(names, envs, strict=True)]
    robust = frame["robust_accuracy"].notna().any()
    presets = _distinct(["`" + c["protocol"]["preset"] + "`" for c, _, _ in runs])
    lines = [
        f"# Few-shot transfer leaderboard: {p['split']}, {p['ways']}-way",
        "",
        f"- **Dataset:** {_distinct([e.get('dataset', '?') for e in envs])} "
        f"(data fingerprint {_distinct([str(e.get('data_fingerprint', '?'))[:12] for e in envs])})",
        f"- **Split:** `{p['split']}`: {config.get('split_description', '')}",
        f"- **Protocol:** {p['ways']}-way {', '.join(map(str, shots))}-shot, {p['queries']} queries per class, "
        f"{p['episodes']} episodes, seed {p['seed']}, preset {presets}; the same episodes for every "
        f"strategy (fingerprints: {fp_text})",
        *machine,
        "- **Accuracy** is the mean over episodes ± the 95% CI (1.96 · std / √episodes)." + (
            f" With {config['novel_classes']} novel classes and {p['ways']}-way episodes, every episode has "
            "the same class set, so the CI reflects the sampling of images only."
            if config.get("novel_classes") == p["ways"] else ""),
        "- **Ranking:** each strategy is compared with the best of its shot setting on the shared episodes: "
        "Δ best is the accuracy difference in percentage points with a paired bootstrap 95% CI (5,000 "
        "resamples of episodes, seed 0), p the paired t-test on per-episode accuracies, Holm-corrected "
        f"across the comparisons with the best. Strategies not significantly worse (p ≥ {ALPHA}) share rank "
        "1, marked `=1`.",
        "- **Throughput:** source time and img/s are the source phase's (shared and cached across strategies "
        "with equal source phases); ms / episode covers all adaptation and scoring work, synchronised; peak "
        "memory is CUDA max allocated, or the process's peak RSS on a CPU.",
    ]
    if robust:
        lines.append("- **Robust acc.** is the accuracy on the strategy's robust (e.g. adversarial) queries, "
                     "± its 95% CI.")
    for s in shots:
        lines += ["", f"## {s}-shot", "", _table(frame[frame["shots"] == s], out, robust, len(runs) > 1)]
    if plot_files:
        lines += ["", "## Plots", ""]
        lines += "\n\n".join(f"![{_PLOT_TITLES.get(_plot_kind(f), f)}]({f})" for f in plot_files).split("\n")
    if len(runs) > 1:
        lines += ["", f"Combined from {len(runs)} run directories: {', '.join(f'`{n}`' for n in names)}."]
    commands = [(n, e["command"]) for n, e in zip(names, envs, strict=True) if e.get("command")]
    if commands:
        lines += ["", "Reproduce with:", "", "```"]
        lines += [c if len(runs) == 1 else f"{c}  # {n}" for n, c in commands]
        lines += ["```"]
    return "\n".join(lines) + "\n"


_PLOT_TITLES = {"accuracy-vs-shots": "Accuracy vs shots", "accuracy-vs-cost": "Accuracy vs adaptation cost",
                "source-throughput": "Source-phase throughput"}


def _plot_kind(filename: str) -> str:
    return next((k for k in _PLOT_TITLES if filename.endswith(f"{k}.png")), filename)


def render_runs(run_dirs: list[str | Path], out: str | Path | None = None,
                plot_files: Sequence[str] = ()) -> str:
    return render_markdown([load_run(d) for d in run_dirs], out, plot_files, run_names(run_dirs))


def _frame_text(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False)
    return frame.to_json(orient="records", indent=2) + "\n"


def _write(files: dict[Path, str | bytes]) -> None:
    for path, content in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        except OSError as e:
            raise UsageError(f"cannot write {path} ({e.strerror}); pass a writable --out FILE") from None


def write_report(run_dirs: list[str | Path], out: str | Path, fmt: str = "md", plots: bool = True) -> list[Path]:
    """Write the leaderboard (Markdown, or the aggregated table as CSV/JSON) and, unless ``plots`` is
    False, its PNG plots next to it. Everything is computed before anything is written."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose from: {', '.join(FORMATS)}")
    out = Path(out)
    runs, names = [load_run(d) for d in run_dirs], run_names(run_dirs)
    frame = leaderboard_frame(runs, names)
    images: dict[str, bytes] = {}
    if plots:
        from harness.plots import render_plots

        stem = names[0] if len(names) == 1 else f"{names[0]}+{len(names) - 1}"
        images = render_plots(frame, runs[0][0]["protocol"], stem)
    text = render_markdown(runs, out, list(images), names, frame) if fmt == "md" else _frame_text(frame, fmt)
    files: dict[Path, str | bytes] = {out: text, **{out.parent / name: data for name, data in images.items()}}
    _write(files)
    return list(files)


# ----------------------------------------------------------------------------------------- comparison

COMPARE_COLUMNS = [
    "shots", "strategy", "status_a", "status_b", "accuracy_a", "ci95_a", "accuracy_b", "ci95_b", "delta",
    "delta_ci_low", "delta_ci_high", "test", "p_value", "p_holm", "change", "source_images_per_second_a",
    "source_images_per_second_b", "source_ips_ratio", "ms_per_episode_a", "ms_per_episode_b", "ms_ratio",
]


def _ratio(b: Any, a: Any) -> float | None:
    return None if _missing(a) or _missing(b) or not a else float(b) / float(a)


def compare_frame(run_a: Run, run_b: Run) -> pd.DataFrame:
    """Run B against run A for strategies present in both: Δ = B - A (paired t-test when the episodes
    are the same, else Welch's unpaired test), Holm over all rows, throughput ratios B / A."""
    pa, pb = run_a[0]["protocol"], run_b[0]["protocol"]
    for key in ("split", "ways", "queries"):
        if pa.get(key) != pb.get(key):
            raise UsageError(f"the runs use different protocols ({key} {pa.get(key)} vs {pb.get(key)}); their "
                             f"accuracies are not comparable")
    a_recs = {(r["strategy"], r["shots"]): r for r in run_a[2]}
    b_recs = {(r["strategy"], r["shots"]): r for r in run_b[2]}
    rows = []
    for key in sorted(set(a_recs) & set(b_recs), key=lambda k: (k[1], k[0])):
        a, b = a_recs[key], b_recs[key]
        row: dict[str, Any] = dict.fromkeys(COMPARE_COLUMNS)
        row.update(shots=key[1], strategy=key[0], status_a=a.get("status"), status_b=b.get("status"))
        if a.get("status") == "ok" and b.get("status") == "ok":
            xa, xb = a.get("episode_accuracies") or [], b.get("episode_accuracies") or []
            row.update(accuracy_a=a["accuracy"], ci95_a=a["ci95"], accuracy_b=b["accuracy"], ci95_b=b["ci95"],
                       delta=b["accuracy"] - a["accuracy"])
            paired = (a.get("episode_fingerprint") and a.get("episode_fingerprint") == b.get("episode_fingerprint")
                      and len(xa) == len(xb))
            if paired and len(xa) >= 2:
                row.update(test="paired t", p_value=paired_ttest(xb, xa)[1])
                row["delta_ci_low"], row["delta_ci_high"] = paired_bootstrap_ci(xb, xa)
            elif len(xa) >= 2 and len(xb) >= 2:
                row.update(test="Welch t (unpaired)", p_value=welch_ttest(xb, xa)[1])
                row["delta_ci_low"], row["delta_ci_high"] = unpaired_bootstrap_ci(xb, xa)
        row.update(source_images_per_second_a=a.get("source_images_per_second"),
                   source_images_per_second_b=b.get("source_images_per_second"),
                   ms_per_episode_a=a.get("ms_per_episode"), ms_per_episode_b=b.get("ms_per_episode"))
        row["source_ips_ratio"] = _ratio(row["source_images_per_second_b"], row["source_images_per_second_a"])
        row["ms_ratio"] = _ratio(row["ms_per_episode_b"], row["ms_per_episode_a"])
        rows.append(row)
    adjusted = holm([math.nan if r["p_value"] is None else r["p_value"] for r in rows])
    for row, p in zip(rows, adjusted, strict=True):
        if not math.isnan(p):
            row["p_holm"] = p
            row["change"] = ("better" if row["delta"] > 0 else "worse") if p < ALPHA else "no significant change"
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def _ratio_cell(ratio: Any, higher_is_faster: bool) -> str:
    if _missing(ratio):
        return "-"
    faster = ratio >= NOTABLE_RATIO if higher_is_faster else ratio <= 1 / NOTABLE_RATIO
    slower = ratio <= 1 / NOTABLE_RATIO if higher_is_faster else ratio >= NOTABLE_RATIO
    return f"{ratio:.2f}×" + (" (faster)" if faster else " (slower)" if slower else "")


def _acc(row: dict[str, Any], x: str) -> str:
    if row[f"status_{x}"] != "ok":
        return str(row[f"status_{x}"])
    return f"{100 * row[f'accuracy_{x}']:.2f} ± {100 * row[f'ci95_{x}']:.2f}"


def render_comparison(run_a: Run, run_b: Run, names: tuple[str, str] = ("A", "B"),
                      frame: pd.DataFrame | None = None) -> str:
    frame = compare_frame(run_a, run_b) if frame is None else frame
    na, nb = names
    lines = [f"# Comparison: `{nb}` vs `{na}`", ""]
    for label, name, (config, env, _) in (("A", na, run_a), ("B", nb, run_b)):
        p = config["protocol"]
        lines.append(f"- **{label}** `{name}`: {env.get('dataset', '?')}; {p['split']}, {p['ways']}-way, "
                     f"{p['queries']} queries, {p['episodes']} episodes, seed {p['seed']}, preset `{p['preset']}`; "
                     f"{_versions(env)}")
    lines += [
        "- **Δ** = B − A in percentage points with a 95% bootstrap CI (seed 0). When both runs used the same "
        "episodes (equal fingerprints) the test is the paired t-test over those episodes; otherwise "
        "(different seed or episode count) it is Welch's unpaired t-test, marked *unpaired*, which is weaker "
        "and ignores that both are samples of the same protocol. Runs with a different split, ways or queries "
        f"are refused. p is Holm-corrected over all rows; ▲ / ▼ mark significant changes (p < {ALPHA}).",
        f"- **Throughput ratios** are B / A (source img/s: higher is faster; ms / episode: lower is faster), "
        f"single measurements, not tested; flagged when they differ by more than {NOTABLE_RATIO:.1f}× either "
        "way. Cached source phases repeat the measurement of the run that trained them.",
    ]
    headers = ["Strategy", f"A: {na} (%)", f"B: {nb} (%)", "Δ (pp) [95% CI]", "Test", "p (Holm)", "Change",
               "Source img/s B/A", "ms / episode B/A"]
    for s in sorted(frame["shots"].unique().tolist()):
        rows = []
        for row in frame[frame["shots"] == s].to_dict("records"):
            row = {k: None if _missing(v) else v for k, v in row.items()}
            delta = "-" if row["delta"] is None else _pp(row["delta"])
            if row["delta_ci_low"] is not None:
                delta += f" [{_pp(row['delta_ci_low'])}, {_pp(row['delta_ci_high'])}]"
            change = {"better": "▲ better", "worse": "▼ worse"}.get(row["change"], row["change"] or "-")
            test = "-" if row["test"] is None else "paired t" if row["test"] == "paired t" else "Welch t, *unpaired*"
            rows.append([_cell(c) for c in [row["strategy"], _acc(row, "a"), _acc(row, "b"), delta, test,
                                            _p(row["p_holm"]), change, _ratio_cell(row["source_ips_ratio"], True),
                                            _ratio_cell(row["ms_ratio"], False)]])
        lines += ["", f"## {s}-shot", "", tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)]
    only_a = sorted({r["strategy"] for r in run_a[2]} - {r["strategy"] for r in run_b[2]})
    only_b = sorted({r["strategy"] for r in run_b[2]} - {r["strategy"] for r in run_a[2]})
    if frame.empty:
        lines += ["", "No strategy and shot setting is present in both runs."]
    if only_a or only_b:
        lines += [""] + [f"Only in {label}: {', '.join(only)}." for label, only in (("A", only_a), ("B", only_b))
                         if only]
    return "\n".join(lines) + "\n"


def write_comparison(run_dirs: list[str | Path], out: str | Path, fmt: str = "md") -> list[Path]:
    if len(run_dirs) != 2:
        raise UsageError(f"--compare takes exactly two run directories (RUN_A RUN_B), got {len(run_dirs)}")
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose from: {', '.join(FORMATS)}")
    run_a, run_b = (load_run(d) for d in run_dirs)
    na, nb = run_names(run_dirs)
    frame = compare_frame(run_a, run_b)
    text = render_comparison(run_a, run_b, (na, nb), frame) if fmt == "md" else _frame_text(frame, fmt)
    _write({Path(out): text})
    return [Path(out)]
