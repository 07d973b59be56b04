"""Reading a dataset's raw files, shared by the loaders (harness/datasets/cifar10.py, cifar100.py,
imagefolder.py): CIFAR's pickled batch files through a restricted unpickler, image files decoded with
torchvision's ImageFolder loader, and the cheap signature of the raw files that keys the decoded-arrays cache
(:func:`harness.datasets.base.cached_arrays`).

This module imports no torch (torchvision and PIL are imported when images are decoded).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError

#: the file suffixes read as images (any case)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batch files, refusing any object but numpy arrays and builtins."""

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


def read_pickle(path: Path, what: str) -> dict:
    """A CIFAR pickle (batch or meta file) through the restricted unpickler; UsageError when damaged."""
    try:
        with open(path, "rb") as f:
            return _BatchUnpickler(f, encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - any decoding failure is a bad input file
        raise UsageError(f"cannot read {what} {path}: {e}; replace it with an intact copy") from None


def read_batch(path: Path, label_key: str = "labels", what: str = "CIFAR-10 batch") -> tuple[np.ndarray, dict]:
    """Images (N, 32, 32, 3) of a CIFAR batch file and the whole entry (labels are read by the caller)."""
    entry = read_pickle(path, what)
    try:
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        if len(entry[label_key]) != len(data):
            raise ValueError("labels and images differ in length")
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"cannot read {what} {path}: {e}; replace it with an intact copy") from None
    return np.ascontiguousarray(data), entry


def decode_images(files: list[Path], size: int | None = 32, resize: bool = False,
                  loader: Callable[[str], Any] | None = None) -> np.ndarray:
    """Decode with torchvision's ImageFolder loader (or ``loader``: path -> RGB PIL image); ``size`` checks (or,
    with ``resize``, sets) the size."""
    from torchvision.datasets.folder import pil_loader  # the loader ImageFolder itself uses

    loader = loader or pil_loader
    images = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            img = loader(str(path))
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds for broken files
            raise UsageError(f"cannot decode image {path}: {e}; delete or replace the file") from None
        if img.size != (size, size):
            if not resize:
                raise UsageError(f"image {path} is {img.size[0]}x{img.size[1]}, CIFAR-10 images are {size}x{size}")
            from PIL import Image

            img = img.resize((size, size), Image.Resampling.BILINEAR)
        images[i] = np.asarray(img, dtype=np.uint8)
    return images


def source_signature(root: Path, layout: str, paths: list[Path]) -> str:
    """A cheap key for the raw files: names, sizes and modification times."""
    h = hashlib.sha256(f"{root.resolve()}|{layout}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]
