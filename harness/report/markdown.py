"""The Markdown leaderboard page: header (data, protocol, machine, how to read it), one table per shot
setting, plots, the command that reproduces it. A pure function of the run directories' files."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.report.cells import cell, code_link, missing, num, p_text, pp
from harness.report.frame import ci_coverage, leaderboard_frame
from harness.results import Run
from harness.stats import ALPHA


def _strategy_cell(row: dict[str, Any], out: str | Path | None) -> str:
    link = code_link(row["code"], out)
    return f"{row['strategy']} ([code]({link}))" if link else row["strategy"]


def _table(frame: pd.DataFrame, out: str | Path | None, robust: bool, multi_run: bool) -> str:
    headers = ["#", "Strategy", "Family", "Source phase", "Episode phase", "Settings", "Accuracy (%)",
               "Δ best (pp) [CI]", "p (adj.)"]
    headers += ["Clean-and-robust acc. (%)"] if robust else []
    headers += ["Source budget (img)", "Source img/s", "Source time (s)", "ms / episode", "Peak mem (MB)", "Device"]
    headers += ["Run"] if multi_run else []
    lines = []
    for row in frame.to_dict("records"):
        row = {k: None if missing(v) or v is pd.NA else v for k, v in row.items()}
        ok = row["status"] == "ok"
        if not ok:
            accuracy, delta = f"{row['status'] or '?'}: {row['reason'] or ''}".strip(), "-"
        else:
            accuracy = f"{100 * row['accuracy']:.2f} ± {100 * row['ci95']:.2f}"
            if row["delta_vs_best"] is None:
                delta = "best"
            elif row["delta_ci_low"] is None:
                delta = pp(row["delta_vs_best"])
            else:
                delta = f"{pp(row['delta_vs_best'])} [{pp(row['delta_ci_low'])}, {pp(row['delta_ci_high'])}]"
        source = row["source_description"] or row["source_phase"] or "-"
        cells = [row["rank_label"], _strategy_cell(row, out), row["family"] or "-", source,
                 row["episode_phase"] or "-", row["settings"] or "-", accuracy, delta, p_text(row["p_adjusted"])]
        if robust:
            cells.append("-" if row["clean_and_robust_accuracy"] is None else
                         f"{100 * row['clean_and_robust_accuracy']:.2f} ± "
                         f"{100 * (row['clean_and_robust_ci95'] or 0):.2f}")
        cells += [num(row["source_budget_images"], ",.0f"), num(row["source_images_per_second"], ",.0f"),
                  num(row["source_seconds"], ".1f"), num(row["ms_per_episode"], ".2f"),
                  num(row["peak_memory_mb"], ",.0f"), row["device"] or "-"]
        cells += [row["run"]] if multi_run else []
        lines.append([cell(c) for c in cells])
    return tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True)


def _distinct(values: list[str]) -> str:
    return ", ".join(dict.fromkeys(values))


def versions(env: dict[str, Any]) -> str:
    return (f"{env.get('device', '?')}; Python {env.get('python', '?')}, torch {env.get('torch', '?')}, "
            f"torchvision {env.get('torchvision', '?')}, numpy {env.get('numpy', '?')}, "
            f"harness {env.get('harness_version', '?')}; code {env.get('code_version') or 'unknown'}")


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
    if len({versions(e) for e in envs}) == 1:
        machine = [f"- **Machine:** {versions(env)}"]
    else:
        machine = ["- **Machines:**"] + [f"  - `{n}`: {versions(e)}" for n, e in zip(names, envs, strict=True)]
    robust = frame["clean_and_robust_accuracy"].notna().any()
    presets = _distinct(["`" + c["protocol"]["preset"] + "`" for c, _, _ in runs])
    lines = [
        f"# Few-shot transfer leaderboard: {p['dataset']}, {p['ways']}-way",
        "",
        f"- **Dataset:** {_distinct([e.get('dataset', '?') for e in envs])} "
        f"(data fingerprint {_distinct([str(e.get('data_fingerprint', '?'))[:12] for e in envs])})",
        f"- **Pools:** `{p['dataset']}`: {config.get('dataset_description', '')}",
        f"- **Protocol:** {p['ways']}-way {', '.join(map(str, shots))}-shot, {p['queries']} queries per class, "
        f"{p['episodes']} episodes, seed {p['seed']}, preset {presets}; the same episodes for every "
        f"strategy (fingerprints: {fp_text})",
        *machine,
        f"- **Accuracy** is the mean over episodes ± the 95% CI (t interval); the CI covers {ci_coverage(frame)}." + (
            f" With {config['novel_classes']} novel classes and {p['ways']}-way episodes, every episode has "
            "the same class set, so the CI reflects the sampling of images only."
            if config.get("novel_classes") == p["ways"] else ""),
        "- **Ranking:** each strategy is compared with the best of its shot setting on the shared episodes: "
        "Δ best is the accuracy difference in percentage points with its CI at the Bonferroni level "
        "(1 − 0.05 / m for the m comparisons with the best), p the t-test of that difference (paired on "
        "episodes; across training seeds too when there are replicates), Bonferroni-adjusted. Rows are "
        f"ranked by accuracy; those not significantly worse than the best (p ≥ {ALPHA}, exactly when their CI "
        "holds 0) are tied with it, marked `=1`.",
        "- **Throughput:** source time and img/s are the source phase's (shared and cached across strategies "
        "with equal source phases); ms / episode covers all adaptation and scoring work, synchronised; peak "
        "memory is CUDA max allocated, or the process's peak RSS on a CPU.",
    ]
    if robust:
        lines.append("- **Clean-and-robust acc.** counts a query when both its clean and its attacked (PGD) "
                     "prediction are right, ± its 95% CI.")
    for s in shots:
        lines += ["", f"## {s}-shot", "", _table(frame[frame["shots"] == s], out, robust, len(runs) > 1)]
    if plot_files:
        lines += ["", "## Plots", ""]
        lines += "\n\n".join(f"![{_PLOT_TITLES.get(_plot_kind(f), f)}]({f})" for f in plot_files).split("\n")
    if len(runs) > 1:
        lines += ["", f"Combined from {len(runs)} run directories: {', '.join(f'`{n}`' for n in names)}."]
    commands = [(n, shlex.join(e["command"])) for n, e in zip(names, envs, strict=True) if e.get("command")]
    if commands:
        lines += ["", "Reproduce with:", "", "```"]
        lines += [c if len(runs) == 1 else f"{c}  # {n}" for n, c in commands]
        lines += ["```"]
    return "\n".join(lines) + "\n"


_PLOT_TITLES = {"accuracy-vs-shots": "Accuracy vs shots", "accuracy-vs-cost": "Accuracy vs adaptation cost",
                "source-throughput": "Source-phase throughput"}


def _plot_kind(filename: str) -> str:
    return next((k for k in _PLOT_TITLES if filename.endswith(f"{k}.png")), filename)
