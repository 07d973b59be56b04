"""Budget scales: a run may train every source phase at several budgets (``--budget-scale``). For each
(strategy, shots) with two or more scales, the accuracy gain of the largest scale over the second largest,
tested paired on the shared episodes with ``harness.stats.difference`` (95% CI; training seeds included
when both have replicates). A curve whose gain is positive with p < 0.05 is still rising at the largest
budget: "not converged at this budget"."""

from __future__ import annotations

from typing import Any

from harness.report.cells import RunRecord, record_difference
from harness.stats import ALPHA

NOT_CONVERGED = "not converged at this budget"


def scale_gains(entries: list[RunRecord]) -> dict[tuple[str, str, int, float], dict[str, Any]]:
    """{(run, strategy, shots, largest scale): frame columns scale_gain, scale_gain_ci_low/high,
    scale_gain_p, not_converged} for each (strategy, shots) with successful records at two or more scales."""
    curves: dict[tuple[str, int], list[RunRecord]] = {}
    for e in entries:
        if e.record.status == "ok" and e.record.accuracy is not None:
            curves.setdefault((e.record.strategy, e.record.shots), []).append(e)
    gains = {}
    for (strategy, shots), curve in sorted(curves.items()):
        curve = sorted(curve, key=lambda e: e.record.budget_scale)
        if len(curve) < 2:
            continue
        top, second = curve[-1].record, curve[-2].record
        paired = bool(top.episode_fingerprint) and top.episode_fingerprint == second.episode_fingerprint
        d = record_difference(top, second, paired)
        gain: dict[str, Any] = {"scale_gain": top.accuracy - second.accuracy}
        if d is not None:
            gain.update(scale_gain=d.delta, scale_gain_ci_low=d.low, scale_gain_ci_high=d.high, scale_gain_p=d.p_raw,
                        not_converged=bool(d.delta > 0 and d.p_raw < ALPHA))
        gains[(curve[-1].run, strategy, shots, top.budget_scale)] = gain
    return gains
