"""CIFAR-FS, FC100 and a user's own ImageFolder (TOML) through the whole run, on synthetic data in the real
on-disk formats; and what changes or keeps a cached source model (``--ways``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rundirs import records
from synthetic import make_images
from synthetic_cifar100 import write_cifar100

from harness.cli import main

pytestmark = pytest.mark.slow  # end to end or training-heavy: `pytest -m "not slow"` skips it

SMOKE = ["--preset", "smoke", "--queries", "5", "--quiet"]


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar100(root, train_per_class=12, test_per_class=6)
    return root


@pytest.mark.parametrize("dataset, base_classes", [("cifar-fs", 64), ("fc100", 60)])
def test_cifar100_splits_run_end_to_end(dataset, base_classes, cifar100_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "frozen-features", "protonet", "--dataset", dataset, "--data-dir", str(cifar100_dir),
                 "--out", str(out), *SMOKE]) == 0
    recs = records(out)
    assert {r["status"] for r in recs.values()} == {"ok"} and len(recs) == 4
    assert {r["dataset"] for r in recs.values()} == {dataset}
    config = json.loads((out / "config.json").read_text())
    assert config["protocol"]["dataset"] == dataset and config["novel_classes"] == 20
    env = json.loads((out / "environment.json").read_text())
    assert env["data_layout"] == "cifar-100-python" and "unknown copy" in env["dataset"]
    assert f"`{dataset}`" in (out / "leaderboard.md").read_text()


def write_birds(root: Path, size: int = 40) -> Path:
    """Four classes of PNG/JPG images of another size, in an ImageFolder tree, and its TOML file."""
    images, labels = make_images(24, seed=2, classes=4)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / "images" / ("crow", "gull", "owl", "wren")[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).resize((size, size)).save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    (root / "birds.toml").write_text('[dataset]\nname = "my-birds"\nroot = "images"\nbase = ["crow", "gull"]\n'
                                     'novel = ["owl", "wren"]\nimage_size = 32\n')
    return root / "birds.toml"


def test_user_imagefolder_runs_end_to_end(tmp_path):
    toml = write_birds(tmp_path / "birds")
    out = tmp_path / "run"
    assert main(["run", "frozen-features", "partial-finetune", "protonet", "--dataset", str(toml), "--ways", "2",
                 "--out", str(out), *SMOKE]) == 0
    recs = records(out)
    assert len(recs) == 6 and {r["status"] for r in recs.values()} == {"ok"}
    assert all(r["accuracy"] > 0.6 for r in recs.values())  # two easy classes
    env = json.loads((out / "environment.json").read_text())
    assert env["dataset"].startswith("my-birds") and env["data_layout"] == "imagefolder-toml"


def test_user_imagefolder_too_small_for_the_protocol_is_exit_2(tmp_path, capsys):
    toml = write_birds(tmp_path / "birds")
    code = main(["run", "frozen-features", "--dataset", str(toml), "--ways", "2", "--shots", "20", "--queries", "5",
                 "--out", str(tmp_path / "run"), "--preset", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and "exceeds the 24 images of the smallest novel class" in err and not (tmp_path / "run").exists()
    code = main(["run", "protonet", "--dataset", str(toml), "--out", str(tmp_path / "run"), "--preset", "smoke"])
    assert code == 2 and "ways=5 exceeds the 2 novel classes" in capsys.readouterr().err


def test_other_ways_reuse_a_cached_meta_model_and_keep_the_supervised_one(imagefolder_dir, tmp_path, monkeypatch):
    """--ways 3 trains a 3-way MAML once; a second run loads it (the model is rebuilt from what the cache
    entry records, not from the strategy's defaults). The supervised phase does not depend on ways."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    args = ["run", "fomaml", "frozen-features", "--ways", "3", "--shots", "1", "--data-dir", str(imagefolder_dir),
            "--preset", "smoke", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    first, second = records(tmp_path / "a"), records(tmp_path / "b")
    assert [r["source_cached"] for r in first.values()] == [False, False]
    assert [r["source_cached"] for r in second.values()] == [True, True]
    for key in first:
        assert first[key]["episode_accuracies"] == second[key]["episode_accuracies"]
    assert main(["run", "frozen-features", "--shots", "1", "--data-dir", str(imagefolder_dir), "--preset", "smoke",
                 "--quiet", "--out", str(tmp_path / "c")]) == 0
    five_way = records(tmp_path / "c")[("frozen-features", 1)]
    assert five_way["source_keys"] == first[("frozen-features", 1)]["source_keys"] and five_way["source_cached"]
    assert np.isfinite(five_way["accuracy"])
