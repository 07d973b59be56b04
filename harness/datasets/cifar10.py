"""CIFAR-10 (Krizhevsky 2009) from the official pickled batches or an ImageFolder tree, and its two
5/5 splits: base classes from the train images feed the source phase, novel classes from the test
images feed the episodes.

Precedence: ``--data-dir`` / ``HARNESS_DATA``, then the default cache directory, where torchvision's
``CIFAR10(download=True)`` fetches the official batches on a machine with internet. Decoded arrays are
cached as ``.npz`` keyed by the source (path, file names, sizes and modification times), so a second run
never decodes an image again. The report's data label comes from the data itself: the official batches
(torchvision's published checksums) or the JPEG q75 copy (its pixel fingerprint), else "unknown copy".
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.datasets.base import (
    Dataset,
    FewShotData,
    cached_arrays,
    data_fingerprint,
    find_data,
    fingerprint_arrays,
    pool_of,
)
from harness.datasets.files import IMAGE_SUFFIXES, decode_images, read_batch, source_signature
from harness.errors import UsageError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
BATCHES = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
#: torchvision's published md5 of the official batch files
OFFICIAL_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"}
#: pixel fingerprints (of the decoded arrays) of known copies
KNOWN_COPIES = {"e00b28a47d65123f": "CIFAR-10 (JPEG q75 copy)"}


@dataclass(frozen=True)
class Cifar10:
    """All of CIFAR-10: images (N, 32, 32, 3) uint8 and labels (N,) int64 in CIFAR-10's class order."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # where it came from
    layout: str  # "cifar-10-batches-py" or "imagefolder-jpg" / "imagefolder-png"
    fingerprint: str  # sha256 of the arrays
    label: str  # "CIFAR-10 (official batches)", "CIFAR-10 (JPEG q75 copy)" or "CIFAR-10 (unknown copy)"


def _load_batches(folder: Path) -> tuple[np.ndarray, ...]:
    arrays = []
    for names in (TRAIN_BATCHES, TEST_BATCHES):
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise UsageError(f"{folder} lacks {', '.join(missing)}; give a complete {BATCHES} folder")
        parts = [read_batch(folder / n) for n in names]
        arrays += [np.concatenate([p[0] for p in parts]),
                   np.concatenate([np.asarray(p[1]["labels"], dtype=np.int64) for p in parts])]
    return tuple(arrays)


def class_folders(split_dir: Path, classes: tuple[str, ...]) -> dict[str, Path]:
    folders = {p.name.lower(): p for p in split_dir.iterdir() if p.is_dir()}
    missing = [c for c in classes if c not in folders]
    if missing:
        raise UsageError(
            f"{split_dir} lacks class folder(s) {', '.join(missing)}; an ImageFolder tree needs "
            f"train/<class>/ and test/<class>/ for all ten CIFAR-10 classes"
        )
    return {c: folders[c] for c in classes}


def image_files(split_dir: Path) -> list[tuple[Path, int]]:
    files = []
    for label, folder in enumerate(class_folders(split_dir, CLASSES).values()):
        files += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return files


