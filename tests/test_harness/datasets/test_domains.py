"""Source and target (harness/datasets/domains.py): novel-only TOML files, registered sources, the images
people actually have (harness/datasets/imagefolder.py read_rgb), --queries auto and the leak guard. Real
on-disk formats: PNG and JPEG files written with PIL, the CIFAR-10 ImageFolder layout of tests/synthetic.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import NOVEL_PER_CLASS

from harness.datasets import get_dataset
from harness.datasets.base import Pool
from harness.datasets.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from harness.datasets.domains import auto_queries, load_data
from harness.datasets.imagefolder import read_rgb, read_spec
from harness.errors import UsageError

NOVEL = ("dog", "frog", "horse", "ship", "truck")


def _error(fn) -> str:  # noqa: ANN001
    with pytest.raises(UsageError) as e:
        fn()
    message = str(e.value)
    assert message and "\n" not in message
    return message


def _target(tmp: Path, root: Path, classes=NOVEL, extra: str = "") -> Path:  # noqa: ANN001
    toml = tmp / "target.toml"
    toml.write_text(f'[dataset]\nname = "my-target"\nroot = "{root}"\nnovel = {list(classes)!r}\n{extra}'
                    .replace("'", '"'))
    return toml


# --------------------------------------------------------------------------------------- the TOML file
def test_a_toml_file_may_list_novel_classes_only_and_name_its_source(tmp_path: Path) -> None:
    for c in ("owl", "wren"):
        (tmp_path / "img" / c).mkdir(parents=True)
    toml = _target(tmp_path, "img", ("owl", "wren"), 'source = "other.toml"\n')
    spec = read_spec(toml)
    assert spec.base == () and spec.novel == ("owl", "wren") and not spec.image_size_given
    assert spec.source == str(tmp_path / "other.toml")  # relative to the TOML file
    assert read_spec(_target(tmp_path, "img", ("owl",), 'source = "cifar10"\n')).source == "cifar10"
    both = _target(tmp_path, "img", ("owl",), 'base = ["wren"]\nsource = "cifar10"\n')
    assert "lists base classes and names a source" in _error(lambda: read_spec(both))
    empty = _target(tmp_path, "img", ("owl",), 'source = ""\n')
    assert "key 'source' in [dataset] must be a non-empty string" in _error(lambda: read_spec(empty))
    no_base = _target(tmp_path, "img", ("owl",), "base = []\n")
    assert "key 'base' in [dataset] must be a non-empty list" in _error(lambda: read_spec(no_base))


# --------------------------------------------------------------------------------------- image formats
def _two_colours(w: int, h: int) -> np.ndarray:
    """Left half red, right half blue."""
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[:, : w // 2, 0] = 255
    pixels[:, w // 2:, 2] = 255
    return pixels


def test_read_rgb_handles_the_images_people_have(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    # grayscale, 8 and 16 bits: replicated to three channels; 16 bits scaled, not clipped
    gray = rng.integers(0, 256, size=(12, 20), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    np.testing.assert_array_equal(np.asarray(read_rgb(str(tmp_path / "gray.png"))), np.repeat(gray[..., None], 3, 2))
    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)  # the 8-bit values at 16 bits
    Image.fromarray(deep).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    np.testing.assert_array_equal(np.asarray(read_rgb(str(tmp_path / "gray16.png"))), np.repeat(gray[..., None], 3, 2))
    # palette (no transparency): its colours
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(np.asarray(read_rgb(str(tmp_path / "palette.png"))),
                                  np.asarray(palette.convert("RGB")))
    # RGBA: transparent pixels onto white, opaque ones kept, half-transparent blended
    rgba = np.concatenate([rgb, np.full((12, 20, 1), 255, dtype=np.uint8)], axis=2)
    rgba[:, :5, 3] = 0
    rgba[:, 5:10, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(read_rgb(str(tmp_path / "rgba.png"))).astype(int)
    assert (out[:, :5] == 255).all() and (out[:, 10:] == rgb[:, 10:]).all()
    blend = rgb[:, 5:10].astype(float) * 128 / 255 + 255 * (1 - 128 / 255)
    assert np.abs(out[:, 5:10] - blend).max() <= 1
    # a palette's transparent colour: white too
    indexed = palette.copy()
    indexed.info["transparency"] = int(np.asarray(indexed)[0, 0])
    indexed.save(tmp_path / "palette-t.png", transparency=int(np.asarray(indexed)[0, 0]))
    assert (np.asarray(read_rgb(str(tmp_path / "palette-t.png")))[0, 0] == 255).all()
    # grayscale with alpha
    la = np.stack([gray, np.where(np.arange(20) < 4, 0, 255).astype(np.uint8)[None].repeat(12, 0)], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = np.asarray(read_rgb(str(tmp_path / "la.png")))
    assert (out[:, :4] == 255).all() and (out[:, 4:, 0] == gray[:, 4:]).all()
    # CMYK JPEG
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    out = read_rgb(str(tmp_path / "cmyk.jpg"))
    assert out.mode == "RGB" and out.size == (20, 12)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo stored sideways with EXIF orientation 6 (rotate 90° clockwise to display)."""
    img = Image.fromarray(_two_colours(64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    out = np.asarray(read_rgb(str(tmp_path / "photo.jpg"))).astype(int)
    assert out.shape == (64, 32, 3)  # upright: 32 wide, 64 high
    assert out[5, 16, 0] > 200 and out[5, 16, 2] < 60  # the stored left half (red) is now on top
    assert out[58, 16, 2] > 200 and out[58, 16, 0] < 60


def test_a_folder_of_mixed_formats_loads_at_the_source_size_with_the_source_statistics(
        tmp_path: Path, imagefolder_dir: Path) -> None:
    images = tmp_path / "mine"
    rng = np.random.default_rng(1)
    for c, (mode, suffix) in zip(("owl", "wren"), (("L", ".png"), ("RGBA", ".png")), strict=True):
        (images / c).mkdir(parents=True)
        for i in range(4):
            shape = (50 + 7 * i, 30 + 3 * i) + ((4,) if mode == "RGBA" else ())
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(images / c / f"{i}{suffix}")
    Image.fromarray(_two_colours(64, 32)).save(images / "wren" / "9.jpg", exif=_orientation(6), quality=95)
    toml = _target(tmp_path, "mine", ("owl", "wren"), 'source = "cifar10-5-5"\n')
    data = load_data(str(toml), None, imagefolder_dir, tmp_path / "cache")
    assert data.novel.images.shape == (9, 32, 32, 3) and data.novel.class_sizes() == [4, 5]
    assert data.mean == CIFAR10_MEAN and data.std == CIFAR10_STD  # the source's statistics
    photo = data.novel.images[-1].astype(int)  # upright, then resized to 32x32
    assert photo[2, 16, 0] > 200 and photo[29, 16, 2] > 200
    gray = data.novel.images[0]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path, imagefolder_dir: Path) -> None:
    (tmp_path / "mine" / "owl").mkdir(parents=True)
    Image.fromarray(_two_colours(8, 8)).save(tmp_path / "mine" / "owl" / "0.png")
    (tmp_path / "mine" / "owl" / "1.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    toml = _target(tmp_path, "mine", ("owl",), 'source = "cifar10-5-5"\n')
    message = _error(lambda: load_data(str(toml), None, imagefolder_dir, tmp_path / "cache"))
    assert "cannot decode image" in message and str(tmp_path / "mine" / "owl" / "1.jpg") in message


# --------------------------------------------------------------------------------------- source and target
def _cifar_novel_target(tmp_path: Path, imagefolder_dir: Path, source: str = "cifar10-5-5") -> Path:
    """The CIFAR-10 novel pool's own files (test/<class>/) as a novel-only TOML target."""
    return _target(tmp_path, imagefolder_dir / "test", NOVEL, f'source = "{source}"\n')


def test_a_cross_domain_target_keeps_the_source_pool_statistics_and_model_fingerprint(
        tmp_path: Path, imagefolder_dir: Path) -> None:
    cache = tmp_path / "cache"
    in_domain = get_dataset("cifar10-5-5").load(imagefolder_dir, cache)
    data = load_data(str(_cifar_novel_target(tmp_path, imagefolder_dir)), None, imagefolder_dir, cache)
    np.testing.assert_array_equal(data.base.images, in_domain.base.images)
    np.testing.assert_array_equal(data.novel.images, in_domain.novel.images)  # the same files, same order
    np.testing.assert_array_equal(data.novel.labels, in_domain.novel.labels)
    assert data.novel.classes == in_domain.novel.classes and data.mean == in_domain.mean
    assert data.model_fingerprint == in_domain.fingerprint  # source models keyed as in the in-domain run
    assert data.fingerprint != in_domain.fingerprint and data.source_name == "cifar10-5-5"
    d = data.domains
    assert d["cross_domain"] and d["source"] == "cifar10-5-5" and d["target"] == "my-target"
    assert d["source_classes"] == 5 and d["source_images"] == 150 and d["image_size"] == 32
    assert d["novel_images_per_class"] == dict.fromkeys(NOVEL, NOVEL_PER_CLASS)
    assert d["leaks"] == {"images": 0, "image_examples": [], "classes": []}
    # --source-dataset overrides the file's source; a registered source of all ten classes
    ten = load_data(str(_cifar_novel_target(tmp_path, imagefolder_dir)), "cifar10", imagefolder_dir, cache)
    assert ten.base.classes == tuple(get_dataset("cifar10").load(imagefolder_dir, cache).base.classes)
    assert len(ten.base.classes) == 10 and len(ten.base.labels) == 300
    assert ten.domains["leaks"]["classes"] == list(NOVEL)  # dog..truck are base classes of cifar10 too
    # the registered dataset named as its own source: in-domain, nothing changes
    same = load_data("cifar10-5-5", "cifar10-5-5", imagefolder_dir, cache)
    assert same.fingerprint == in_domain.fingerprint and same.model_fingerprint == in_domain.fingerprint
    assert not same.domains["cross_domain"] and same.domains["source"] == "cifar10-5-5"


def test_a_novel_only_target_without_source_has_no_base_pool(tmp_path: Path, imagefolder_dir: Path) -> None:
    toml = _target(tmp_path, imagefolder_dir / "test", NOVEL)
    data = load_data(str(toml), None, None, tmp_path / "cache")
    assert len(data.base.labels) == 0 and data.base.images.shape == (0, 32, 32, 3) and data.image_size == 32
    assert data.domains["source"] == "none" and "target's own" in data.domains["normalisation"]
    assert "does not apply to the TOML dataset" in _error(
        lambda: load_data(str(toml), None, imagefolder_dir, tmp_path / "cache"))


def test_bad_sources_and_targets_are_one_line_errors(tmp_path: Path, imagefolder_dir: Path) -> None:
    cache = tmp_path / "cache"
    novel_only = _target(tmp_path, imagefolder_dir / "test", NOVEL)
    assert "can only be a source" in _error(lambda: load_data("cifar10", None, imagefolder_dir, cache))
    assert "has no base pool, so it cannot be a source" in _error(
        lambda: load_data("cifar10-5-5", str(novel_only), imagefolder_dir, cache))
    assert "unknown dataset 'cifar1'" in _error(lambda: load_data(str(novel_only), "cifar1", imagefolder_dir, cache))
    sized = _target(tmp_path, imagefolder_dir / "test", NOVEL, 'source = "cifar10-5-5"\nimage_size = 48\n')
    assert "image_size 48 differs from the source cifar10-5-5's 32x32" in _error(
        lambda: load_data(str(sized), None, imagefolder_dir, cache))


def test_the_leak_guard_counts_identical_images_and_shared_class_names(tmp_path: Path,
                                                                      imagefolder_dir: Path) -> None:
    root = tmp_path / "leaky"
    for c in ("owl", "dog"):
        (root / c).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_two_colours(32, 32) // (i + 1)).save(root / "owl" / f"{i}.png")
    copied = sorted((imagefolder_dir / "train" / "cat").iterdir())[:2]  # base images of cifar10-5-5
    for p in copied:
        shutil.copy(p, root / "dog" / p.name)
    toml = _target(tmp_path, "leaky", ("owl", "dog"), 'source = "cifar10-5-5"\n')
    data = load_data(str(toml), None, imagefolder_dir, tmp_path / "cache")
    leaks = data.domains["leaks"]
    assert leaks["images"] == 2 and leaks["image_examples"] == [str(root / "dog" / p.name) for p in copied]
    assert leaks["classes"] == []
    message = _error(lambda: load_data(str(toml), None, imagefolder_dir, tmp_path / "cache", strict_leaks=True))
    assert message.startswith("--strict-leaks: 2 target image(s)") and str(root / "dog" / copied[0].name) in message
    shared = load_data(str(toml), "cifar10", imagefolder_dir, tmp_path / "cache").domains["leaks"]
    assert shared["classes"] == ["dog"] and shared["images"] == 2


# --------------------------------------------------------------------------------------- --queries auto
def test_auto_queries_uses_the_smallest_class_and_names_a_class_too_small() -> None:
    def pool(sizes: list[int]) -> Pool:
        labels = np.repeat(np.arange(len(sizes)), sizes)
        return Pool(np.zeros((len(labels), 8, 8, 3), np.uint8), labels, tuple(f"c{i}" for i in range(len(sizes))))

    assert auto_queries(pool([100, 200]), [1, 5]) == 15
    assert auto_queries(pool([20, 30]), [1, 5]) == 15
    assert auto_queries(pool([12, 30]), [1, 5]) == 7
    assert auto_queries(pool([6, 30]), [1, 5]) == 1  # shots + 1 images is enough
    message = _error(lambda: auto_queries(pool([30, 5, 4]), [1, 5]))
    assert message.startswith("class 'c2' has 4 image(s); 5-shot episodes need at least 6 per class")


# --------------------------------------------------------------------------------------- through `run`
def test_bad_sources_through_run_are_one_line_exit_2_nothing_written(tmp_path: Path, imagefolder_dir: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    leaky = tmp_path / "leaky" / "dog"
    leaky.mkdir(parents=True)
    for p in sorted((imagefolder_dir / "train" / "cat").iterdir())[:6]:
        shutil.copy(p, leaky / p.name)
    novel_only = _target(tmp_path, imagefolder_dir / "test", NOVEL)
    cases = [
        (["--dataset", "cifar10"], "dataset 'cifar10' can only be a source"),
        (["--source-dataset", "cifar10-5-5-swaped"], "unknown dataset 'cifar10-5-5-swaped' (did you mean"),
        (["--source-dataset", str(novel_only)], "has no base pool, so it cannot be a source"),
        (["--dataset", str(tmp_path / "leaky.toml"), "--strict-leaks", "--shots", "1"],
         "--strict-leaks: 6 target image(s) of my-target are identical to images of the source cifar10-5-5"),
        (["--queries", "many"], "--queries: 'many' is not an integer; give a positive integer or auto"),
    ]
    for args, message in cases:
        (tmp_path / "leaky.toml").write_text(f'[dataset]\nname = "my-target"\nroot = "{tmp_path / "leaky"}"\n'
                                             f'novel = ["dog"]\nsource = "cifar10-5-5"\n')
        out = tmp_path / "out"
        code = main(["run", "pixels-probe", "--data-dir", str(imagefolder_dir), "--ways", "1", "--out", str(out),
                     "--preset", "smoke", *args]) if "--queries" not in args else None
        if code is None:
            with pytest.raises(SystemExit) as e:
                main(["run", "pixels-probe", *args])
            code = e.value.code
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err, (args, err)
        assert not out.exists()
