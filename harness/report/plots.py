"""Leaderboard plots (PNG, matplotlib's Agg canvas, no pyplot and no global state).

Figures from the leaderboard frame (harness.report.leaderboard_frame), each readable on its own:

- accuracy vs shots with 95% CI bars (points of different strategies dodged sideways so bars do not hide
  each other);
- accuracy vs cost (harness/report/plots_cost.py): per shot setting, against adaptation cost (ms per
  episode) and against total compute, each with its Pareto front;
- accuracy vs source compute (plots_cost.py), only for runs with several budget scales;
- source-phase throughput per strategy, bars coloured by source phase (equal phases are one measurement);
- per shot setting, a reliability diagram and per-class accuracy (harness/report/plots_calibration.py), for
  rows with per-query predictions.

With several budget scales, all but the compute plot show the largest scale. Fixed style, size and dpi, so
a figure's pixel size never depends on the data; colours from the Okabe-Ito palette (colour-blind safe).
A strategy's style comes from the sorted order of all strategy names in the report, so it is the same in
every plot: 8 colours; beyond 8 strategies the colours repeat with another line style, another marker and
hollow markers, so no two strategies look alike.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report.plot_style import (
    OKABE_ITO,
    STYLE,
    figure,
    legend_handles,
    main_scale,
    png,
    strategy_styles,
)
from harness.report.plots_calibration import calibration_plots
from harness.report.plots_cost import accuracy_vs_compute, accuracy_vs_cost


def accuracy_vs_shots(ok: pd.DataFrame, styles: dict, protocol: dict) -> bytes:
    fig = figure("accuracy-vs-shots")
    ax = fig.add_subplot(1, 1, 1)
    ok, note = main_scale(ok)
    shots = sorted(ok["shots"].unique().tolist())
    names = sorted(ok["strategy"].unique())
    spread = 0.12 if len(shots) > 1 else 0.3  # total sideways dodge, in natural-log units of K
    for k, name in enumerate(names):
        rows = ok[ok["strategy"] == name].sort_values("shots")
        offset = math.exp(spread * (k / max(1, len(names) - 1) - 0.5)) if len(names) > 1 else 1.0
        st = styles[name]
        ax.errorbar(rows["shots"] * offset, 100 * rows["accuracy"], yerr=100 * rows["ci95"], capsize=3, label=name,
                    color=st["color"], marker=st["marker"], markerfacecolor=st["markerfacecolor"],
                    linestyle=st["linestyle"], linewidth=1.4, markersize=6)
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.minorticks_off()
    lo, hi = min(shots), max(shots)
    ax.set_xlim(lo / (1.35 if len(shots) > 1 else 2), hi * (1.35 if len(shots) > 1 else 2))
    ax.set_xlabel("Shots per class, K (log scale; points dodged sideways for legibility)")
    ax.set_ylabel("Query accuracy (%)")
    ax.set_title(f"{protocol['ways']}-way accuracy vs shots on {protocol['dataset']} "
                 f"({protocol['episodes']} episodes{note}; bars: 95% CI)")
    ax.legend(handles=legend_handles(names, styles), loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="Strategy", fontsize=8 if len(names) > 16 else 9)
    fig.tight_layout()
    return png(fig)


def source_throughput(ok: pd.DataFrame) -> bytes:
    """One bar per strategy (name as its one-line label), coloured by source phase: the legend names the
    phases, which the labels do not repeat."""
    fig = figure("source-throughput")
    ax = fig.add_subplot(1, 1, 1)
    ok, note = main_scale(ok)
    rows = (ok[ok["source_images_per_second"].notna()]
            .groupby("strategy", sort=True).agg(ips=("source_images_per_second", "mean"),
                                                phase=("source_phase", "first")))
    names = list(rows.index)[::-1]  # first name on top
    values = [rows.loc[n, "ips"] for n in names]
    phases = sorted({str(p) for p in rows["phase"]})
    colour = {p: OKABE_ITO[i % len(OKABE_ITO)] for i, p in enumerate(phases)}
    hatch = {p: "" if i < len(OKABE_ITO) else "//" for i, p in enumerate(phases)}
    bars = ax.barh(range(len(names)), values, color=[colour[str(rows.loc[n, "phase"])] for n in names],
                   hatch=[hatch[str(rows.loc[n, "phase"])] for n in names], edgecolor="white", height=0.7)
    size = 9 if len(names) <= 18 else max(5, int(9 * 18 / len(names)))
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3, fontsize=size)
    ax.set_yticks(range(len(names)), names, fontsize=size)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("Source-phase throughput (images processed per second after the warm-up step; "
                  "mean over shot settings)")
    ax.grid(False, axis="y")
    ax.set_xlim(0, max(values, default=1) * 1.15 or 1)
    ax.set_title(f"Source-phase throughput per strategy{note} (equal source phases: one shared measurement)")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor=colour[p], hatch=hatch[p], edgecolor="white", label=p) for p in phases],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), title="Source phase", fontsize=8)
    fig.tight_layout()
    return png(fig)


def render_plots(frame: pd.DataFrame, protocol: dict, stem: str) -> dict[str, bytes]:
    """{file name: PNG bytes} for the successful rows of the leaderboard frame; {} when there are none."""
    import matplotlib
    import matplotlib.style

    ok = frame[(frame["status"] == "ok") & frame["accuracy"].notna()]
    if ok.empty:
        return {}
    styles = strategy_styles(frame["strategy"].tolist())
    with matplotlib.rc_context(), matplotlib.style.context("default"):
        matplotlib.rcParams.update(STYLE)
        images = {f"{stem}-accuracy-vs-shots.png": accuracy_vs_shots(ok, styles, protocol)}
        main, note = main_scale(ok)
        calibration = calibration_plots(main, styles, stem, note)
        ok = ok[ok["family"] != "external"]  # pretrained elsewhere: their source cost is not measured here
        if not ok.empty:
            images[f"{stem}-accuracy-vs-cost.png"] = accuracy_vs_cost(ok, styles, protocol)
        if ok["budget_scale"].nunique() > 1:
            images[f"{stem}-accuracy-vs-compute.png"] = accuracy_vs_compute(ok, styles, protocol)
        if ok["source_images_per_second"].notna().any():
            images[f"{stem}-source-throughput.png"] = source_throughput(ok)
    return {**images, **calibration}
