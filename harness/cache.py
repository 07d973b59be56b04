"""On-disk cache of source-phase models.

A key (:func:`cache_key`) covers everything that makes the model: the phase's class and fields, a hash of
the source of its module and every project module it trains with (backbone, augmentation, shared loops),
the dataset fingerprint, the training seed, the budget, the ways/shots it was trained for when it depends
on them, the device type, the precision and the torch major.minor version. Each entry is a ``.pt`` state
dict (loaded with ``weights_only=True``) and a ``.json`` sidecar with the architecture spec, the training
measurements and the state dict's sha256; both are written atomically, the sidecar last, and a missing or
mismatching sidecar means the entry is rebuilt, never used. A file lock per key keeps two runs from
training the same entry at once: the second waits, then loads.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from harness.io import atomic_write_bytes, atomic_write_json
from harness.units import SourceResult

CACHE_FORMAT = 2


def cache_key(phase_name: str, ingredients: dict[str, Any]) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **ingredients}, sort_keys=True, default=str)
    return f"{phase_name}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


def try_file_lock(path: Path) -> IO | None:
    """The lock of ``path`` if it is free now (closing the returned file frees it), else None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")  # held until closed, across calls
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class SourceCache:
    def __init__(self, root: Path, warn: Callable[[str], None] = print):
        self.root = Path(root) / "source"
        self.warn = warn

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.pt", self.root / f"{key}.json"

    def lock(self, key: str):
        """The key's lock, waiting for it (a context manager)."""
        return file_lock(self.root / f"{key}.lock")

    def try_lock(self, key: str) -> IO | None:
        """The key's lock if free now, else None; ``close()`` the result to free it."""
        return try_file_lock(self.root / f"{key}.lock")

    def has(self, key: str) -> bool:
        """Whether the key has an entry (its sidecar, written last); not whether the entry is intact."""
        return self.paths(key)[1].is_file()

    def load(self, key: str) -> SourceResult | None:
        """The entry, or None when absent; a damaged entry is reported, removed and None returned."""
        weights, meta_path = self.paths(key)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            blob = weights.read_bytes()
            if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
                raise ValueError("content hash mismatch")
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any damage means rebuild
            self.warn(f"source cache {weights.name} is corrupt ({e}); rebuilding it")
            meta_path.unlink(missing_ok=True)
            return None
        return SourceResult(key, meta["spec"], state, meta["measurements"], cached=True)

    def store(self, result: SourceResult) -> None:
        weights, meta_path = self.paths(result.key)
        blob = state_bytes(result.state)
        atomic_write_bytes(weights, blob)
        atomic_write_json(meta_path, {"key": result.key, "spec": result.spec, "measurements": result.measurements,
                                      "sha256": hashlib.sha256(blob).hexdigest()})  # the sidecar last
