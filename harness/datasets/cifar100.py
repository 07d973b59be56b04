"""CIFAR-100 (Krizhevsky 2009) from torchvision's on-disk format, and its two few-shot splits.

- ``cifar-fs`` (Bertinetto, Henriques, Torr & Vedaldi 2019, "Meta-learning with differentiable closed-form
  solvers", ICLR): 64 base / 16 validation / 20 novel fine classes, chosen at random by the authors.
- ``fc100`` (Oreshkin, Rodriguez & Lacoste 2018, "TADAM: Task dependent adaptive metric for improved
  few-shot learning", NeurIPS): split by superclass, 12 base / 4 validation / 4 novel superclasses
  (60 / 20 / 20 fine classes), so novel classes share no superclass with the base ones.

Both use all 600 images of every class (the 500 train then the 100 test images, in the files' order); the
classes of each pool are in CIFAR-100's fine-label order and relabelled 0..k-1 in that order. The class
names and the fine -> superclass map are read from the files (``meta``, ``coarse_labels``), never assumed.

Precedence as for CIFAR-10: ``--data-dir`` / ``$HARNESS_DATA`` (a folder holding ``cifar-100-python/`` or
that folder itself), then ``cache_dir/"cifar100"``, where torchvision's ``CIFAR100(download=True)`` fetches
the official files. Decoded arrays are cached as ``.npz`` keyed by the files' names, sizes and modification
times. The label says "CIFAR-100 (official batches)" when the files have torchvision's published md5s.
"""

from __future__ import annotations

import hashlib
import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.datasets.base import (
    Dataset,
    FewShotData,
    Pool,
    cached_arrays,
    data_fingerprint,
    find_data,
    fingerprint_arrays,
    pool_of,
)
from harness.datasets.files import read_batch, read_pickle, source_signature
from harness.errors import UsageError

BATCHES = "cifar-100-python"
FILES = ("train", "test", "meta")
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
#: torchvision's published md5 of the official files
OFFICIAL_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                "meta": "7973b15100ade9c7d40fb424638fde48"}

#: CIFAR-FS (Bertinetto et al. 2019): validation and novel fine classes; base = the other 64
CIFAR_FS_VALIDATION = ("beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea",
                       "camel", "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor")
CIFAR_FS_NOVEL = ("whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard",
                  "plain", "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle", "pickup_truck",
                  "rocket")
#: FC100 (Oreshkin et al. 2018): superclasses of each pool
FC100_BASE = ("fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
              "household_furniture", "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "reptiles",
              "trees", "vehicles_1", "vehicles_2")
FC100_VALIDATION = ("large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates", "small_mammals")
FC100_NOVEL = ("aquatic_mammals", "insects", "medium_mammals", "people")


@dataclass(frozen=True)
class Cifar100:
    """All of CIFAR-100: images (N, 32, 32, 3) uint8, train then test, with fine and coarse labels (N,) int64."""

    images: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray
    fine_names: tuple[str, ...]
    coarse_names: tuple[str, ...]
    source: str  # the cifar-100-python folder
    fingerprint: str  # of the arrays and class names
    label: str  # "CIFAR-100 (official batches)" or "CIFAR-100 (unknown copy)"

    def superclass_of(self) -> dict[int, int]:
        """Fine label -> coarse label, from the data's own ``coarse_labels``."""
        pairs = np.unique(np.stack([self.fine, self.coarse], axis=1), axis=0)
        mapping: dict[int, int] = {}
        for f, c in pairs.tolist():
            if f in mapping:
                raise UsageError(f"the CIFAR-100 files in {self.source} put fine class {self.fine_names[f]!r} in "
                                 f"two superclasses ({self.coarse_names[mapping[f]]}, {self.coarse_names[c]}); "
                                 f"replace them with an intact copy")
            mapping[f] = c
        return mapping


def batches_folder(root: Path) -> Path | None:
    """The folder holding the pickles: ``root/cifar-100-python`` or ``root`` itself; None when neither."""
    if (root / BATCHES).is_dir():
        return root / BATCHES
    if root.is_dir() and (root.name == BATCHES or all((root / n).is_file() for n in FILES)):
        return root
    return None


