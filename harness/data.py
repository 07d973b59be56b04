"""CIFAR-10 as uint8 arrays, from the official pickled batches or an ImageFolder tree.

Precedence: ``--data-dir`` / ``HARNESS_DATA``, then the default cache directory, where torchvision's
``CIFAR10(download=True)`` fetches the official batches on a machine with internet. Decoded arrays are
cached as ``.npz`` keyed by the source (path, file names, sizes and modification times), so a second run
never decodes an image again.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import UsageError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
BATCHES = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]


@dataclass(frozen=True)
class Cifar10:
    """All of CIFAR-10: images (N, 32, 32, 3) uint8 and labels (N,) int64 in CIFAR-10's class order."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # where it came from
    layout: str  # "cifar-10-batches-py" or "imagefolder-jpg" / "imagefolder-png"
    fingerprint: str  # sha256 of the arrays, part of every source-phase cache key


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "transfer-harness")


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batch files, refusing any object but numpy arrays and builtins."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
        if len(labels) != len(data):
            raise ValueError("labels and images differ in length")
    except Exception as e:  # noqa: BLE001 - any decoding failure is a bad input file
        raise UsageError(
            f"cannot read CIFAR-10 batch {path}: {e}; replace it with an intact copy of {BATCHES}"
        ) from None
    return np.ascontiguousarray(data), labels


def _load_batches(folder: Path) -> tuple[np.ndarray, ...]:
    arrays = []
    for names in (TRAIN_BATCHES, TEST_BATCHES):
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise UsageError(f"{folder} lacks {', '.join(missing)}; give a complete {BATCHES} folder")
        parts = [_read_batch(folder / n) for n in names]
        arrays += [np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])]
    return tuple(arrays)


def _class_folders(split_dir: Path) -> dict[str, Path]:
    folders = {p.name.lower(): p for p in split_dir.iterdir() if p.is_dir()}
    missing = [c for c in CLASSES if c not in folders]
    if missing:
        raise UsageError(
            f"{split_dir} lacks class folder(s) {', '.join(missing)}; an ImageFolder tree needs "
            f"train/<class>/ and test/<class>/ for all ten CIFAR-10 classes"
        )
    return {c: folders[c] for c in CLASSES}


def _image_files(split_dir: Path) -> list[tuple[Path, int]]:
    files = []
    for label, folder in enumerate(_class_folders(split_dir).values()):
        files += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return files


def _decode_imagefolder(split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets.folder import pil_loader  # the loader ImageFolder itself uses

    files = _image_files(split_dir)
    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            img = pil_loader(str(path))
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds for broken files
            raise UsageError(f"cannot decode image {path}: {e}; delete or replace the file") from None
        if img.size != (32, 32):
            raise UsageError(f"image {path} is {img.size[0]}x{img.size[1]}, CIFAR-10 images are 32x32")
        images[i] = np.asarray(img, dtype=np.uint8)
    return images, np.array([label for _, label in files], dtype=np.int64)


def _source_signature(root: Path, layout: str) -> str:
    """A cheap key for the raw files: names, sizes and modification times."""
    h = hashlib.sha256(f"{root.resolve()}|{layout}".encode())
    if layout == BATCHES:
        paths = [root / BATCHES / n for n in TRAIN_BATCHES + TEST_BATCHES]
    else:
        paths = [p for split in ("train", "test") for p, _ in _image_files(root / split)]
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def detect_layout(root: Path) -> str | None:
    if (root / BATCHES).is_dir():
        return BATCHES
    if root.name == BATCHES and root.is_dir():
        return "batches-self"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "imagefolder"
    return None


def _imagefolder_layout_name(root: Path) -> str:
    first = next((p for p, _ in _image_files(root / "test")), None)
    return "imagefolder-png" if first is not None and first.suffix.lower() == ".png" else "imagefolder-jpg"


def _load_from(root: Path, cache_dir: Path) -> Cifar10:
    layout = detect_layout(root)
    if layout == "batches-self":
        root, layout = root.parent, BATCHES
    if layout is None:
        raise UsageError(
            f"{root} holds neither {BATCHES}/ nor train/<class>/ and test/<class>/ folders; "
            f"point --data-dir at a folder with one of the two CIFAR-10 layouts"
        )
    if layout == "imagefolder":
        layout = _imagefolder_layout_name(root)
    key = _source_signature(root, layout)
    cached = cache_dir / "data" / f"cifar10-{key}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                arrays = tuple(z[k] for k in ("train_x", "train_y", "test_x", "test_y"))
                fingerprint = str(z["fingerprint"])
            return Cifar10(*arrays, source=str(root), layout=layout, fingerprint=fingerprint)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never used
            cached.unlink(missing_ok=True)
    if layout == BATCHES:
        arrays = _load_batches(root / BATCHES)
    else:
        arrays = (*_decode_imagefolder(root / "train"), *_decode_imagefolder(root / "test"))
    fingerprint = _fingerprint(*arrays)
    _save_npz(cached, arrays, fingerprint)
    return Cifar10(*arrays, source=str(root), layout=layout, fingerprint=fingerprint)


def _save_npz(path: Path, arrays: tuple[np.ndarray, ...], fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, train_x=arrays[0], train_y=arrays[1], test_x=arrays[2], test_y=arrays[3],
                 fingerprint=np.array(fingerprint))
    os.replace(tmp, path)


def _download(root: Path) -> None:
    """Fetch the official batches with torchvision (needs internet)."""
    from torchvision.datasets import CIFAR10

    CIFAR10(root=str(root), train=True, download=True)


def load_cifar10(data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> Cifar10:
    """Load CIFAR-10 following the documented precedence; raise UsageError when nothing works."""
    explicit = data_dir or os.environ.get("HARNESS_DATA")
    if explicit:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise UsageError(f"data directory {root} does not exist; pass --data-dir with an existing folder")
        return _load_from(root, cache_dir)
    default = cache_dir / "cifar10"
    if detect_layout(default) is None and download:
        try:
            _download(default)
        except Exception:  # noqa: BLE001 - no internet, blocked host, partial file...
            pass
    if detect_layout(default) is not None:
        return _load_from(default, cache_dir)
    raise UsageError(
        f"no CIFAR-10 found: tried $HARNESS_DATA/--data-dir (not set) and {default} (download failed "
        f"or disabled); either pass --data-dir DIR (cifar-10-batches-py/ or train/ and test/ class "
        f"folders) or run once on a machine with internet so torchvision downloads it to {default}"
    )
