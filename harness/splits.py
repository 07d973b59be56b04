"""Named base/novel class splits: base classes feed the source phase, novel classes the episodes."""

from __future__ import annotations

from dataclasses import dataclass

from harness.data import CLASSES
from harness.errors import unknown


@dataclass(frozen=True)
class Split:
    name: str
    base_classes: tuple[int, ...]  # source phase, drawn from the train images
    novel_classes: tuple[int, ...]  # evaluation episodes, drawn from the test images
    description: str

    def describe(self) -> str:
        base = ", ".join(CLASSES[c] for c in self.base_classes)
        novel = ", ".join(CLASSES[c] for c in self.novel_classes)
        return f"base (train images): {base}; novel (test images): {novel}"


SPLITS: dict[str, Split] = {}


def register_split(split: Split) -> Split:
    if split.name in SPLITS:
        raise ValueError(f"split {split.name!r} is already registered")
    if set(split.base_classes) & set(split.novel_classes):
        raise ValueError(f"split {split.name!r}: base and novel classes overlap")
    SPLITS[split.name] = split
    return split


def get_split(name: str) -> Split:
    if name not in SPLITS:
        raise unknown("split", name, SPLITS)
    return SPLITS[name]


register_split(Split("cifar10-5-5", (0, 1, 2, 3, 4), (5, 6, 7, 8, 9),
                     "base: airplane..deer (train), novel: dog..truck (test)"))
register_split(Split("cifar10-5-5-swapped", (5, 6, 7, 8, 9), (0, 1, 2, 3, 4),
                     "base: dog..truck (train), novel: airplane..deer (test)"))
