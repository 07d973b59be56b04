"""The one-paragraph summary at the top of the leaderboard: per shot setting (at the largest budget scale),
the best strategy with its accuracy ± CI, the strategies statistically tied with it, what the cheapest
of the tied strategies costs next to the best, by total compute (``cells.total_compute``: source FLOPs +
episodes × episode FLOPs per trained model when recorded for all of them, else source images processed), and
whether transfer beats the best no-transfer row (``pixels-probe``, ``random-probe``) and by how much."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report.cells import clean, pct, scale_text, sig, total_compute
from harness.report.frame import EXTERNAL
from harness.report.scales import NOT_CONVERGED

#: the family of the no-transfer baselines (strategies/pixels.py, strategies/random_init.py)
NO_TRANSFER = "no-transfer"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _cost_sentence(best: dict[str, Any], tied: list[dict[str, Any]]) -> str:
    rows = [best, *tied]
    measure = total_compute(rows)
    if measure is None:
        return " Their costs are not recorded for all of them, so no cost ratio is given."
    values, _, rule = measure
    cheapest = min(range(len(rows)), key=lambda i: (values[i], i))
    if cheapest == 0:
        return f" The best is also the cheapest of the tied strategies: {sig(values[0])} {rule}."
    ratio = values[cheapest] / values[0] if values[0] else float("nan")
    return (f" The cheapest tied strategy, {rows[cheapest]['strategy']}, costs {sig(ratio, 2)}× as much as the best: "
            f"{sig(values[cheapest])} vs {sig(values[0])} {rule}.")


def _baseline_sentence(best: dict[str, Any], ranked: list[dict[str, Any]]) -> str:
    """Is transfer worth it at all: the best row against the best no-transfer row (``pixels-probe``,
    ``random-probe``), from that row's paired Δ to the best (its CI at the table's Bonferroni level)."""
    if best.get("family") == NO_TRANSFER:
        return (f" No strategy that transfers from the source beats the no-transfer baseline {best['strategy']} "
                f"here: it is the best row.")
    baselines = [r for r in ranked if r.get("family") == NO_TRANSFER]
    if not baselines:
        return ""
    bar = baselines[0]  # ranked: the most accurate no-transfer row
    if bar.get("delta_vs_best") is None:
        return ""
    delta = -100 * bar["delta_vs_best"]
    text = f" Transfer's gain over the best no-transfer row, {bar['strategy']}, is {delta:+.2f} points"
    if bar.get("delta_ci_low") is None:
        return text + " (no paired interval recorded)."
    level = f"{100 * bar['delta_ci_level']:.4g}%"
    interval = f"{level} CI {-100 * bar['delta_ci_high']:+.2f} to {-100 * bar['delta_ci_low']:+.2f}, paired"
    if bar.get("tied_with_best"):
        return text + f" ({interval}): not significant, so here transfer is not shown to beat no transfer."
    return text + f" ({interval})."


def summary_paragraph(frame: pd.DataFrame) -> str:
    """'**Summary.** ...': one or two sentences per shot setting; '' when nothing ran."""
    multi_scale = frame["budget_scale"].nunique() > 1
    parts = []
    for shots in sorted(frame["shots"].unique().tolist()):
        rows = frame[(frame["shots"] == shots) & (frame["family"] != EXTERNAL)]  # external rows are not ranked
        ok = rows[rows["status"] == "ok"]
        if ok.empty:
            external = ((frame["shots"] == shots) & (frame["status"] == "ok")).any()
            parts.append(f"{shots}-shot: " + ("only rows of external pretraining have results (not ranked)."
                                             if external else "no strategy has a result."))
            continue
        scale = ok["budget_scale"].max()
        group = [clean(r) for r in rows[rows["budget_scale"] == scale].to_dict("records")]
        ranked = sorted((r for r in group if r["status"] == "ok"), key=lambda r: r["rank"])
        best, tied = ranked[0], [r for r in ranked[1:] if r["tied_with_best"]]
        where = f"{shots}-shot" + (f" (source budget {scale_text(scale)}, the largest)" if multi_scale else "")
        text = f"{where}: **{best['strategy']}** is best with {pct(best['accuracy'], best['ci95'])}% accuracy"
        if len(ranked) == 1:
            text += " (the only strategy with a result)."
        elif not tied:
            text += "; no other strategy is statistically tied with it."
        else:
            verb = "is" if len(tied) == 1 else "are"
            text += f"; {_names([r['strategy'] for r in tied])} {verb} statistically tied with it."
            text += _cost_sentence(best, tied)
        text += _baseline_sentence(best, ranked)
        rising = [r["strategy"] for r in group if r.get("not_converged")]
        if rising:
            text += f" Still rising at the largest budget ({NOT_CONVERGED}): {_names(rising)}."
        absent = sum(r["status"] == "missing" for r in group)
        if absent:
            text += f" {absent} strateg{'y has' if absent == 1 else 'ies have'} no record yet."
        parts.append(text)
    return "**Summary.** " + " ".join(parts) if parts else ""
