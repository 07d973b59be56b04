"""Small synthetic CIFAR-10-like data in the real on-disk formats, so the real loaders run.

Each class has its own colour and stripe orientation plus noise: easy for any reasonable feature
extractor, so "better than chance" is a meaningful check of the plumbing, not of the model.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from harness.datasets.cifar10 import CIFAR10_MEAN, CIFAR10_STD, CLASSES
from harness.episodes import content_keys

#: test images per class of the session fixtures (conftest.py): the novel pool of their cifar10-5-5 split. Large
#: enough that a smoke unit's 8 episodes are one round of image-disjoint episodes, one sealed batch (1-shot with 15
#: queries takes 16 images of a class per episode, 5-shot 20), as on real CIFAR-10 (1,000 per class)
NOVEL_PER_CLASS = 160
#: channel statistics for tests that normalise images themselves (the harness takes them from the data, never
#: defaults them): CIFAR-10's, the data these helpers imitate
MEAN, STD = CIFAR10_MEAN, CIFAR10_STD
#: a SourceData's protocol fields (keyword-only, never defaulted) as the default run's: 5-way, 15 queries
SOURCE_PROTOCOL = {"ways": 5, "queries": 15, "mean": MEAN, "std": STD}


def index_keys(n: int) -> np.ndarray:
    """Content keys for a pool of ``n`` images that a strategy can compute without their pixels: a hash of each
    image's pool index (all distinct, so the sampler deals the same images as with the pixels' own keys; only the
    order they are presented in differs). For pools whose pixels do not matter, and for replay attacks."""
    return content_keys(np.arange(n)[:, None])


def make_images(per_class: int, seed: int = 0, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(1234).integers(30, 226, size=(classes, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    images, labels = [], []
    for c in range(classes):
        stripes = (np.sin((xx * np.cos(c) + yy * np.sin(c)) * 0.8) > 0)[..., None]
        base = palette[c] * (0.6 + 0.4 * stripes)
        noise = rng.normal(0, 12, size=(per_class, 32, 32, 3))
        images.append(np.clip(base[None] + noise, 0, 255).astype(np.uint8))
        labels.append(np.full(per_class, c))
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def write_imagefolder(root: Path, train_per_class: int = 30, test_per_class: int = 30, ext: str = "png",
                      shuffle_folder_case: bool = False) -> Path:
    for split, n, seed in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        images, labels = make_images(n, seed)
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            name = CLASSES[label].upper() if shuffle_folder_case and label % 2 else CLASSES[label]
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:05d}.{ext}", quality=95)
    return root


def write_batches(root: Path, train_per_class: int = 30, test_per_class: int = 30) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train, train_y = make_images(train_per_class, 0)
    test, test_y = make_images(test_per_class, 1)
    order = np.random.default_rng(0).permutation(len(train))
    chunks = np.array_split(order, 5)
    for i, chunk in enumerate(chunks, 1):
        _dump(folder / f"data_batch_{i}", train[chunk], train_y[chunk])
    _dump(folder / "test_batch", test, test_y)
    return root


def _dump(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as f:
        pickle.dump({"batch_label": "synthetic", "labels": labels.tolist(), "data": data,
                     "filenames": [f"{i}.png" for i in range(len(images))]}, f)


def train_on_small_pool(phase, labels, budget: int = 48):
    """``phase`` trained for ``budget`` images on 40 synthetic base images of 5 classes, with ``labels`` as the base
    labels (None: what the harness passes a phase that must not see them): for the label-blindness tests."""
    import torch

    from harness.phases import SourceData

    images, _ = make_images(8, seed=0, classes=5)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return phase.train(SourceData(nchw, labels, 5, torch.device("cpu"), 0, **SOURCE_PROTOCOL), budget)
