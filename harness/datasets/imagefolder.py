"""A user's own ImageFolder, described by a TOML file (``--dataset my-birds.toml``)::

    [dataset]
    name = "my-birds"            # shown in the report (required)
    root = "images"              # one folder per class, relative to the TOML file (required)
    novel = ["owl", "wren"]      # classes for the episodes (required)
    base = ["crow", "gull"]      # classes for the source phase (optional: or name a source)
    source = "cifar10"           # or: the source phase trains on this dataset's base pool (optional)
    validation = []              # held-out classes (optional)
    image_size = 32              # images are resized to image_size x image_size, bilinear (default 32; with a
                                 # source: the source's input size)

With ``base`` the file is its own source (in-domain). Without it, ``source`` names a registered dataset
(``python -m harness list datasets``) or another dataset TOML file (relative to this one) whose base pool
the source phases train on (cross-domain: harness/datasets/domains.py); with neither, only rows that need
no base pool run (models pretrained elsewhere, the no-transfer baselines).

Like torchvision's ``ImageFolder`` (the layout of the few-shot benchmarks that ship as image folders, e.g.
miniImageNet, Vinyals et al. 2016, "Matching Networks for One Shot Learning"), each class is a folder of
``.png``/``.jpg``/``.jpeg`` files (any other file is ignored), read in file-name order and decoded by
:func:`read_rgb`: any size or mode (grayscale, palette, RGBA, 16-bit), EXIF orientation applied, converted to
RGB. Pools follow the TOML lists: label i is the i-th listed class. Images are normalised with the channel
mean and standard deviation of the base pool's pixels (with a source: the source's). Decoded arrays are
cached as ``.npz`` keyed by the TOML text, the size and the image files' names, sizes and modification times.
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
    cached_arrays,
    data_fingerprint,
    fingerprint_arrays,
    pool_of,
)
from harness.datasets.files import IMAGE_SUFFIXES, decode_images, source_signature
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
    "base": (False, list, "a non-empty list of class-folder names (strings)"),
    "novel": (True, list, "a non-empty list of class-folder names (strings)"),
    "source": (False, str, "a non-empty string (a registered dataset name or a dataset TOML file)"),
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
    base: tuple[str, ...]  # () for a novel-only dataset
    validation: tuple[str, ...]
    novel: tuple[str, ...]
    image_size: int
    source: str = ""  # the named source: a registered dataset, or a TOML file's absolute path ("" for none)
    image_size_given: bool = False  # image_size is in the file (else the default, or the source's size)

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
    values = {"validation": [], "image_size": 32, "base": [], "source": "", **table}
    for key, (required, kind, _) in KEYS.items():
        value = values[key]
        empty = not value and (required or (key in table and key != "validation"))
        if not isinstance(value, kind) or isinstance(value, bool) or empty:
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
    if values["base"] and values["source"]:
        raise UsageError(f"dataset file {path}: [dataset] lists base classes and names a source "
                         f"({values['source']!r}); keep base (the file is its own source) or source, not both")
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
                         f"name, root, novel and base (or a source)")
    for key in data:
        if key != "dataset":
            raise UsageError(f"dataset file {path}: unknown top-level key {key!r}{did_you_mean(key, ['dataset'])}; "
                             f"put every setting in the [dataset] table")
    v = _checked(path, table)
    root = Path(v["root"]).expanduser()
    root = Path(os.path.abspath(path.parent / root))  # ".." folded, symlinks kept
    source = v["source"]
    if source.endswith(".toml"):  # a TOML source, relative to this file
        source = os.path.abspath(path.parent / Path(source).expanduser())
    return TomlSpec(path=path, text=text, name=v["name"], root_text=v["root"], root=root, base=tuple(v["base"]),
                    validation=tuple(v["validation"]), novel=tuple(v["novel"]), image_size=v["image_size"],
                    source=source, image_size_given="image_size" in table)


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


#: PIL modes with an alpha channel (or palette transparency): composited onto white
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def read_rgb(path: str) -> Any:
    """An image file as an 8-bit RGB PIL image, whatever it holds: EXIF orientation applied (a phone photo is
    shown upright, as viewers show it), 16-bit and 32-bit integer grayscale scaled to 8 bits (not clipped),
    float images taken as [0, 1], transparency (RGBA, LA, a palette's transparent colour) composited onto
    white, grayscale / palette / CMYK converted to RGB. 16-bit RGB PNGs are read as 8-bit RGB by PIL itself."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        opened.load()
        img = ImageOps.exif_transpose(opened) or opened
        if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            pixels = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
            if top == 65535.0 and pixels.max(initial=0) > 65535:
                top = float(pixels.max())
            img = Image.fromarray(np.clip(np.round(pixels / top * 255.0), 0, 255).astype(np.uint8), "L")
        elif img.mode == "F":
            pixels = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8), "L")
        elif img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        if img.mode in _ALPHA_MODES:
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        return img.convert("RGB")


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
        self.can_be_source = bool(spec.base)  # a novel-only file has no base pool to lend
        self.source = spec.source

    def files(self) -> dict[str, list[Path]]:
        """Each class's image files, in pool order (the leak guard names them)."""
        return dict(zip(self.spec.classes, image_files(self.spec), strict=True))

    def _arrays(self, cache_dir: Path, size: int) -> dict[str, np.ndarray]:
        spec = self.spec
        files = image_files(spec)
        flat = [p for group in files for p in group]
        resized = "" if size == spec.image_size else f"|size {size}"  # the file's own size: the key it always had
        key = hashlib.sha256(f"{spec.text}|{source_signature(spec.root, LAYOUT, flat)}{resized}".encode())

        def decode() -> dict[str, np.ndarray]:
            try:
                images = decode_images(flat, size=size, resize=True, loader=read_rgb)
            except UsageError as e:
                raise UsageError(_one_line(str(e))) from None
            labels = np.repeat(np.arange(len(files), dtype=np.int64), [len(g) for g in files])
            fingerprint = fingerprint_arrays(images, labels, extra=f"{size}|{'|'.join(spec.classes)}")
            return {"images": images, "labels": labels, "fingerprint": np.array(fingerprint)}

        return cached_arrays(cache_dir / "data" / f"imagefolder-{key.hexdigest()[:20]}.npz",
                             ("images", "labels", "fingerprint"), decode)

    def load(self, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True,
             image_size: int | None = None) -> FewShotData:
        """The pools; ``image_size``: decode at this size (a source's input size) instead of the file's. A
        novel-only file gets an empty base pool, normalised with its own novel images' channel statistics
        (replaced by the source's when there is one)."""
        spec = self.spec
        if data_dir:
            raise UsageError(f"--data-dir does not apply to the TOML dataset {spec.path}: its root names the "
                             f"images; drop --data-dir")
        size = image_size or spec.image_size
        hit = self._arrays(cache_dir, size)
        images, labels, classes = hit["images"], hit["labels"], spec.classes

        def pool(names: tuple[str, ...]) -> Pool:
            return pool_of(images, labels, [classes.index(c) for c in names], classes)

        base, novel = pool(spec.base), pool(spec.novel)
        validation = pool(spec.validation) if spec.validation else None
        mean, std = channel_stats(base.images if spec.base else novel.images)
        parts = ([f"base: {', '.join(spec.base)}"] if spec.base else []) + (
            [f"validation: {', '.join(spec.validation)}"] if spec.validation else []) + [
            f"novel: {', '.join(spec.novel)}"]
        return FewShotData(
            name=spec.name, base=base, novel=novel, validation=validation, mean=mean, std=std,  # type: ignore[arg-type]
            source=str(spec.root.resolve()), layout=LAYOUT,
            fingerprint=data_fingerprint(base, novel, validation, str(hit["fingerprint"])),
            description="; ".join(parts), label=f"{spec.name} (ImageFolder {spec.root_text})",
            source_name="" if spec.base else "none")


def from_toml(path: str | os.PathLike) -> TomlImageFolder:
    """The dataset a TOML file describes; the file, root and class folders are checked now, images on load."""
    spec = read_spec(path)
    image_files(spec)
    return TomlImageFolder(spec)