def _names(meta: dict, key: str, path: Path) -> tuple[str, ...]:
    names = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError(f"CIFAR-100 meta file {path} has no list of strings {key!r}; replace it with an intact copy")
    return tuple(names)


def _decode(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Images, fine and coarse labels (train then test) and the class names, checked for consistency."""
    meta = read_pickle(folder / "meta", "CIFAR-100 meta file")
    fine_names = _names(meta, "fine_label_names", folder / "meta")
    coarse_names = _names(meta, "coarse_label_names", folder / "meta")
    images, fine, coarse = [], [], []
    for name in ("train", "test"):
        data, entry = read_batch(folder / name, label_key="fine_labels", what="CIFAR-100 batch")
        try:
            f = np.asarray(entry["fine_labels"], dtype=np.int64).reshape(-1)
            c = np.asarray(entry["coarse_labels"], dtype=np.int64).reshape(-1)
            if len(c) != len(data):
                raise ValueError("coarse_labels and images differ in length")
        except Exception as e:  # noqa: BLE001 - any malformed entry is a bad input file
            raise UsageError(f"cannot read CIFAR-100 file {folder / name}: {e}; "
                             f"replace it with an intact copy") from None
        for labels, names, what in ((f, fine_names, "fine"), (c, coarse_names, "coarse")):
            if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
                raise UsageError(f"CIFAR-100 file {folder / name} has {what} labels outside 0..{len(names) - 1} "
                                 f"(the meta file names {len(names)}); replace it with an intact copy")
        images.append(data)
        fine.append(f)
        coarse.append(c)
    return np.concatenate(images), np.concatenate(fine), np.concatenate(coarse), fine_names, coarse_names


def _official(folder: Path) -> bool:
    """True when every file has torchvision's published md5 (the official CIFAR-100 files)."""
    for name, md5 in OFFICIAL_MD5.items():
        if hashlib.md5((folder / name).read_bytes()).hexdigest() != md5:  # noqa: S324 - a checksum, not security
            return False
    return True


def _load_from(root: Path, cache_dir: Path) -> Cifar100:
    folder = batches_folder(root)
    if folder is None:
        below = sorted(p for p in root.iterdir() if p.is_dir() and batches_folder(p) is not None)
        hint = f"; it holds one in {below[0]}: pass --data-dir {below[0]}" if below else \
            f"; point --data-dir at the folder holding {BATCHES}/ or at {BATCHES}/ itself"
        raise UsageError(f"{root} holds no {BATCHES}/ folder (train, test and meta files){hint}")
    missing = [n for n in FILES if not (folder / n).is_file()]
    if missing:
        raise UsageError(f"{folder} lacks {', '.join(missing)}; give a complete {BATCHES} folder (train, test, meta)")
    key = source_signature(folder, BATCHES, [folder / n for n in FILES])
    keys = ("images", "fine", "coarse", "fine_names", "coarse_names", "fingerprint", "label")

    def decode() -> dict[str, np.ndarray]:
        images, fine, coarse, fine_names, coarse_names = _decode(folder)
        fingerprint = fingerprint_arrays(images, fine, coarse,
                                         extra="|".join(fine_names) + "#" + "|".join(coarse_names))
        label = "CIFAR-100 (official batches)" if _official(folder) else "CIFAR-100 (unknown copy)"
        return {"images": images, "fine": fine, "coarse": coarse, "fine_names": np.array(fine_names, dtype=str),
                "coarse_names": np.array(coarse_names, dtype=str), "fingerprint": np.array(fingerprint),
                "label": np.array(label)}

    hit = cached_arrays(cache_dir / "data" / f"cifar100-{key}.npz", keys, decode)
    return Cifar100(hit["images"], hit["fine"], hit["coarse"], tuple(str(n) for n in hit["fine_names"]),
                    tuple(str(n) for n in hit["coarse_names"]), source=str(folder),
                    fingerprint=str(hit["fingerprint"]), label=str(hit["label"]))


def _download(root: Path) -> None:
    """Fetch the official files with torchvision (needs internet)."""
    from torchvision.datasets import CIFAR100

    CIFAR100(root=str(root), train=True, download=True)


def load_cifar100(data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> Cifar100:
    """Load CIFAR-100 following the documented precedence; raise UsageError when nothing works."""
    root = find_data(data_dir, cache_dir / "cifar100", batches_folder, _download if download else None, "CIFAR-100",
                     f"holding {BATCHES}/ with train, test and meta")
    return _load_from(root, cache_dir)


def _indices(names: Sequence[str], wanted: Sequence[str], what: str, source: str) -> list[int]:
    """Positions of ``wanted`` in ``names`` (sorted: fine-label order); UsageError naming any missing."""
    missing = [w for w in wanted if w not in names]
    if missing:
        raise UsageError(f"the CIFAR-100 meta file in {source} lacks the {what} {', '.join(missing)}; "
                         f"replace it with an intact copy of {BATCHES}")
    return sorted(names.index(w) for w in wanted)


def _pools(raw: Cifar100, base: list[int], validation: list[int], novel: list[int]) -> tuple[Pool, Pool, Pool]:
    counts = np.bincount(raw.fine, minlength=len(raw.fine_names))
    empty = [raw.fine_names[c] for c in base + validation + novel if counts[c] == 0]
    if empty:
        raise UsageError(f"the CIFAR-100 files in {raw.source} have no images of {', '.join(empty)}; "
                         f"replace them with an intact copy")
    return tuple(pool_of(raw.images, raw.fine, c, raw.fine_names) for c in (base, validation, novel))  # type: ignore


class Cifar100Split(Dataset):
    """A few-shot split of all CIFAR-100 images into base / validation / novel fine classes."""

    title = "CIFAR-100"

    @abstractmethod
    def split(self, raw: Cifar100) -> tuple[list[int], list[int], list[int], str]:
        """Fine labels of the base, validation and novel pools (fine-label order) and a description."""

    def load(self, data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> FewShotData:
        raw = load_cifar100(data_dir, cache_dir, download)
        base_c, val_c, novel_c, description = self.split(raw)
        base, validation, novel = _pools(raw, base_c, val_c, novel_c)
        return FewShotData(
            name=self.name, base=base, novel=novel, validation=validation, mean=CIFAR100_MEAN, std=CIFAR100_STD,
            source=raw.source, layout=BATCHES, fingerprint=data_fingerprint(base, novel, validation, raw.fingerprint),
            description=description, label=f"{self.title} from {raw.label}")


class CifarFs(Cifar100Split):
    """CIFAR-FS (Bertinetto et al. 2019): 64 base / 16 validation / 20 novel CIFAR-100 fine classes."""

    name, title = "cifar-fs", "CIFAR-FS"
    description = "CIFAR-FS (Bertinetto et al. 2019): CIFAR-100, 64 base / 16 validation / 20 novel fine classes"

    def split(self, raw: Cifar100) -> tuple[list[int], list[int], list[int], str]:
        val = _indices(raw.fine_names, CIFAR_FS_VALIDATION, "CIFAR-FS validation classes", raw.source)
        novel = _indices(raw.fine_names, CIFAR_FS_NOVEL, "CIFAR-FS novel classes", raw.source)
        base = [c for c in range(len(raw.fine_names)) if c not in set(val) | set(novel)]
        names = raw.fine_names
        return base, val, novel, (
            f"base: {len(base)} classes ({names[base[0]]}..{names[base[-1]]}); "
            f"validation: {', '.join(names[c] for c in val)}; novel: {', '.join(names[c] for c in novel)}")


class Fc100(Cifar100Split):
    """FC100 (Oreshkin et al. 2018): CIFAR-100 split by superclass, 12 base / 4 validation / 4 novel."""

    name, title = "fc100", "FC100"
    description = "FC100 (Oreshkin et al. 2018): CIFAR-100 by superclass, 60 base / 20 validation / 20 novel classes"

    def split(self, raw: Cifar100) -> tuple[list[int], list[int], list[int], str]:
        superclass = raw.superclass_of()
        pools, parts = [], []
        for what, wanted in (("base", FC100_BASE), ("validation", FC100_VALIDATION), ("novel", FC100_NOVEL)):
            coarse = set(_indices(raw.coarse_names, wanted, f"FC100 {what} superclasses", raw.source))
            pools.append(sorted(f for f, c in superclass.items() if c in coarse))
            parts.append(f"{what}: {len(pools[-1])} classes of {', '.join(wanted)}")
        return pools[0], pools[1], pools[2], "; ".join(parts)


CIFAR_FS = CifarFs()
FC100 = Fc100()
