"""On-disk cache of source-phase models.

Key: sha256 of the phase's class, its hyperparameters, the split, the seed, the budget and the data
fingerprint; strategies with equal source phases share an entry. Each entry is a ``.pt`` state dict
(loaded with ``weights_only=True``) and a ``.json`` sidecar with the training measurements and the
state dict's sha256. Both are written atomically; a missing or mismatching sidecar means the entry is
rebuilt, never used. A file lock keeps two runs from training and writing the same entry at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.faults import checkpoint
from harness.strategy import SourcePhase

CACHE_FORMAT = 1


def cache_key(phase: SourcePhase, context: dict[str, Any]) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "phase": f"{type(phase).__module__}.{type(phase).__name__}",
                       "params": phase.params(), **context}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def atomic_write_bytes(path: Path, data: bytes, fault_point: str | None = None) -> None:
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


@contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class SourceCache:
    def __init__(self, root: Path, warn: Callable[[str], None] = print):
        self.root = root / "source"
        self.warn = warn

    def paths(self, phase: SourcePhase, key: str) -> tuple[Path, Path]:
        stem = self.root / f"{phase.phase_name}-{key}"
        return stem.with_suffix(".pt"), stem.with_suffix(".json")

    def load(self, phase: SourcePhase, key: str, num_classes: int,
             device: torch.device) -> tuple[nn.Module, dict] | None:
        weights, meta_path = self.paths(phase, key)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            blob = weights.read_bytes()
            if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
                raise ValueError("content hash mismatch")
            state = torch.load(weights, map_location=device, weights_only=True)
            model = phase.build(num_classes).to(device)
            model.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - any damage means rebuild
            self.warn(f"source cache {weights.name} is corrupt ({e}); rebuilding it")
            meta_path.unlink(missing_ok=True)
            return None
        return model, meta

    def store(self, phase: SourcePhase, key: str, model: nn.Module, meta: dict) -> dict:
        weights, meta_path = self.paths(phase, key)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        tmp = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        blob = tmp.read_bytes()
        os.replace(tmp, weights)
        meta = {**meta, "sha256": hashlib.sha256(blob).hexdigest()}
        atomic_write_json(meta_path, meta)  # the sidecar last: its presence marks a complete entry
        return meta

    def get_or_train(self, phase: SourcePhase, key: str, num_classes: int, device: torch.device,
                     train: Callable[[], tuple[nn.Module, dict]]) -> tuple[nn.Module, dict, bool]:
        """Return (model, measurements, from_cache), training under a lock when absent."""
        with file_lock(self.root / f"{phase.phase_name}-{key}.lock"):
            hit = self.load(phase, key, num_classes, device)
            if hit is not None:
                return hit[0], hit[1], True
            model, meta = train()
            return model, self.store(phase, key, model, meta), False
