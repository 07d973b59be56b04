"""Formatting helpers shared by the report's renderers (no torch, no strategy imports), and the cost
measures every renderer uses, so a cost means the same in the tables, the summary and the plots."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.provenance import ROOT
from harness.schema import Record
from harness.stats import Difference, difference


@dataclass(frozen=True)
class RunRecord:
    """A record with the name of the run it came from (the frame's ``run`` column)."""

    run: str
    record: Record


def settings_text(record: Record) -> str:
    """A record's settings as one line: "key: value, ..."."""
    return ", ".join(f"{k}: {v}" for k, v in (record.settings or {}).items())


def missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def clean(row: dict[str, Any]) -> dict[str, Any]:
    """A frame row with every missing value (NaN, pd.NA) as None."""
    return {k: None if missing(v) else v for k, v in row.items()}


def num(value: Any, fmt: str) -> str:
    return "-" if missing(value) else format(value, fmt)


def sig(value: float, digits: int = 3) -> str:
    """``digits`` significant digits, never in exponent notation (1,234 / 12.3 / 0.0123)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def cell(text: Any) -> str:
    """A table cell: one line, with pipes escaped so a reason or a setting cannot break the table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def pp(value: float) -> str:
    """A difference in percentage points, signed (no "-0.00")."""
    points = 100 * value
    return f"{0.0 if abs(points) < 0.005 else points:+.2f}"


def pct(accuracy: Any, ci: Any) -> str:
    """An accuracy ± its CI half-width, in percent."""
    return "-" if missing(accuracy) else f"{100 * accuracy:.2f} ± {100 * (0 if missing(ci) else ci):.2f}"


def p_text(value: Any) -> str:
    if missing(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def level_text(level: float) -> str:
    """A confidence level as a percentage: 0.975 -> '97.5%'."""
    return f"{100 * level:.3g}%"


def scale_text(scale: float) -> str:
    """A budget scale's label: "×0.5"."""
    return f"×{scale:g}"


def run_names(run_dirs: Sequence[str | Path]) -> list[str]:
    return [Path(d).resolve().name for d in run_dirs]


def code_link(relative: str | None, out: str | Path | None) -> str | None:
    """Relative link from the report's folder to a project file (a record's ``code`` entry), when the file
    exists in this checkout."""
    if not relative or out is None:
        return None
    path = (ROOT / relative).resolve()
    if not path.is_file():
        return None
    return Path(os.path.relpath(path, Path(out).resolve().parent)).as_posix()


# --- costs (per trained model, i.e. per replicate) ---------------------------------------------------------

#: what total compute is, for the two measures ``total_compute`` may choose
TOTAL_FLOPS_RULE = "TFLOP of total compute (source FLOPs + episodes × episode FLOPs, per trained model)"
IMAGES_RULE = "source images processed (FLOPs not recorded, so the episode phase is left out)"


def source_cost(row: dict[str, Any]) -> str:
    """The source phase's cost of one trained model: TFLOP when recorded, else images processed."""
    if not missing(row.get("source_flops")):
        return f"{sig(row['source_flops'] / 1e12)} TFLOP"
    if not missing(row.get("source_images_processed")):
        return f"{row['source_images_processed']:,.0f} img"
    return "-"


def source_cost_time(row: dict[str, Any]) -> str:
    """The source phase's cost of one trained model and its wall seconds on its device (the run's time split
    over its replicates; a cached model shows the time recorded when it was trained): "0.0834 TFLOP, 77 s"."""
    cost = source_cost(row)
    if missing(row.get("source_seconds")):
        return cost
    replicates = row.get("replicates")
    seconds = float(row["source_seconds"]) / (1 if missing(replicates) else max(1, int(replicates)))
    return f"{cost}, {num(seconds, ',.0f' if seconds >= 10 else '.1f')} s"


def total_flops(row: dict[str, Any]) -> float | None:
    """source FLOPs + episodes × episode FLOPs (one trained model), + the tuning's FLOPs of a tuned row, when all
    are recorded."""
    if missing(row.get("source_flops")) or missing(row.get("episode_flops")) or missing(row.get("episodes")):
        return None
    tuning = 0.0
    if not missing(row.get("tuning")):
        if missing(row.get("tuning_flops")):
            return None
        tuning = float(row["tuning_flops"])
    return float(row["source_flops"]) + float(row["episodes"]) * float(row["episode_flops"]) + tuning


def total_compute(rows: list[dict[str, Any]]) -> tuple[list[float | None], str, str] | None:
    """One measure of total compute for all ``rows`` (so they compare): (values, unit, rule). Total FLOPs
    when every row has them, else source images processed when every row has them, else None."""
    flops = [total_flops(r) for r in rows]
    if rows and all(f is not None for f in flops):
        tuned = any(not missing(r.get("tuning")) for r in rows)
        return [f / 1e12 for f in flops], "TFLOP", TOTAL_FLOPS_RULE.replace(
            "episode FLOPs,", "episode FLOPs + the tuning's FLOPs,") if tuned else TOTAL_FLOPS_RULE
    images = [r.get("source_images_processed") for r in rows]
    if rows and not any(missing(i) for i in images):
        return [float(i) for i in images], "images", IMAGES_RULE
    return None


def source_compute(rows: list[dict[str, Any]]) -> tuple[list[float | None], str] | None:
    """One measure of source compute for ``rows`` (for an axis): TFLOP when every row has source FLOPs,
    else images processed; rows without the measure get None."""
    if not rows:
        return None
    if all(not missing(r.get("source_flops")) for r in rows):
        return [r["source_flops"] / 1e12 for r in rows], "TFLOP"
    values = [None if missing(r.get("source_images_processed")) else float(r["source_images_processed"])
              for r in rows]
    return (values, "images processed") if any(v is not None for v in values) else None


def record_difference(a: Record, b: Record, paired: bool, family: int = 1,
                      matrix: str = "replicate_episode_accuracies") -> Difference | None:
    """``a - b`` of two records (harness.stats ``difference``): paired on the episodes when ``paired``, and
    by training seed when both carry the replicate x episode matrix and share their source model seed by
    seed (equal ``source_keys``); records without the matrix (schema 3) count their seeds as independent.
    ``matrix``: another replicate x episode field to compare (e.g. ``episode_nll``) instead of accuracy."""
    if matrix != "replicate_episode_accuracies":
        ma, mb = np.asarray(getattr(a, matrix), dtype=float), np.asarray(getattr(b, matrix), dtype=float)
        return difference(ma.mean(0), mb.mean(0), ma.mean(1) if len(ma) > 1 else [],
                          mb.mean(1) if len(mb) > 1 else [], paired, family, a_matrix=ma, b_matrix=mb,
                          a_sources=a.source_keys, b_sources=b.source_keys)
    return difference(a.episode_accuracies or [], b.episode_accuracies or [],
                      a.replicate_accuracies or [], b.replicate_accuracies or [], paired, family,
                      a_matrix=a.replicate_episode_accuracies, b_matrix=b.replicate_episode_accuracies,
                      a_sources=a.source_keys, b_sources=b.source_keys)