def _decode_imagefolder(split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    files = image_files(split_dir)
    return decode_images([p for p, _ in files]), np.array([label for _, label in files], dtype=np.int64)


def detect_layout(root: Path) -> str | None:
    if (root / BATCHES).is_dir():
        return BATCHES
    if root.name == BATCHES and root.is_dir():
        return "batches-self"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "imagefolder"
    return None


def _imagefolder_layout_name(root: Path) -> str:
    first = next((p for p, _ in image_files(root / "test")), None)
    return "imagefolder-png" if first is not None and first.suffix.lower() == ".png" else "imagefolder-jpg"


def _official(folder: Path) -> bool:
    """True when every batch file has torchvision's published md5 (the official CIFAR-10 batches)."""
    for name, md5 in OFFICIAL_MD5.items():
        if hashlib.md5((folder / name).read_bytes()).hexdigest() != md5:  # noqa: S324 - a checksum, not security
            return False
    return True


def _not_found(root: Path) -> UsageError:
    below = sorted(p for p in root.iterdir() if p.is_dir() and detect_layout(p) is not None) if root.is_dir() else []
    hint = f"; it holds one in {below[0]}: pass --data-dir {below[0]}" if below else \
        "; point --data-dir at a folder with one of the two CIFAR-10 layouts"
    return UsageError(f"{root} holds neither {BATCHES}/ nor train/<class>/ and test/<class>/ folders{hint}")


def _load_from(root: Path, cache_dir: Path) -> Cifar10:
    layout = detect_layout(root)
    if layout == "batches-self":
        root, layout = root.parent, BATCHES
    if layout is None:
        raise _not_found(root)
    if layout == "imagefolder":
        layout = _imagefolder_layout_name(root)
        paths = [p for split in ("train", "test") for p, _ in image_files(root / split)]
    else:
        paths = [root / BATCHES / n for n in TRAIN_BATCHES + TEST_BATCHES]
    key = source_signature(root, layout, paths)
    keys = ("train_x", "train_y", "test_x", "test_y", "fingerprint", "label")

    def decode() -> dict[str, np.ndarray]:
        if layout == BATCHES:
            arrays = _load_batches(root / BATCHES)
        else:
            arrays = (*_decode_imagefolder(root / "train"), *_decode_imagefolder(root / "test"))
        fingerprint = fingerprint_arrays(*arrays)
        official = layout == BATCHES and _official(root / BATCHES)
        label = "CIFAR-10 (official batches)" if official else KNOWN_COPIES.get(fingerprint, "CIFAR-10 (unknown copy)")
        return dict(zip(keys, (*arrays, np.array(fingerprint), np.array(label)), strict=True))

    hit = cached_arrays(cache_dir / "data" / f"cifar10-{key}.npz", keys, decode)
    return Cifar10(hit["train_x"], hit["train_y"], hit["test_x"], hit["test_y"], source=str(root), layout=layout,
                   fingerprint=str(hit["fingerprint"]), label=str(hit["label"]))


def _download(root: Path) -> None:
    """Fetch the official batches with torchvision (needs internet)."""
    from torchvision.datasets import CIFAR10

    CIFAR10(root=str(root), train=True, download=True)


def load_cifar10(data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> Cifar10:
    """Load CIFAR-10 following the documented precedence; raise UsageError when nothing works."""
    root = find_data(data_dir, cache_dir / "cifar10", detect_layout, _download if download else None, "CIFAR-10",
                     "cifar-10-batches-py/ or train/ and test/ class folders")
    return _load_from(root, cache_dir)


class Cifar10Split(Dataset):
    """CIFAR-10 with ``base`` classes from the train images and ``novel`` classes from the test images."""

    def __init__(self, name: str, base: tuple[int, ...], novel: tuple[int, ...], description: str):
        self.name, self.base_classes, self.novel_classes, self.description = name, base, novel, description

    def load(self, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> FewShotData:
        raw = load_cifar10(data_dir, cache_dir, download)
        base = pool_of(raw.train_images, raw.train_labels, self.base_classes, CLASSES)
        novel = pool_of(raw.test_images, raw.test_labels, self.novel_classes, CLASSES)
        return FewShotData(
            name=self.name, base=base, novel=novel, validation=None, mean=CIFAR10_MEAN, std=CIFAR10_STD,
            source=raw.source, layout=raw.layout, fingerprint=data_fingerprint(base, novel, None, raw.fingerprint),
            description=f"base (train images): {', '.join(base.classes)}; novel (test images): "
                        f"{', '.join(novel.classes)}", label=raw.label)


CIFAR10_5_5 = Cifar10Split("cifar10-5-5", (0, 1, 2, 3, 4), (5, 6, 7, 8, 9),
                           "CIFAR-10, base: airplane..deer (train images), novel: dog..truck (test images)")
CIFAR10_5_5_SWAPPED = Cifar10Split("cifar10-5-5-swapped", (5, 6, 7, 8, 9), (0, 1, 2, 3, 4),
                                   "CIFAR-10, base: dog..truck (train images), novel: airplane..deer (test images)")
#: a source only (harness/datasets/domains.py): every class's train images; its "novel" test images are of the
#: same classes, so it is never evaluated on itself
CIFAR10_ALL = Cifar10Split("cifar10", tuple(range(10)), tuple(range(10)),
                           "CIFAR-10, a source only: base all ten classes (train images)")
CIFAR10_ALL.can_be_target = False
