"""Tiny synthetic CIFAR-100 in torchvision's real on-disk format (``cifar-100-python/{train,test,meta}``).

The class names, their order and the fine -> superclass map are the real CIFAR-100 ones (Krizhevsky 2009,
https://www.cs.toronto.edu/~kriz/cifar.html); only the pixels are random, and there are a few images per
class instead of 500 + 100, so the real loader runs in well under a second.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

#: the real ``fine_label_names`` of the meta file, in label order
FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
#: the real superclasses (``coarse_label_names``, in label order) and their five fine classes each
SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
COARSE = tuple(SUPERCLASSES)
#: fine label -> coarse label
COARSE_OF = np.array([next(i for i, members in enumerate(SUPERCLASSES.values()) if f in members) for f in FINE])


def make_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random images (N, 32, 32, 3) uint8 and fine labels, shuffled as in the real files."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(FINE)), per_class))
    return rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8), labels.astype(np.int64)


def dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)  # same dict layout as the official (Python 2) pickles


def write_cifar100(root: Path, train_per_class: int = 3, test_per_class: int = 2,
                   fine_names: tuple[str, ...] = FINE, coarse_names: tuple[str, ...] = COARSE) -> dict[str, np.ndarray]:
    """Write ``root/cifar-100-python/{train,test,meta}``; return the arrays written (images NHWC)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, seed in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        images, fine = make_split(n, seed)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = images, fine
        dump(folder / split, {
            "filenames": [f"{split}_{i}.png" for i in range(len(fine))], "batch_label": f"synthetic {split}",
            "fine_labels": fine.tolist(), "coarse_labels": COARSE_OF[fine].tolist(),
            "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
        })
    dump(folder / "meta", {"fine_label_names": list(fine_names), "coarse_label_names": list(coarse_names)})
    return arrays
