"""The dataset contract: what a few-shot dataset hands the harness.

A :class:`Dataset` knows its classes and how its base (source phase), optional validation and novel
(episodes) pools are drawn; :meth:`Dataset.load` returns a :class:`FewShotData` of uint8 images with the
channel statistics used to normalise them and a fingerprint of the exact pixels and class lists.
Datasets are registered in ``harness.registry.DATASETS`` (``python -m harness list datasets``); a user's
own ImageFolder is described by a TOML file (harness/datasets/imagefolder.py).

This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import UsageError


@dataclass(frozen=True)
class Pool:
    """Images (N, H, W, 3) uint8 and labels (N,) int64 in 0..len(classes)-1."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def class_sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()

    def nchw(self) -> np.ndarray:
        return np.ascontiguousarray(self.images.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class FewShotData:
    """A loaded few-shot dataset: the pools, normalisation and provenance."""

    name: str  # the dataset's registered name (or the TOML file's [dataset] name)
    base: Pool  # source phase
    novel: Pool  # evaluation episodes
    validation: Pool | None  # held out (not used by the built-in strategies)
    mean: tuple[float, float, float]  # channel statistics in [0, 1] pixel units
    std: tuple[float, float, float]
    source: str  # where the files were read from
    layout: str  # e.g. "cifar-10-batches-py", "imagefolder-jpg"
    fingerprint: str  # sha256 of the pixels, labels and class lists of every pool
    description: str  # "base: ...; novel: ..." for the report
    label: str = ""  # how the report names the data, e.g. "CIFAR-10 (JPEG q75 copy)"
    #: cross-domain runs (harness/datasets/domains.py): the source dataset's name ("" when the dataset is its own
    #: source, "none" when there is no base pool) and fingerprint, which keys the source models, so they are
    #: shared with every other run of the same source
    source_name: str = ""
    source_fingerprint: str = ""
    #: what the report header says about the source and target (harness/datasets/domains.py ``domains``)
    domains: dict = field(default_factory=dict)
    #: where the validation pool came from when the harness made it (``hold_out_validation``), else ""
    validation_note: str = ""

    @property
    def image_size(self) -> int:
        return int(self.base.images.shape[1])

    @property
    def model_fingerprint(self) -> str:
        """The fingerprint source models are keyed by: the source dataset's (itself when in-domain)."""
        return self.source_fingerprint or self.fingerprint


class Dataset(ABC):
    """A registered few-shot dataset."""

    name: str = ""
    description: str = ""
    #: whether its base pool can feed another dataset's source phases, and whether its novel pool can be
    #: evaluated (``list datasets`` shows both; harness/datasets/domains.py checks them)
    can_be_source: bool = True
    can_be_target: bool = True

    @abstractmethod
    def load(self, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> FewShotData:
        """Read (or fetch) the files, decode once (cached), split into pools; UsageError on bad input."""


def fingerprint_arrays(*arrays: np.ndarray, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def pool_of(images: np.ndarray, labels: np.ndarray, classes: Sequence[int], names: Sequence[str]) -> Pool:
    """The images whose label is in ``classes`` (original order), relabelled 0..len(classes)-1 in the order of
    ``classes``; ``names`` are all the original class names."""
    keep = np.isin(labels, classes)
    remap = np.full(int(max(labels.max(initial=0), max(classes, default=0))) + 1, -1, dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    return Pool(np.ascontiguousarray(images[keep]), remap[labels[keep]], tuple(names[c] for c in classes))


def data_fingerprint(base: Pool, novel: Pool, validation: Pool | None, raw: str) -> str:
    """A fingerprint of the raw arrays (``raw``) and of how the pools are drawn from them."""
    parts = [f"{raw}|base:{','.join(base.classes)}|novel:{','.join(novel.classes)}"]
    if validation is not None:
        parts.append(f"|val:{','.join(validation.classes)}")
    counts = f"|{len(base.labels)},{len(novel.labels)},{0 if validation is None else len(validation.labels)}"
    return hashlib.sha256(("".join(parts) + counts).encode()).hexdigest()[:16]


#: ``--tune`` on a dataset without a validation pool: the share of each base class's images held out of the source
#: phase as its validation pool (the last ones of each class, in pool order)
HOLDOUT_FRACTION = 0.1


def hold_out_validation(data: FewShotData, fraction: float = HOLDOUT_FRACTION) -> FewShotData:
    """``data`` with a validation pool for ``--tune``: its own when it has one; else the last ``fraction`` of each base
    class's images, taken out of the base pool (so the source phase never trains on them). The source models'
    fingerprint changes with it: tuned and untuned runs never share a cached source model."""
    if data.validation is not None:
        return data
    base = data.base
    held = np.zeros(len(base.labels), dtype=bool)
    for c in range(len(base.classes)):
        members = np.flatnonzero(base.labels == c)
        held[members[len(members) - int(len(members) * fraction):]] = True
    if not held.any():
        raise UsageError(f"--tune needs validation episodes, and {data.name} has no validation pool and no base "
                         f"images to hold one out of; name validation classes in the dataset TOML "
                         f"(validation = [...]) or leave --tune out")

    def tagged(fingerprint: str) -> str:
        return hashlib.sha256(f"{fingerprint}|holdout:{fraction:g}".encode()).hexdigest()[:16] if fingerprint else ""

    return dataclasses.replace(
        data, base=Pool(base.images[~held], base.labels[~held], base.classes),
        validation=Pool(base.images[held], base.labels[held], base.classes), fingerprint=tagged(data.fingerprint),
        source_fingerprint=tagged(data.source_fingerprint),
        validation_note=f"the last {fraction:.0%} of each base class's images, held out of the source phase",
        description=f"{data.description}; validation (--tune): the last {fraction:.0%} of each base class's images, "
                    f"held out of the source phase")


def resolve_data_dir(data_dir: str | os.PathLike | None, env: str = "HARNESS_DATA") -> Path | None:
    """``--data-dir`` or ``$HARNESS_DATA`` as a Path (None when neither is set); UsageError when missing."""
    explicit = data_dir or os.environ.get(env)
    if not explicit:
        return None
    root = Path(explicit).expanduser()
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar", ".zip")):
        raise UsageError(f"data directory {root} is an archive, not a folder; extract it first "
                         f"(tar -xzf {root} -C DIR) and pass --data-dir DIR")
    if not root.is_dir():
        raise UsageError(f"data directory {root} does not exist; pass --data-dir with an existing folder")
    return root


def find_data(data_dir: str | os.PathLike | None, default: Path, present: Callable[[Path], object],
              download: Callable[[Path], None] | None, what: str, expected: str) -> Path:
    """The data folder: ``--data-dir`` / ``$HARNESS_DATA``, else ``default`` (fetched there by ``download``
    when absent, on a machine with internet). ``present(folder)`` is falsy when the files are not there."""
    root = resolve_data_dir(data_dir)
    if root is not None:
        return root
    if not present(default) and download is not None:
        try:
            download(default)
        except Exception:  # noqa: BLE001 - no internet, blocked host, partial file...
            pass
    if present(default):
        return default
    tried = "download failed" if download is not None else "download disabled"
    raise UsageError(f"no {what} found: tried $HARNESS_DATA/--data-dir (not set) and {default} ({tried}); either "
                     f"pass --data-dir DIR ({expected}) or run once on a machine with internet so torchvision "
                     f"downloads it to {default}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "transfer-harness")


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write a decoded-array cache (``np.load(..., allow_pickle=False)`` reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None (a damaged cache is deleted, never used)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except Exception:  # noqa: BLE001 - rebuilt, never used
        path.unlink(missing_ok=True)
        return None


def cached_arrays(path: Path, keys: Sequence[str],
                  decode: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A loader's decoded arrays ``keys``: read from the ``.npz`` cache ``path`` when it is there and intact, else
    ``decode()``'s, written to ``path`` atomically (so a second run never decodes an image again)."""
    hit = load_npz(path, keys)
    if hit is None:
        hit = decode()
        save_npz(path, hit)
    return hit
