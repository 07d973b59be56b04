"""CIFAR-FS and FC100 from synthetic CIFAR-100 files in torchvision's real on-disk format."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from synthetic_cifar100 import COARSE, COARSE_OF, FINE, SUPERCLASSES, dump, write_cifar100

import harness.datasets.cifar100 as c100
from harness.datasets import get_dataset
from harness.datasets.cifar100 import CIFAR_FS, CIFAR_FS_NOVEL, CIFAR_FS_VALIDATION, FC100
from harness.errors import UsageError
from harness.registry import DATASETS


def _no_internet(root: Path) -> None:
    raise OSError("no internet in tests")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.setattr(c100, "_download", _no_internet)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "data"
    return root, write_cifar100(root)


def _error(fn, *args, **kwargs) -> str:  # noqa: ANN001
    with pytest.raises(UsageError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message and message
    return message


def _expected_pool(arrays: dict[str, np.ndarray], classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``classes`` (train then test, file order) and labels by the position of the class in ``classes``."""
    images = np.concatenate([arrays["train_x"], arrays["test_x"]])
    names = np.array(FINE)[np.concatenate([arrays["train_y"], arrays["test_y"]])]
    keep = np.isin(names, classes)
    return images[keep], np.array([classes.index(n) for n in names[keep]])


def test_registered_lazily() -> None:
    assert DATASETS.get("cifar-fs").description.startswith("CIFAR-FS")
    assert get_dataset("cifar-fs") is CIFAR_FS and get_dataset("fc100") is FC100


