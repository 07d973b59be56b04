"""Formatting helpers shared by the report's renderers (no torch, no strategy imports)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.provenance import ROOT


def settings_text(rec: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (rec.get("settings") or {}).items())


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value: Any, fmt: str) -> str:
    return "-" if missing(value) else format(value, fmt)


def cell(text: Any) -> str:
    """A table cell: one line, with pipes escaped so a reason or a setting cannot break the table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def pp(value: float) -> str:
    """A difference in percentage points, signed."""
    return f"{100 * value:+.2f}"


def p_text(value: Any) -> str:
    if missing(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


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
