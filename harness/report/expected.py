"""What a run directory should hold, from its config.json: one record per (strategy, shots, budget scale),
``strategies`` keys x ``shots`` x ``budget_scales``. A unit without a record (the run is still going, was
stopped, or a record was removed) is reported, and shown as a row with status ``missing``.

A strategy skipped at some shot setting (a missing framework, an unsupported backbone) is skipped at every
budget scale, so its one skipped record stands for all of them."""

from __future__ import annotations

from dataclasses import dataclass

from harness.report.cells import scale_text
from harness.results import RunResults
from harness.schema import RunHeader, scale_value

MISSING_REASON = "no record yet: the run is still going or was stopped, or its record was removed"


@dataclass(frozen=True)
class MissingUnit:
    """A unit config.json names that no run directory has a record of (a frame row with status ``missing``);
    ``family``: that of the strategy's other records, None when it has none."""

    run: str
    strategy: str
    shots: int
    budget_scale: float
    family: str | None
    status: str = "missing"
    reason: str = MISSING_REASON


def expected_units(header: RunHeader) -> list[tuple[str, int, float]]:
    """(strategy, shots, budget scale) of every unit config.json asks for."""
    scales = [scale_value(s) for s in (header.budget_scales or [1.0])]
    return [(name, shots, scale) for name in header.strategies or {} for shots in header.shots or []
            for scale in scales]


def missing_units(runs: list[RunResults], names: list[str]) -> list[MissingUnit]:
    """The units config.json names but no run directory has a record of, once each."""
    records = [r for run in runs for r in run.records]
    present = {(r.strategy, r.shots, r.budget_scale) for r in records}
    skipped = {(r.strategy, r.shots) for r in records if r.status == "skipped"}
    family = {r.strategy: r.family for r in records}
    units: dict[tuple[str, int, float], MissingUnit] = {}
    for name, run in zip(names, runs, strict=True):
        for strategy, shots, scale in expected_units(run.header):
            key = (strategy, shots, scale)
            if key in present or (strategy, shots) in skipped or key in units:
                continue
            units[key] = MissingUnit(name, strategy, shots, scale, family.get(strategy))
    return list(units.values())


def unit_label(strategy: str, shots: int, scale: float) -> str:
    return f"{strategy} {shots}-shot" + ("" if scale == 1 else f" {scale_text(scale)}")