def test_cifar_fs_pools(data: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    root, arrays = data
    d = CIFAR_FS.load(root, tmp_path / "cache")
    assert (len(d.base.classes), len(d.validation.classes), len(d.novel.classes)) == (64, 16, 20)
    assert set(d.novel.classes) == set(CIFAR_FS_NOVEL) and set(d.validation.classes) == set(CIFAR_FS_VALIDATION)
    assert not set(d.base.classes) & (set(CIFAR_FS_NOVEL) | set(CIFAR_FS_VALIDATION))
    for pool in (d.base, d.validation, d.novel):  # fine-label order within each pool, all 3 + 2 images per class
        assert list(pool.classes) == sorted(pool.classes, key=FINE.index)
        assert pool.class_sizes() == [5] * len(pool.classes)
        images, labels = _expected_pool(arrays, list(pool.classes))
        np.testing.assert_array_equal(pool.images, images)
        np.testing.assert_array_equal(pool.labels, labels)
        assert pool.images.dtype == np.uint8 and pool.labels.dtype == np.int64
    assert d.novel.classes[:3] == ("baby", "bed", "bicycle") and d.base.classes[0] == "apple"
    assert d.layout == "cifar-100-python" and d.name == "cifar-fs" and d.image_size == 32
    assert d.mean == (0.5071, 0.4865, 0.4409) and d.std == (0.2673, 0.2564, 0.2762)
    assert d.label == "CIFAR-FS from CIFAR-100 (unknown copy)"
    assert d.source == str(root / "cifar-100-python")
    assert "whale" in d.description


def test_fc100_pools(data: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    root, arrays = data
    d = FC100.load(root, tmp_path / "cache")
    assert (len(d.base.classes), len(d.validation.classes), len(d.novel.classes)) == (60, 20, 20)
    novel = [f for s in ("aquatic_mammals", "insects", "medium_mammals", "people") for f in SUPERCLASSES[s]]
    assert d.novel.classes == tuple(sorted(novel, key=FINE.index))
    assert d.novel.classes[:4] == ("baby", "beaver", "bee", "beetle")
    assert set(d.validation.classes) == {f for s in ("large_carnivores", "large_omnivores_and_herbivores",
                                                     "non-insect_invertebrates", "small_mammals")
                                         for f in SUPERCLASSES[s]}
    assert {COARSE[COARSE_OF[FINE.index(c)]] for c in d.base.classes} == set(c100.FC100_BASE)
    for pool in (d.base, d.validation, d.novel):
        images, labels = _expected_pool(arrays, list(pool.classes))
        np.testing.assert_array_equal(pool.images, images)
        np.testing.assert_array_equal(pool.labels, labels)
    assert d.label == "FC100 from CIFAR-100 (unknown copy)"
    assert d.fingerprint != CIFAR_FS.load(root, tmp_path / "cache").fingerprint


def test_fc100_reads_the_superclass_map_from_the_files(tmp_path: Path) -> None:
    """Swap whale (aquatic_mammals, novel) and wolf (large_carnivores, validation) in the coarse labels."""
    root = tmp_path / "data"
    write_cifar100(root)
    folder = root / "cifar-100-python"
    whale, wolf = FINE.index("whale"), FINE.index("wolf")
    for split in ("train", "test"):
        with open(folder / split, "rb") as f:
            entry = pickle.load(f)
        coarse = COARSE_OF.copy()
        coarse[[whale, wolf]] = coarse[[wolf, whale]]
        entry["coarse_labels"] = coarse[entry["fine_labels"]].tolist()
        dump(folder / split, entry)
    d = FC100.load(root, tmp_path / "cache")
    assert "wolf" in d.novel.classes and "whale" in d.validation.classes


def test_folder_itself_env_and_fingerprint(data: tuple[Path, dict[str, np.ndarray]], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = data
    a = CIFAR_FS.load(root, tmp_path / "cache")
    b = CIFAR_FS.load(root / "cifar-100-python", tmp_path / "cache2")
    monkeypatch.setenv("HARNESS_DATA", str(root))
    c = CIFAR_FS.load(None, tmp_path / "cache3")
    assert a.fingerprint == b.fingerprint == c.fingerprint and len(a.fingerprint) == 16
    np.testing.assert_array_equal(a.novel.images, b.novel.images)


def test_npz_cache_is_reused_and_keyed_by_the_files(data: tuple[Path, dict[str, np.ndarray]], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = data
    first = CIFAR_FS.load(root, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "data").glob("cifar100-*.npz"))) == 1

    def fail(folder: Path):  # noqa: ANN202
        raise AssertionError("decoded again")

    monkeypatch.setattr(c100, "_decode", fail)
    again = FC100.load(root, tmp_path / "cache")  # one cache for both splits
    second = CIFAR_FS.load(root, tmp_path / "cache")
    assert second.fingerprint == first.fingerprint and again.label.endswith("(unknown copy)")
    np.testing.assert_array_equal(second.base.images, first.base.images)
    test_file = root / "cifar-100-python" / "test"
    os.utime(test_file, ns=(test_file.stat().st_atime_ns, test_file.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        CIFAR_FS.load(root, tmp_path / "cache")


def test_official_label_from_md5(data: tuple[Path, dict[str, np.ndarray]], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = data
    assert c100._official(root / "cifar-100-python") is False
    monkeypatch.setattr(c100, "_official", lambda folder: True)
    assert CIFAR_FS.load(root, tmp_path / "cache").label == "CIFAR-FS from CIFAR-100 (official batches)"


def test_download_into_the_default_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    calls = []

    def fake_download(root: Path) -> None:
        calls.append(root)
        write_cifar100(root)

    monkeypatch.setattr(c100, "_download", fake_download)
    d = FC100.load(None, cache)
    assert calls == [cache / "cifar100"] and d.source == str(cache / "cifar100" / "cifar-100-python")
    FC100.load(None, cache)
    assert len(calls) == 1  # present now: no second download


def _corrupt_meta(root: Path) -> None:
    dump(root / "cifar-100-python" / "meta", {"fine_label_names": [n.replace("whale", "wale") for n in FINE],
                                              "coarse_label_names": [c.replace("people", "persons") for c in COARSE]})


def _bad_pickle(root: Path) -> None:
    (root / "cifar-100-python" / "train").write_bytes(b"not a pickle at all")


def _evil_pickle(root: Path) -> None:
    dump(root / "cifar-100-python" / "train", OrderedDict(data=np.zeros((1, 3072), np.uint8)))


def _short_coarse(root: Path) -> None:
    path = root / "cifar-100-python" / "test"
    with open(path, "rb") as f:
        entry = pickle.load(f)
    dump(path, {**entry, "coarse_labels": entry["coarse_labels"][:-1]})


def _two_superclasses(root: Path) -> None:
    path = root / "cifar-100-python" / "test"
    with open(path, "rb") as f:
        entry = pickle.load(f)
    i = entry["fine_labels"].index(FINE.index("whale"))
    entry["coarse_labels"][i] = COARSE.index("people")
    dump(path, entry)


@pytest.mark.parametrize("dataset, damage, expected", [
    (CIFAR_FS, _corrupt_meta, "lacks the CIFAR-FS novel classes whale"),
    (FC100, _corrupt_meta, "lacks the FC100 novel superclasses people"),
    (CIFAR_FS, lambda r: (r / "cifar-100-python" / "meta").unlink(), "lacks meta; give a complete cifar-100-python"),
    (CIFAR_FS, _bad_pickle, "cannot read CIFAR-100 batch"),
    (CIFAR_FS, _evil_pickle, "refusing to load collections.OrderedDict"),
    (CIFAR_FS, _short_coarse, "coarse_labels and images differ in length"),
    (FC100, _two_superclasses, "put fine class 'whale' in two superclasses"),
])
def test_bad_files_are_one_line_errors(dataset, damage, expected, data, tmp_path: Path) -> None:  # noqa: ANN001
    root, _ = data
    damage(root)
    assert expected in _error(dataset.load, root, tmp_path / "cache")


def test_missing_data_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no cifar-100-python/ folder" in _error(CIFAR_FS.load, empty, tmp_path / "cache")
    write_cifar100(empty / "nested")
    assert f"pass --data-dir {empty / 'nested'}" in _error(CIFAR_FS.load, empty, tmp_path / "cache")
    assert "does not exist" in _error(CIFAR_FS.load, tmp_path / "nope", tmp_path / "cache")
    message = _error(FC100.load, None, tmp_path / "cache")
    assert message.startswith("no CIFAR-100 found") and str(tmp_path / "cache" / "cifar100") in message
    assert "(download disabled)" in _error(FC100.load, None, tmp_path / "cache", download=False)
