"""A user's own ImageFolder, described by a TOML file (``--dataset my-birds.toml``)::

    [dataset]
    name = "my-birds"            # shown in the report (required)
    root = "images"              # one folder per class, relative to the TOML file (required)
    base = ["crow", "gull"]      # classes for the source phase (required)
    novel = ["owl", "wren"]      # classes for the episodes (required)
    validation = []              # held-out classes (optional)
    image_size = 32              # images are resized to image_size x image_size, bilinear (default 32)

Like torchvision's ``ImageFolder`` (the layout of the few-shot benchmarks that ship as image folders, e.g.
miniImageNet, Vinyals et al. 2016, "Matching Networks for One Shot Learning"), each class is a folder of
``.png``/``.jpg``/``.jpeg`` files, read in file-name order and decoded with ImageFolder's own loader. Pools
follow the TOML lists: label i is the i-th listed class. Images are normalised with the channel mean and
standard deviation of the base pool's pixels. Decoded arrays are cached as ``.npz`` keyed by the TOML text
and the image files' names, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import (
    Dataset,
    FewShotData,
    Pool,
    data_fingerprint,
    fingerprint_arrays,
    load_npz,
    pool_of,
    save_npz,
)
from harness.datasets.cifar10 import IMAGE_SUFFIXES, decode_images, source_signature
from harness.errors import UsageError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LAYOUT = "imagefolder-toml"
MIN_IMAGE_SIZE = 8
#: key -> (required, type, how the message names the expected type)
KEYS: dict[str, tuple[bool, type, str]] = {
    "name": (True, str, "a non-empty string"),
    "root": (True, str, "a non-empty string (the image folder, relative to the TOML file)"),
    "base": (True, list, "a non-empty list of class-folder names (strings)"),
    "novel": (True, list, "a non-empty list of class-folder names (strings)"),
    "validation": (False, list, "a list of class-folder names (strings)"),
    "image_size": (False, int, "an integer (pixels, e.g. 32)"),
}
POOLS = ("base", "validation", "novel")


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class TomlSpec:
    """The ``[dataset]`` table of a TOML file, checked."""

    path: Path
    text: str  # the file's content (part of the cache key)
    name: str
    root_text: str  # root as written in the file
    root: Path  # resolved against the TOML file's folder
    base: tuple[str, ...]
    validation: tuple[str, ...]
    novel: tuple[str, ...]
    image_size: int

    @property
    def classes(self) -> tuple[str, ...]:
        """Every class, base then validation then novel (the order of the cached labels)."""
        return self.base + self.validation + self.novel


def _type_error(path: Path, key: str, value: Any) -> UsageError:
    return UsageError(f"dataset file {path}: key {key!r} in [dataset] must be {KEYS[key][2]}, "
                      f"got {type(value).__name__} {_one_line(repr(value))[:60]}")


def _checked(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    for key in table:
        if key not in KEYS:
            raise UsageError(f"dataset file {path}: unknown key {key!r} in [dataset]{did_you_mean(key, KEYS)}; "
                             f"valid keys: {', '.join(KEYS)}")
    for key, (required, _, expected) in KEYS.items():
        if required and key not in table:
            raise UsageError(f"dataset file {path}: [dataset] lacks the required key {key!r} ({expected})")
    values = {"validation": [], "image_size": 32, **table}
    for key, (required, kind, _) in KEYS.items():
        value = values[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (required and not value):
            raise _type_error(path, key, value)
        if kind is list and not all(isinstance(v, str) and v for v in value):
            raise _type_error(path, key, value)
    if values["image_size"] < MIN_IMAGE_SIZE:
        raise UsageError(f"dataset file {path}: image_size {values['image_size']} is too small; "
                         f"use {MIN_IMAGE_SIZE} or more (e.g. 32)")
    seen: dict[str, str] = {}
    for pool in POOLS:
        for cls in values[pool]:
            if cls in seen:
                where = f"twice in {pool}" if seen[cls] == pool else f"in both {seen[cls]} and {pool}"
                raise UsageError(f"dataset file {path}: class {cls!r} is listed {where}; list each class once")
            seen[cls] = pool
    return values


def read_spec(path: str | os.PathLike) -> TomlSpec:
    """Parse and check a dataset TOML file (not the images); UsageError, one line, on any problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UsageError(f"dataset file {path} {what}; pass --dataset with a registered name or an existing TOML file")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"dataset file {path} is not valid TOML ({_one_line(str(e))}); fix the syntax") from None
    except OSError as e:
        raise UsageError(f"cannot read dataset file {path} ({e.strerror}); make it readable") from None
    table = data.get("dataset")
    if not isinstance(table, dict):
        raise UsageError(f"dataset file {path} has no [dataset] table; start it with [dataset] and give "
                         f"name, root, base and novel")
    for key in data:
        if key != "dataset":
            raise UsageError(f"dataset file {path}: unknown top-level key {key!r}{did_you_mean(key, ['dataset'])}; "
                             f"put every setting in the [dataset] table")
    v = _checked(path, table)
    root = Path(v["root"]).expanduser()
    root = Path(os.path.abspath(path.parent / root))  # ".." folded, symlinks kept
    return TomlSpec(path=path, text=text, name=v["name"], root_text=v["root"], root=root, base=tuple(v["base"]),
                    validation=tuple(v["validation"]), novel=tuple(v["novel"]), image_size=v["image_size"])


