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

import io
import math
from typing import Any

import pandas as pd

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
DPI = 100
SIZES = {"accuracy-vs-shots": (10.0, 5.5), "accuracy-vs-cost": (12.0, 8.0), "accuracy-vs-compute": (12.0, 5.5),
         "source-throughput": (10.0, 6.0)}
PER_SHOT_SIZES = {"reliability": (10.0, 6.5), "per-class": (12.0, 6.0)}  # one of each per shot setting
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 9,
         "figure.facecolor": "white", "savefig.facecolor": "white"}


def strategy_styles(names: list[str]) -> dict[str, dict[str, Any]]:
    """Colour, marker, line style and marker fill per strategy, from the sorted order of the names: the
    first 8 filled with solid lines, the next 8 hollow with dashed lines and shifted markers, and so on."""
    styles = {}
    for i, name in enumerate(sorted(set(names))):
        group = i // len(OKABE_ITO)
        color = OKABE_ITO[i % len(OKABE_ITO)]
        styles[name] = {"color": color, "marker": MARKERS[(i + 3 * group) % len(MARKERS)],
                        "linestyle": LINESTYLES[group % len(LINESTYLES)],
                        "markerfacecolor": color if group % 2 == 0 else "white"}
    return styles


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, accuracy) points no other point beats on both (lower cost, higher
    accuracy), ordered by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def compact(value: float) -> str:
    """A tick label: 0.5, 20, 1.5k, 150k, 2M (no exponent notation, never more than a few characters)."""
    for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= unit:
            return f"{value / unit:g}{suffix}"
    return f"{value:g}"


def plain_log_ticks(ax, values: list[float]) -> None:
    """Compact plain numbers (not 4x10^2) on a log x axis, and some room around a narrow range of values."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fmt = FuncFormatter(lambda v, _: compact(v))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(fmt)
    values = [v for v in values if v and v > 0]
    lo, hi = (min(values), max(values)) if values else (1.0, 10.0)
    ax.xaxis.set_minor_formatter(fmt if hi / lo < 4 else NullFormatter())  # label minor ticks on narrow ranges
    if values:
        ax.set_xlim(lo / 1.4, hi * 1.4)


def figure(kind: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZES.get(kind) or PER_SHOT_SIZES[kind], dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def legend_handles(names: list[str], styles: dict[str, dict[str, Any]], lines: bool = True) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=styles[n]["color"], marker=styles[n]["marker"],
                   markerfacecolor=styles[n]["markerfacecolor"],
                   linestyle=styles[n]["linestyle"] if lines else "none", label=n) for n in names]


def main_scale(ok: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows at the largest budget scale, and a title note naming it when the run has several."""
    if ok["budget_scale"].nunique() < 2:
        return ok, ""
    scale = ok["budget_scale"].max()
    return ok[ok["budget_scale"] == scale], f", source budget ×{scale:g}"


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

    from harness.report.plots_calibration import calibration_plots
    from harness.report.plots_cost import accuracy_vs_compute, accuracy_vs_cost

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
