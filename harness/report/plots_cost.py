"""Accuracy against cost (harness/report/plots.py has the shared style and helpers):

- accuracy vs cost: per shot setting, one panel against adaptation cost (ms per episode) and one against
  total compute (``cells.total_compute``: source + episode FLOPs per trained model when recorded for every
  strategy, else source images processed), each with its Pareto front;
- accuracy vs source compute: per shot setting, one line per strategy through its budget scales (source
  TFLOP when recorded, else images processed; log x; 95% CI bars); a curve still rising at its largest
  scale ("not converged at this budget") is marked.
"""

from __future__ import annotations

import pandas as pd

from harness.report.cells import clean, source_compute, total_compute
from harness.report.plot_style import figure, legend_handles, main_scale, pareto_front, plain_log_ticks, png
from harness.report.scales import NOT_CONVERGED


def _cost_panel(ax, rows: list[dict], xs: list[float | None], styles: dict, xlabel: str, title: str) -> None:
    points = [(x, 100 * r["accuracy"], r) for x, r in zip(xs, rows, strict=True) if x is not None and x > 0]
    for x, y, r in points:
        st = styles[r["strategy"]]
        ax.errorbar([x], [y], yerr=[100 * (r["ci95"] or 0)], color=st["color"], marker=st["marker"],
                    markerfacecolor=st["markerfacecolor"], markersize=7, capsize=3, linestyle="none")
    front = [points[i] for i in pareto_front([(x, y) for x, y, _ in points])]
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], color="0.4", linestyle="--", linewidth=1,
                drawstyle="steps-post", zorder=0)
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=220, facecolors="none", edgecolors="0.2",
                   linewidths=1.2, zorder=0)
    if not points:
        ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xscale("log")
    plain_log_ticks(ax, [p[0] for p in points])
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("Query accuracy (%)")
    ax.set_title(title)


def accuracy_vs_cost(ok: pd.DataFrame, styles: dict, protocol: dict) -> bytes:
    fig = figure("accuracy-vs-cost")
    ok, note = main_scale(ok)
    shots = sorted(ok["shots"].unique().tolist())
    names = sorted(ok["strategy"].unique())
    for k, s in enumerate(shots):
        rows = [clean(r) for r in ok[ok["shots"] == s].sort_values("strategy").to_dict("records")]
        _cost_panel(fig.add_subplot(2, len(shots), k + 1), rows, [r["ms_per_episode"] for r in rows], styles,
                    "Adaptation cost (ms per episode, log scale)", f"{s}-shot: adaptation cost")
        measure = total_compute(rows)
        xs, unit, rule = measure if measure else ([None] * len(rows), "", "not recorded")
        label = ("Total compute (TFLOP per model: source + episodes; log)" if unit == "TFLOP" else
                 "Source images processed (FLOPs not recorded; log)" if unit else "Total compute")
        _cost_panel(fig.add_subplot(2, len(shots), len(shots) + k + 1), rows, xs, styles, label,
                    f"{s}-shot: total compute")
    from matplotlib.lines import Line2D

    handles = legend_handles(names, styles, lines=False) + [
        Line2D([], [], color="0.4", linestyle="--", marker="o", markerfacecolor="none", markeredgecolor="0.2",
               markersize=12, label="Pareto front")]
    fig.suptitle(f"{protocol['ways']}-way accuracy vs cost on {protocol['dataset']}{note} (bars: 95% CI; "
                 "circled: no strategy is both cheaper and more accurate)")
    fig.legend(handles=handles, loc="center right", title="Strategy", fontsize=8 if len(names) > 16 else 9)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    return png(fig)


def accuracy_vs_compute(ok: pd.DataFrame, styles: dict, protocol: dict) -> bytes:
    fig = figure("accuracy-vs-compute")
    shots = sorted(ok["shots"].unique().tolist())
    names = sorted(ok["strategy"].unique())
    every = [clean(r) for r in ok.to_dict("records")]
    measure = source_compute(every)
    xs, unit = measure if measure else ([None] * len(every), "")
    x_of = {(r["strategy"], r["shots"], r["budget_scale"]): x for r, x in zip(every, xs, strict=True)}
    flagged = False
    for k, s in enumerate(shots):
        ax = fig.add_subplot(1, len(shots), k + 1)
        values = []
        for name in names:
            rows = sorted((r for r in every if r["strategy"] == name and r["shots"] == s),
                          key=lambda r: r["budget_scale"])
            pts = [(x_of[(name, s, r["budget_scale"])], r) for r in rows]
            pts = [(x, r) for x, r in pts if x is not None and x > 0]
            if not pts:
                continue
            st = styles[name]
            ax.errorbar([x for x, _ in pts], [100 * r["accuracy"] for _, r in pts],
                        yerr=[100 * (r["ci95"] or 0) for _, r in pts], color=st["color"], marker=st["marker"],
                        markerfacecolor=st["markerfacecolor"], linestyle=st["linestyle"], capsize=3, linewidth=1.4)
            values += [x for x, _ in pts]
            x, top = pts[-1]
            if top.get("not_converged"):
                flagged = True
                ax.scatter([x], [100 * top["accuracy"]], s=260, marker="^", facecolors="none", edgecolors="0.15",
                           linewidths=1.3, zorder=5)
        ax.set_xscale("log")
        plain_log_ticks(ax, values)
        ax.set_xlabel("Source compute per model (" + ("TFLOP" if unit == "TFLOP" else "images processed") +
                      ", log scale)")
        ax.set_ylabel("Query accuracy (%)")
        ax.set_title(f"{s}-shot")
    from matplotlib.lines import Line2D

    handles = legend_handles(names, styles)
    if flagged:
        handles.append(Line2D([], [], color="none", marker="^", markerfacecolor="none", markeredgecolor="0.15",
                              markersize=13, label=f"still rising:\n{NOT_CONVERGED}"))
    fig.suptitle(f"{protocol['ways']}-way accuracy vs source compute on {protocol['dataset']} "
                 "(one point per budget scale; bars: 95% CI)")
    fig.legend(handles=handles, loc="center right", title="Strategy", fontsize=8 if len(names) > 16 else 9)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    return png(fig)
