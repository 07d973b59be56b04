"""What a run directory should hold, from its config.json: one record per (strategy, shots, budget scale),
``strategies`` keys x ``shots`` x ``budget_scales``. A unit without a record (the run is still going, was
stopped, or a record was removed) is reported, and shown as a row with status ``missing``.

A strategy skipped at some shot setting (a missing framework, an unsupported backbone) is skipped at every
budget scale, so its one skipped record stands for all of them."""

from __future__ import annotations

from typing import Any

from harness.report.cells import scale_key
from harness.results import Run

MISSING_REASON = "no record yet: the run is still going or was stopped, or its record was removed"


def expected_units(config: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(strategy, shots, budget scale) of every unit config.json asks for."""
    scales = [scale_key(s) for s in (config.get("budget_scales") or [1.0])]
    return [(name, shots, scale) for name in config.get("strategies") or {} for shots in config.get("shots") or []
            for scale in scales]


def missing_records(runs: list[Run], names: list[str]) -> list[dict[str, Any]]:
    """Placeholder records (status ``missing``) for the units config.json names but no run directory has."""
    records = [r for _, _, recs in runs for r in recs]
    present = {(r["strategy"], r["shots"], scale_key(r.get("budget_scale"))) for r in records}
    skipped = {(r["strategy"], r["shots"]) for r in records if r.get("status") == "skipped"}
    family = {r["strategy"]: r.get("family") for r in records}
    placeholders: dict[tuple[str, int, float], dict[str, Any]] = {}
    for name, (config, _, _) in zip(names, runs, strict=True):
        for strategy, shots, scale in expected_units(config):
            key = (strategy, shots, scale)
            if key in present or (strategy, shots) in skipped or key in placeholders:
                continue
            placeholders[key] = {"strategy": strategy, "shots": shots, "budget_scale": scale, "status": "missing",
                                 "reason": MISSING_REASON, "family": family.get(strategy), "_run": name}
    return list(placeholders.values())


def unit_label(strategy: str, shots: int, scale: float) -> str:
    return f"{strategy} {shots}-shot" + ("" if scale == 1 else f" ×{scale:g}")
