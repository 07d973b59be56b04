"""Resume detection: which evaluation units of a plan a run directory already holds, finished as planned.

A unit is complete when its record is ``ok`` with the same hyperparameters (a tuned record: those it was
tuned from), the same tuning settings, source-phase settings, source models and episode count, and its
predictions file is as written (a record from before predictions were kept counts without one). A pure
function of the run directory and the plan: no torch, nothing written.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.io import read_json
from harness.predictions import digest
from harness.protocol import Protocol
from harness.results import record_path
from harness.schema import Record
from harness.units import EvalUnit, Plan


def unit_record_path(out: Path, unit: EvalUnit) -> Path:
    return record_path(out, unit.strategy.name, unit.shots, unit.scale)


def completed_units(out: Path, plan: Plan, protocol: Protocol) -> dict[str, Record]:
    """Evaluation unit id -> its finished record in ``out``, for every unit of ``plan`` that needs no rerun."""
    tuned = (protocol.tune, protocol.tune_episodes) if protocol.tune else (None, None)
    done = {}
    for unit in plan.evaluations:
        path = unit_record_path(out, unit)
        if not path.is_file():
            continue
        try:
            old = Record.from_json(read_json(path))
        except UsageError:
            continue
        s = unit.strategy
        tuning = old.tuning or {}
        params = tuning.get("untuned", old.params)  # a tuned record: the hyperparameters it was tuned from
        if old.status == "ok" and params == s.params() and (tuning.get("trials"), tuning.get("episodes")) == tuned \
                and old.source_params == s.source.params() and old.source_keys == list(unit.source_keys) \
                and old.episodes == protocol.episodes and _intact(out, old):
            done[unit.id] = old
    return done


def _intact(out: Path, record: Record) -> bool:
    if record.predictions is None:
        return True
    path = out / record.predictions
    return path.is_file() and digest(path.read_bytes()) == record.predictions_sha256
