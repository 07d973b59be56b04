"""Calibration plots, one pair per shot setting (at the largest budget scale): a reliability diagram (accuracy
against mean confidence in each of the 15 confidence bins, every strategy with predictions; on the diagonal
a strategy is calibrated, below it over-confident) and per-class accuracy (each novel class, every strategy,
95% CI bars, points dodged sideways). Rows without predictions are left out."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report.plot_style import figure, legend_handles, png


def reliability_diagram(rows: list[dict[str, Any]], styles: dict, shots: int, note: str) -> bytes:
    fig = figure("reliability")
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle=":")
    for r in rows:
        rel = r["reliability"]
        points = [(c, a) for c, a in zip(rel["confidence"], rel["accuracy"], strict=True) if c is not None]
        style = styles[r["strategy"]]
        ax.plot([c for c, _ in points], [a for _, a in points], color=style["color"], marker=style["marker"],
                markerfacecolor=style["markerfacecolor"], linestyle=style["linestyle"], markersize=5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence in bin (top-1 probability; 15 equal-width bins)")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"Reliability diagram, {shots}-shot{note}: below the diagonal = over-confident")
    names = [r["strategy"] for r in rows]
    ax.legend(handles=legend_handles(names, styles), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return png(fig)


def per_class_accuracy(rows: list[dict[str, Any]], styles: dict, shots: int, note: str) -> bytes:
    fig = figure("per-class")
    ax = fig.add_subplot(1, 1, 1)
    classes = list(dict.fromkeys(c for r in rows for c in r["class_accuracy"]))
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        style = styles[r["strategy"]]
        xs, ys, errors = [], [], []
        for j, name in enumerate(classes):
            value = r["class_accuracy"].get(name)
            if value is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(100 * value["accuracy"])
                errors.append(100 * (value["ci95"] or 0))
        ax.errorbar(xs, ys, yerr=errors, color=style["color"], marker=style["marker"],
                    markerfacecolor=style["markerfacecolor"], linestyle="none", markersize=5, capsize=2)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=45 if len(classes) > 8 else 0, ha="right" if len(classes) > 8 else "center")
    ax.set_ylim(0, 100)
    ax.set_ylabel("query accuracy of the class (%), 95% CI over its episodes")
    ax.set_title(f"Per-class accuracy, {shots}-shot{note}")
    names = [r["strategy"] for r in rows]
    ax.legend(handles=legend_handles(names, styles, lines=False), loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8)
    fig.tight_layout()
    return png(fig)


def calibration_plots(ok: pd.DataFrame, styles: dict, stem: str, note: str) -> dict[str, bytes]:
    """{file name: PNG} for each shot setting with predictions: ``<stem>-reliability-<k>shot.png`` and
    ``<stem>-per-class-<k>shot.png``."""
    images: dict[str, bytes] = {}
    for shots in sorted(ok["shots"].unique().tolist()):
        rows = [r for r in ok[ok["shots"] == shots].to_dict("records") if isinstance(r.get("reliability"), dict)]
        if not rows:
            continue
        rows.sort(key=lambda r: (-r["accuracy"], r["strategy"]))
        images[f"{stem}-reliability-{shots}shot.png"] = reliability_diagram(rows, styles, shots, note)
        images[f"{stem}-per-class-{shots}shot.png"] = per_class_accuracy(rows, styles, shots, note)
    return images
