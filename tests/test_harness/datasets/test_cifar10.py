import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from synthetic import make_images, write_batches, write_imagefolder

import harness.datasets.cifar10 as data
from harness.datasets import get_dataset
from harness.datasets.cifar10 import load_cifar10
from harness.errors import UsageError

TARBALL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"


def test_imagefolder_png_matches_the_pixels_and_cifar_class_order(tmp_path):
    root = write_imagefolder(tmp_path / "png", train_per_class=3, test_per_class=2, shuffle_folder_case=True)
    d = load_cifar10(root, tmp_path / "cache")
    images, labels = make_images(3, seed=0)
    assert d.train_images.shape == (30, 32, 32, 3) and d.train_images.dtype == np.uint8
    assert np.array_equal(d.train_images, images) and np.array_equal(d.train_labels, labels)
    assert d.test_images.shape == (20, 32, 32, 3)
    assert d.layout == "imagefolder-png"


def test_imagefolder_jpg(tmp_path):
    root = write_imagefolder(tmp_path / "jpg", train_per_class=2, test_per_class=2, ext="jpg")
    d = load_cifar10(root, tmp_path / "cache")
    images, _ = make_images(2, seed=0)
    assert d.layout == "imagefolder-jpg"
    # lossy, but the same pictures in the same order: per-image mean colours agree closely
    assert np.abs(d.train_images.mean((1, 2)) - images.mean((1, 2))).max() < 3


def test_official_batches(tmp_path):
    root = write_batches(tmp_path / "b", train_per_class=3, test_per_class=2)
    d = load_cifar10(root, tmp_path / "cache")
    assert d.train_images.shape == (30, 32, 32, 3) and d.test_images.shape == (20, 32, 32, 3)
    images, labels = make_images(2, seed=1)
    assert np.array_equal(d.test_images, images) and np.array_equal(d.test_labels, labels)
    # pointing at the cifar-10-batches-py folder itself works too
    assert load_cifar10(root / "cifar-10-batches-py", tmp_path / "cache").fingerprint == d.fingerprint


def test_second_load_uses_the_npz_cache(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "png", train_per_class=2, test_per_class=2)
    first = load_cifar10(root, tmp_path / "cache")
    assert list((tmp_path / "cache" / "data").glob("*.npz"))

    def no_decoding(*args):
        raise AssertionError("decoded images again")

    monkeypatch.setattr(data, "_decode_imagefolder", no_decoding)
    second = load_cifar10(root, tmp_path / "cache")
    assert second.fingerprint == first.fingerprint
    assert np.array_equal(second.train_images, first.train_images)


def test_env_variable_is_used(tmp_path, monkeypatch):
    root = write_batches(tmp_path / "b", train_per_class=1, test_per_class=1)
    monkeypatch.setenv("HARNESS_DATA", str(root))
    assert load_cifar10(None, tmp_path / "cache").train_images.shape[0] == 10


def test_no_data_no_internet_names_what_was_tried(tmp_path):
    with pytest.raises(UsageError) as e:
        load_cifar10(None, tmp_path / "cache")
    message = str(e.value)
    assert "--data-dir" in message and str(tmp_path / "cache" / "cifar10") in message
    assert "internet" in message and "\n" not in message


@pytest.mark.parametrize("damage, message", [
    ("missing_dir", "does not exist"),
    ("missing_class", "lacks class folder"),
    ("bad_image", "cannot decode image"),
    ("empty", "holds neither cifar-10-batches-py"),
])
def test_bad_data_directories(tmp_path, damage, message):
    root = write_imagefolder(tmp_path / "d", train_per_class=1, test_per_class=1)
    if damage == "missing_dir":
        root = tmp_path / "nope"
    elif damage == "missing_class":
        shutil.rmtree(root / "test" / "frog")
    elif damage == "bad_image":
        next((root / "train" / "cat").iterdir()).write_bytes(b"\x89PNG truncated")
    else:
        root = tmp_path / "empty"
        root.mkdir()
    with pytest.raises(UsageError, match=message):
        load_cifar10(root, tmp_path / "cache")


def test_bad_batch_file(tmp_path):
    root = write_batches(tmp_path / "b", train_per_class=1, test_per_class=1)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="cannot read CIFAR-10 batch"):
        load_cifar10(root, tmp_path / "cache")


@pytest.mark.slow
@pytest.mark.skipif(not TARBALL.is_file(), reason="the real CIFAR-10 copy (../shared/data) is not present")
def test_real_cifar10_copy_counts(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    subprocess.run(["tar", "-xzf", str(TARBALL), "-C", str(root)], check=True)
    d = load_cifar10(root, Path(os.environ["HARNESS_CACHE"]))
    assert d.train_images.shape == (50_000, 32, 32, 3) and d.test_images.shape == (10_000, 32, 32, 3)
    assert np.bincount(d.train_labels).tolist() == [5_000] * 10
    assert np.bincount(d.test_labels).tolist() == [1_000] * 10
    assert d.label == "CIFAR-10 (JPEG q75 copy)"  # recognised from its pixels
    split = get_dataset("cifar10-5-5").load(root, Path(os.environ["HARNESS_CACHE"]))
    assert split.base.classes == ("airplane", "automobile", "bird", "cat", "deer")
    assert split.base.class_sizes() == [5_000] * 5 and split.novel.class_sizes() == [1_000] * 5


def test_splits_draw_base_from_train_and_novel_from_test(tmp_path):
    root = write_batches(tmp_path / "b", train_per_class=3, test_per_class=2)
    raw = load_cifar10(root, tmp_path / "cache")
    train, train_y, test, test_y = raw.train_images, raw.train_labels, raw.test_images, raw.test_labels
    for name, base, novel in (("cifar10-5-5", range(5), range(5, 10)), ("cifar10-5-5-swapped", range(5, 10), range(5))):
        d = get_dataset(name).load(root, tmp_path / "cache")
        assert d.base.classes == tuple(data.CLASSES[c] for c in base)
        assert d.novel.classes == tuple(data.CLASSES[c] for c in novel)
        assert np.array_equal(d.base.images, train[np.isin(train_y, list(base))])
        assert np.array_equal(d.novel.images, test[np.isin(test_y, list(novel))])
        assert np.array_equal(d.base.labels, train_y[np.isin(train_y, list(base))] - min(base))  # relabelled 0..4
        assert d.label == "CIFAR-10 (unknown copy)" and d.mean == data.CIFAR10_MEAN
    fingerprints = {get_dataset(n).load(root, tmp_path / "cache").fingerprint for n in ("cifar10-5-5",
                                                                                         "cifar10-5-5-swapped")}
    assert len(fingerprints) == 2  # the pools are part of the fingerprint


def test_archive_and_nested_folder_messages(tmp_path):
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    archive.write_bytes(b"not really")
    with pytest.raises(UsageError, match="is an archive, not a folder; extract it first"):
        load_cifar10(archive, tmp_path / "cache")
    write_imagefolder(tmp_path / "outer" / "cifar", train_per_class=1, test_per_class=1)
    with pytest.raises(UsageError, match="it holds one in .*cifar: pass --data-dir"):
        load_cifar10(tmp_path / "outer", tmp_path / "cache")
