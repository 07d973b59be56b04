"""A user's ImageFolder described by a TOML file: the happy path and one test per bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import harness.datasets.imagefolder as imagefolder
from harness.datasets import get_dataset
from harness.datasets.imagefolder import from_toml
from harness.errors import UsageError

CLASSES = {"crow": 3, "gull": 2, "owl": 2, "wren": 3, "heron": 2}
TOML = """[dataset]
name = "my-birds"
root = "../images"
base = ["gull", "crow"]
novel = ["wren", "owl"]
validation = ["heron"]
image_size = 32
"""


def _write_images(root: Path) -> dict[str, list[np.ndarray]]:
    """40x40 images, PNG for even classes and JPEG for odd ones; the expected 32x32 pixels of each class."""
    rng = np.random.default_rng(0)
    expected: dict[str, list[np.ndarray]] = {}
    for k, (cls, n) in enumerate(CLASSES.items()):
        folder = root / cls
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("not an image")
        for i in reversed(range(n)):  # written out of order: read in name order
            pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            suffix = (".png", ".JPG", ".jpeg")[(k + i) % 3]
            path = folder / f"img{i:02d}{suffix}"
            Image.fromarray(pixels).save(path, format="PNG" if suffix == ".png" else "JPEG", quality=95)
            with Image.open(path) as img:
                small = np.asarray(img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
            expected.setdefault(cls, []).insert(0, small)
    return expected


@pytest.fixture
def birds(tmp_path: Path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    expected = _write_images(tmp_path / "images")
    spec = tmp_path / "spec" / "birds.toml"
    spec.parent.mkdir()
    spec.write_text(TOML)
    return spec, expected


def _error(fn, *args) -> str:  # noqa: ANN001
    with pytest.raises(UsageError) as e:
        fn(*args)
    message = str(e.value)
    assert "\n" not in message and message
    return message


def test_happy_path(birds: tuple[Path, dict[str, list[np.ndarray]]], tmp_path: Path) -> None:
    spec, expected = birds
    d = get_dataset(str(spec)).load(None, tmp_path / "cache")
    assert d.base.classes == ("gull", "crow") and d.novel.classes == ("wren", "owl")
    assert d.validation is not None and d.validation.classes == ("heron",)
    for pool in (d.base, d.validation, d.novel):
        assert pool.class_sizes() == [CLASSES[c] for c in pool.classes]
        want = np.concatenate([np.stack(expected[c]) for c in pool.classes])
        np.testing.assert_array_equal(pool.images, want)
        np.testing.assert_array_equal(pool.labels, np.repeat(np.arange(len(pool.classes)), pool.class_sizes()))
    assert d.image_size == 32 and d.base.images.shape == (5, 32, 32, 3) and d.base.images.dtype == np.uint8
    pixels = d.base.images.reshape(-1, 3).astype(np.float64) / 255
    assert d.mean == tuple(round(float(m), 4) for m in pixels.mean(0))
    assert d.std == tuple(round(float(s), 4) for s in pixels.std(0))
    assert d.name == "my-birds" and d.layout == "imagefolder-toml"
    assert d.label == "my-birds (ImageFolder ../images)" and d.source == str((tmp_path / "images").resolve())
    assert d.description == "base: gull, crow; validation: heron; novel: wren, owl"
    assert len(d.fingerprint) == 16


def test_defaults_cache_and_fingerprint(birds: tuple[Path, dict[str, list[np.ndarray]]], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    spec, _ = birds
    spec.write_text(TOML.replace('validation = ["heron"]\n', "").replace("image_size = 32\n", ""))
    first = from_toml(spec).load(None, tmp_path / "cache")
    assert first.validation is None and first.image_size == 32

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagefolder, "decode_images", fail)
    again = from_toml(spec).load(None, tmp_path / "cache")
    assert again.fingerprint == first.fingerprint and again.mean == first.mean
    np.testing.assert_array_equal(again.novel.images, first.novel.images)
    spec.write_text(TOML.replace("image_size = 32", "image_size = 16"))  # a new key: decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        from_toml(spec).load(None, tmp_path / "cache")
    monkeypatch.undo()
    small = from_toml(spec).load(None, tmp_path / "cache")
    assert small.image_size == 16 and small.fingerprint != first.fingerprint


def _edit(old: str, new: str):  # noqa: ANN202
    return lambda spec, images: spec.write_text(TOML.replace(old, new))


def _broken_image(spec: Path, images: Path) -> None:
    (images / "owl" / "img00.png").write_bytes(b"\x89PNG not really")


def _empty_class(spec: Path, images: Path) -> None:
    for p in (images / "owl").iterdir():
        p.unlink()


@pytest.mark.parametrize("damage, expected", [
    (lambda spec, images: spec.unlink(), "birds.toml does not exist; pass --dataset"),
    (lambda spec, images: spec.write_text("[dataset\nname = 1"), "is not valid TOML ("),
    (lambda spec, images: spec.write_text('name = "x"\n'), "has no [dataset] table"),
    (_edit("[dataset]", "[datasets]"), "has no [dataset] table"),
    (_edit('name = "my-birds"\n', ""), "lacks the required key 'name' (a non-empty string)"),
    (_edit('root = "../images"\n', ""), "lacks the required key 'root'"),
    (_edit('base = ["gull", "crow"]\n', 'base = ["gull", "crow"]\nsource = "cifar10"\n'),
     "lists base classes and names a source ('cifar10'); keep base"),  # base is optional: novel-only files
    (_edit('novel = ["wren", "owl"]\n', ""), "lacks the required key 'novel'"),
    (_edit('name = "my-birds"', "name = 3"), "key 'name' in [dataset] must be a non-empty string, got int 3"),
    (_edit('name = "my-birds"', 'name = ""'), "key 'name' in [dataset] must be a non-empty string"),
    (_edit('base = ["gull", "crow"]', 'base = "gull"'), "key 'base' in [dataset] must be a non-empty list of"),
    (_edit('base = ["gull", "crow"]', "base = []"), "key 'base' in [dataset] must be a non-empty list of"),
    (_edit('novel = ["wren", "owl"]', 'novel = ["wren", 2]'), "key 'novel' in [dataset] must be a non-empty list"),
    (_edit('validation = ["heron"]', 'validation = "heron"'), "key 'validation' in [dataset] must be a list"),
    (_edit("image_size = 32", 'image_size = "32"'), "key 'image_size' in [dataset] must be an integer"),
    (_edit("image_size = 32", "image_size = true"), "key 'image_size' in [dataset] must be an integer"),
    (_edit("image_size = 32", "imagesize = 32"), "unknown key 'imagesize' in [dataset] (did you mean 'image_size'?)"),
    (_edit("[dataset]", "[extra]\n[dataset]"), "unknown top-level key 'extra'"),
    (_edit("image_size = 32", "image_size = 4"), "image_size 4 is too small; use 8 or more"),
    (_edit("../images", "../imgs"), "imgs does not exist; root names the image folder"),
    (_edit('"owl"', '"owls"'), "class folder 'owls' does not exist in root"),
    (_edit('validation = ["heron"]', 'validation = ["crow"]'), "class 'crow' is listed in both base and validation"),
    (_edit('novel = ["wren", "owl"]', 'novel = ["wren", "wren"]'), "class 'wren' is listed twice in novel"),
    (_empty_class, "has no .png/.jpg/.jpeg images; add images or drop class 'owl'"),
    (_broken_image, "cannot decode image"),
])
def test_bad_inputs_are_one_line_errors(damage, expected: str, birds, tmp_path: Path) -> None:  # noqa: ANN001
    spec, _ = birds
    damage(spec, tmp_path / "images")
    message = _error(lambda: from_toml(spec).load(None, tmp_path / "cache"))
    assert expected in message
    if damage is _broken_image:
        assert str(tmp_path / "images" / "owl" / "img00.png") in message
    if "class folder 'owls'" in expected:
        assert f"in root {tmp_path / 'images'}" in message and "(did you mean 'owl'?)" in message


def test_data_dir_is_refused(birds: tuple[Path, dict[str, list[np.ndarray]]], tmp_path: Path) -> None:
    spec, _ = birds
    message = _error(from_toml(spec).load, tmp_path, tmp_path / "cache")
    assert "--data-dir does not apply" in message and message.endswith("drop --data-dir")


def test_absolute_root(birds: tuple[Path, dict[str, list[np.ndarray]]], tmp_path: Path) -> None:
    spec, _ = birds
    spec.write_text(TOML.replace("../images", str(tmp_path / "images")))
    d = from_toml(spec).load(None, tmp_path / "cache")
    assert d.novel.class_sizes() == [3, 2]
