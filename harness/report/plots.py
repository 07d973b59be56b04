"""Leaderboard plots (PNG, matplotlib's Agg canvas, no pyplot and no global state).

Three figures from the leaderboard frame (harness.report.leaderboard_frame), each readable on its own:
accuracy vs shots with 95% CI bars; accuracy vs adaptation cost (ms per episode, log x) per shot
setting with the Pareto front; source-phase throughput per strategy. Fixed style, size and dpi, so a
figure's pixel size never depends on the data; colours from the Okabe-Ito palette (colour-blind safe),
assigned in the sorted order of all strategy names in the report, so a strategy has the same colour
(and marker) in every plot.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
DPI = 100
SIZES = {"accuracy-vs-shots": (9.0, 5.0), "accuracy-vs-cost": (12.0, 5.0), "source-throughput": (9.0, 5.0)}
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 9,
         "figure.facecolor": "white", "savefig.facecolor": "white"}


def strategy_styles(names: list[str]) -> dict[str, dict[str, Any]]:
    """Colour, marker and line style per strategy, from the sorted order of the names."""
    styles = {}
    for i, name in enumerate(sorted(set(names))):
        styles[name] = {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[(i + i // 8) % len(MARKERS)],
                        "linestyle": LINESTYLES[(i // 8) % len(LINESTYLES)]}
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


def _plain_log_ticks(ax, values: list[float]) -> None:
    """Plain numbers (not 4x10^2) on a log axis, and some room around a narrow range of values."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(fmt)
    lo, hi = (min(values), max(values)) if values else (1.0, 10.0)
    ax.xaxis.set_minor_formatter(fmt if hi / lo < 4 else NullFormatter())  # label minor ticks on narrow ranges
    if values:
        ax.set_xlim(lo / 1.25, hi * 1.25)


def _figure(kind: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZES[kind], dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _legend_handles(names: list[str], styles: dict[str, dict[str, Any]], lines: bool = True) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=styles[n]["color"], marker=styles[n]["marker"],
                   linestyle=styles[n]["linestyle"] if lines else "none", label=n) for n in names]


def accuracy_vs_shots(ok: pd.DataFrame, styles: dict, protocol: dict) -> bytes:
    fig = _figure("accuracy-vs-shots")
    ax = fig.add_subplot(1, 1, 1)
    shots = sorted(ok["shots"].unique().tolist())
    for name in sorted(ok["strategy"].unique()):
        rows = ok[ok["strategy"] == name].sort_values("shots")
        ax.errorbar(rows["shots"], 100 * rows["accuracy"], yerr=100 * rows["ci95"], capsize=4, label=name,
                    color=styles[name]["color"], marker=styles[name]["marker"],
                    linestyle=styles[name]["linestyle"])
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.minorticks_off()
    if len(shots) == 1:
        ax.set_xlim(shots[0] / 2, shots[0] * 2)
    ax.set_xlabel("Shots per class, K (log scale)")
    ax.set_ylabel("Query accuracy (%)")
    ax.set_title(f"{protocol['ways']}-way accuracy vs shots on {protocol['dataset']} "
                 f"({protocol['episodes']} episodes; bars: 95% CI)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="Strategy")
    fig.tight_layout()
    return _png(fig)


def accuracy_vs_cost(ok: pd.DataFrame, styles: dict, protocol: dict) -> bytes:
    fig = _figure("accuracy-vs-cost")
    shots = sorted(ok["shots"].unique().tolist())
    names = sorted(ok["strategy"].unique())
    ax = None
    for k, s in enumerate(shots):
        ax = fig.add_subplot(1, len(shots), k + 1)
        rows = ok[(ok["shots"] == s) & ok["ms_per_episode"].notna()].sort_values("strategy")
        points = list(zip(rows["ms_per_episode"], 100 * rows["accuracy"], strict=True))
        for (_, r), (x, y) in zip(rows.iterrows(), points, strict=True):
            st = styles[r["strategy"]]
            ax.errorbar([x], [y], yerr=[100 * r["ci95"]], color=st["color"], marker=st["marker"], markersize=7,
                        capsize=3, linestyle="none")
        front = [points[i] for i in pareto_front(points)]
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], color="0.4", linestyle="--", linewidth=1,
                    drawstyle="steps-post", zorder=0)
            ax.scatter([p[0] for p in front], [p[1] for p in front], s=220, facecolors="none",
                       edgecolors="0.2", linewidths=1.2, zorder=0)
        ax.set_xscale("log")
        _plain_log_ticks(ax, [p[0] for p in points])
        ax.set_xlabel("Adaptation cost (ms per episode, log scale)")
        ax.set_ylabel("Query accuracy (%)")
        ax.set_title(f"{s}-shot")
    from matplotlib.lines import Line2D

    handles = _legend_handles(names, styles, lines=False) + [
        Line2D([], [], color="0.4", linestyle="--", marker="o", markerfacecolor="none", markeredgecolor="0.2",
               markersize=12, label="Pareto front")]
    fig.suptitle(f"{protocol['ways']}-way accuracy vs adaptation cost on {protocol['dataset']} "
                 "(circled: no strategy is both faster and more accurate)")
    fig.legend(handles=handles, loc="center right", title="Strategy")
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    return _png(fig)


def source_throughput(ok: pd.DataFrame, styles: dict) -> bytes:
    fig = _figure("source-throughput")
    ax = fig.add_subplot(1, 1, 1)
    rows = (ok[ok["source_images_per_second"].notna()]
            .groupby("strategy", sort=True).agg(ips=("source_images_per_second", "mean"),
                                                phase=("source_phase", "first")))
    names = list(rows.index)[::-1]  # first name on top
    values = [rows.loc[n, "ips"] for n in names]
    bars = ax.barh(range(len(names)), values, color=[styles[n]["color"] for n in names])
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3)
    ax.set_yticks(range(len(names)), [f"{n}\n({rows.loc[n, 'phase']})" for n in names])
    ax.set_xlabel("Source-phase throughput (images processed per second; mean over shot settings)")
    ax.set_ylabel("Strategy (source phase)")
    ax.grid(False, axis="y")
    ax.set_xlim(0, max(values, default=1) * 1.15 or 1)
    ax.set_title("Source-phase throughput per strategy (equal source phases are shared: one measurement)")
    ax.legend(handles=_legend_handles(names[::-1], styles, lines=False), loc="upper left",
              bbox_to_anchor=(1.01, 1.0), title="Strategy")
    fig.tight_layout()
    return _png(fig)


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
        images = {f"{stem}-accuracy-vs-shots.png": accuracy_vs_shots(ok, styles, protocol),
                  f"{stem}-accuracy-vs-cost.png": accuracy_vs_cost(ok, styles, protocol)}
        if ok["source_images_per_second"].notna().any():
            images[f"{stem}-source-throughput.png"] = source_throughput(ok, styles)
    return images