def image_files(spec: TomlSpec) -> list[list[Path]]:
    """The image files of every class (``spec.classes`` order), sorted by name; UsageError when any is missing."""
    if not spec.root.is_dir():
        raise UsageError(f"dataset file {spec.path}: root {spec.root} does not exist; root names the image folder "
                         f"(one sub-folder per class), relative to the TOML file")
    present = sorted(p.name for p in spec.root.iterdir() if p.is_dir())
    files = []
    for cls in spec.classes:
        folder = spec.root / cls
        if not folder.is_dir():
            raise UsageError(f"class folder {cls!r} does not exist in root {spec.root}{did_you_mean(cls, present)}; "
                             f"each listed class needs a folder of that name there ({spec.path})")
        images = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                        key=lambda p: p.name)
        if not images:
            raise UsageError(f"class folder {folder} has no .png/.jpg/.jpeg images; add images or drop class "
                             f"{cls!r} from {spec.path}")
        files.append(images)
    return files


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, H, W, 3) in [0, 1] units, float64."""
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        squares += (x * x).sum(0)
        count += len(x)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean * mean, 0.0))
    return tuple(round(float(m), 4) for m in mean), tuple(max(round(float(s), 4), 1e-4) for s in std)


class TomlImageFolder(Dataset):
    """A user's ImageFolder with base / validation / novel classes named in a TOML file."""

    def __init__(self, spec: TomlSpec):
        self.spec, self.name = spec, spec.name
        self.description = f"{spec.name}: ImageFolder {spec.root} ({spec.path.name})"

    def _arrays(self, cache_dir: Path) -> dict[str, np.ndarray]:
        spec = self.spec
        files = image_files(spec)
        flat = [p for group in files for p in group]
        key = hashlib.sha256(f"{spec.text}|{source_signature(spec.root, LAYOUT, flat)}".encode()).hexdigest()[:20]
        cached = cache_dir / "data" / f"imagefolder-{key}.npz"
        keys = ("images", "labels", "fingerprint")
        hit = load_npz(cached, keys)
        if hit is None:
            try:
                images = decode_images(flat, size=spec.image_size, resize=True)
            except UsageError as e:
                raise UsageError(_one_line(str(e))) from None
            labels = np.repeat(np.arange(len(files), dtype=np.int64), [len(g) for g in files])
            fingerprint = fingerprint_arrays(images, labels, extra=f"{spec.image_size}|{'|'.join(spec.classes)}")
            hit = {"images": images, "labels": labels, "fingerprint": np.array(fingerprint)}
            save_npz(cached, hit)
        return hit

    def load(self, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> FewShotData:
        spec = self.spec
        if data_dir:
            raise UsageError(f"--data-dir does not apply to the TOML dataset {spec.path}: its root names the "
                             f"images; drop --data-dir")
        hit = self._arrays(cache_dir)
        images, labels, classes = hit["images"], hit["labels"], spec.classes

        def pool(names: tuple[str, ...]) -> Pool:
            return pool_of(images, labels, [classes.index(c) for c in names], classes)

        base, novel = pool(spec.base), pool(spec.novel)
        validation = pool(spec.validation) if spec.validation else None
        mean, std = channel_stats(base.images)
        parts = [f"base: {', '.join(spec.base)}"] + ([f"validation: {', '.join(spec.validation)}"]
                                                     if spec.validation else []) + [f"novel: {', '.join(spec.novel)}"]
        return FewShotData(
            name=spec.name, base=base, novel=novel, validation=validation, mean=mean, std=std,  # type: ignore[arg-type]
            source=str(spec.root.resolve()), layout=LAYOUT,
            fingerprint=data_fingerprint(base, novel, validation, str(hit["fingerprint"])),
            description="; ".join(parts), label=f"{spec.name} (ImageFolder {spec.root_text})")


def from_toml(path: str | os.PathLike) -> TomlImageFolder:
    """The dataset a TOML file describes; the file, root and class folders are checked now, images on load."""
    spec = read_spec(path)
    image_files(spec)
    return TomlImageFolder(spec)
