"""Beyond accuracy, in the leaderboard: one calibration table per shot setting (NLL with its paired
difference to the best row, Brier score, ECE with its bootstrap interval, top-1 confidence), and per strategy
the per-class accuracies and confusion matrices for its details block. The ranking stays by accuracy.
A pure function of the leaderboard frame (harness/predictions.py defines every metric)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.report.cells import cell, clean, missing, pct, scale_text

INTRO = ("Scored from each query's probabilities, the softmax of the strategy's outputs as given, without "
         "temperature scaling (ProtoNet's outputs are negative squared distances, the others' logits; a row's "
         "details name them): NLL, the mean negative log-likelihood of the true class (lower is better); Brier score "
         "(sum over the ways of squared errors, 0..2, lower is better); each with its Δ to the best row by "
         "accuracy, paired on the episodes (95% CI, one comparison per row); ECE, the expected calibration error "
         "over 15 equal-width confidence bins (Guo et al. 2017; 95% percentile-bootstrap interval over episodes); "
         "confidence, the mean top-1 probability (above the accuracy: over-confident). NLL, Brier and confidence "
         "are ± their 95% CI, as accuracy. Rows are in the ranking's order.")
ABSENT = ("Calibration and per-class results: not in these records (written before per-query predictions were "
          "kept); rerun them to get NLL, Brier score, ECE, per-class accuracy and confusion matrices.")


def has_calibration(frame: pd.DataFrame) -> bool:
    return bool(frame["nll"].notna().any())


def _number(value: Any, ci: Any, fmt: str = ".3f") -> str:
    return "-" if missing(value) else f"{value:{fmt}} ± {0 if missing(ci) else ci:{fmt}}"


def _delta(r: dict[str, Any], name: str) -> str:
    if missing(r[f"{name}_delta"]):
        return "best" if r["rank"] == 1 else "-"
    low, high = r[f"{name}_ci_low"], r[f"{name}_ci_high"]
    return f"{r[f'{name}_delta']:+.3f}" + ("" if missing(low) else f" [{low:+.3f}, {high:+.3f}]")


def _ece(r: dict[str, Any]) -> str:
    if missing(r["ece"]):
        return "-"
    return f"{100 * r['ece']:.2f}" + ("" if missing(r["ece_ci_low"]) else
                                     f" [{100 * r['ece_ci_low']:.2f}, {100 * r['ece_ci_high']:.2f}]")


def calibration_table(group: pd.DataFrame) -> str:
    """Rank, strategy, accuracy, NLL, Δ NLL to best, Brier, ECE, confidence: the rows with probabilities."""
    rows = [clean(r) for r in group[(group["status"] == "ok")].to_dict("records")]
    body = [[r["rank_label"], r["strategy"], pct(r["accuracy"], r["ci95"]), _number(r["nll"], r["nll_ci95"]),
             _delta(r, "nll"), _number(r["brier"], r["brier_ci95"]), _delta(r, "brier"), _ece(r),
             pct(r["confidence"], r["confidence_ci95"])] for r in rows]
    headers = ["#", "Strategy", "Accuracy (%)", "NLL", "Δ NLL to best [95% CI]", "Brier", "Δ Brier to best [95% CI]",
               "ECE (%) [95% CI]", "Confidence (%)"]
    return tabulate([[cell(c) for c in row] for row in body], headers=headers, tablefmt="pipe",
                    disable_numparse=True)


def calibration_section(groups: list[tuple[int, float, pd.DataFrame]], multi_scale: bool) -> list[str]:
    """'## Calibration' with one table per shot setting, or the line saying the records have none."""
    frame = pd.concat([g for _, _, g in groups]) if groups else None
    if frame is None or not (frame["status"] == "ok").any():
        return []
    if not has_calibration(frame):
        return ["", ABSENT]
    lines = ["", "## Calibration", "", INTRO]
    for shots, scale, group in groups:
        if not group["nll"].notna().any():
            continue
        title = f"### {shots}-shot" + (f", source budget {scale_text(scale)}" if multi_scale else "")
        lines += ["", title, "", calibration_table(group)]
    without = sorted(set(frame[(frame["status"] == "ok") & frame["nll"].isna()]["strategy"]))
    if without:
        lines += ["", cell(f"Without predictions (records written before they were kept): {', '.join(without)}.")]
    return lines


def class_table(rows: list[dict[str, Any]]) -> list[str]:
    """Per novel class: accuracy ± 95% CI over the episodes it appears in, one column per row (shot setting)."""
    rows = [r for r in rows if isinstance(r.get("class_accuracy"), dict)]
    if not rows:
        return []
    names = list(dict.fromkeys(n for r in rows for n in r["class_accuracy"]))
    body = []
    for name in names:
        values = [r["class_accuracy"].get(name) for r in rows]
        body.append([name] + ["-" if v is None else pct(v["accuracy"], v["ci95"]) for v in values])
    headers = ["Class accuracy (%)"] + [f"{r['shots']}-shot" for r in rows]
    return ["", tabulate([[cell(c) for c in row] for row in body], headers=headers, tablefmt="pipe",
                         disable_numparse=True)]


def confusion_tables(rows: list[dict[str, Any]]) -> list[str]:
    """One confusion matrix per row (shot setting): rows the true class, columns the predicted one, counts of
    queries (all replicates)."""
    lines: list[str] = []
    for r in rows:
        confusion = r.get("confusion")
        if not isinstance(confusion, dict):
            continue
        classes = confusion["classes"]
        body = [[f"**{name}**"] + [f"{n:,}" for n in counts] for name, counts in
                zip(classes, confusion["counts"], strict=True)]
        scale = "" if r["budget_scale"] == 1 else f", source budget {scale_text(r['budget_scale'])}"
        lines += ["", f"Confusion, {r['shots']}-shot{scale} (rows: true class, columns: predicted; queries):", "",
                  tabulate([[cell(c) for c in row] for row in body], headers=["true \\ predicted", *classes],
                           tablefmt="pipe", disable_numparse=True)]
    return lines
