"""The pieces every leaderboard plot shares (harness/report/plots.py, plots_cost.py, plots_calibration.py): the
fixed style, sizes and dpi, the per-strategy styles (Okabe-Ito colours, markers, line styles), the figure and
PNG helpers, log-axis ticks, the Pareto front and the rows at the largest budget scale. No pyplot."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from harness.report.cells import scale_text

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
    return ok[ok["budget_scale"] == scale], f", source budget {scale_text(scale)}"
