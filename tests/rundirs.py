"""Reading a run directory in tests: its records by (strategy, shots)."""

from __future__ import annotations

import json
from pathlib import Path


def records(run_dir: Path) -> dict[tuple[str, int], dict]:
    """Every record file of ``run_dir`` (``records/*.json``), by (strategy, shots)."""
    found = {}
    for p in (run_dir / "records").glob("*.json"):
        r = json.loads(p.read_text())
        found[(r["strategy"], r["shots"])] = r
    return found
