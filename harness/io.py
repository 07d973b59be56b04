"""Atomic file writes and JSON reading (no torch): a crash never leaves a half-written file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.faults import checkpoint


def atomic_write_bytes(path: Path, data: bytes, fault_point: str | None = None) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if fault_point:
        checkpoint(fault_point)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any, fault_point: str | None = None) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode(), fault_point)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read {path} ({e}); it is not a results file of this harness") from None
