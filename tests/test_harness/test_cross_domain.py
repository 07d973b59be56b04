"""Cross-domain runs end to end (harness/datasets/domains.py): a novel-only TOML dataset built from the
CIFAR-10 novel pool's own files gives the in-domain split's episodes, per-episode accuracies and source
models (item 8 of issue 24); a novel-only dataset without a source runs the rows that need no base pool;
``--queries auto``; ``list datasets``. Synthetic images in the real on-disk formats (tests/synthetic.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rundirs import records

from harness.cli import main
from harness.datasets import get_dataset
from harness.datasets.domains import load_data
from harness.episodes import EpisodeSet, content_keys

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` skips it

NOVEL = ("dog", "frog", "horse", "ship", "truck")
SMOKE = ["--preset", "smoke", "--quiet"]


def _target(folder: Path, root: Path, extra: str = "", classes=NOVEL) -> Path:  # noqa: ANN001
    folder.mkdir(parents=True, exist_ok=True)
    toml = folder / "target.toml"
    toml.write_text(f'[dataset]\nname = "my-target"\nroot = "{root}"\nnovel = [{", ".join(map(repr, classes))}]\n'
                    f"{extra}".replace("'", '"'))
    return toml


def test_a_novel_only_copy_of_the_cifar_novel_pool_gives_the_in_domain_episodes_and_accuracies(
        imagefolder_dir: Path, tmp_path: Path) -> None:
    toml = _target(tmp_path / "target", imagefolder_dir / "test", 'source = "cifar10-5-5"\n')
    cache = tmp_path / "cache"
    common = ["frozen-features", "pixels-probe", "--data-dir", str(imagefolder_dir), "--queries", "5", "--shots",
              "1", "5", *SMOKE]
    assert main(["run", "--dataset", "cifar10-5-5", "--out", str(tmp_path / "in"), *common]) == 0
    assert main(["run", "--dataset", str(toml), "--out", str(tmp_path / "cross"), *common]) == 0
    inside, across = records(tmp_path / "in"), records(tmp_path / "cross")
    assert set(inside) == set(across) and len(inside) == 4
    for key, a in inside.items():
        b = across[key]
        assert a["status"] == b["status"] == "ok"
        assert b["episode_accuracies"] == a["episode_accuracies"], key  # the same accuracy, episode by episode
        assert b["source_keys"] == a["source_keys"], key  # the same source model: one cache entry
        assert (b["novel_images"], b["image_reuse"]) == (a["novel_images"], a["image_reuse"])
    assert across[("frozen-features", 1)]["source_cached"]  # trained by the in-domain run, loaded here
    # the same episodes: every index and label, drawn from the two datasets as the harness draws them
    split = get_dataset("cifar10-5-5").load(imagefolder_dir, cache)
    novel_only = load_data(str(toml), None, imagefolder_dir, cache)
    for shots in (1, 5):
        drawn = [EpisodeSet.draw(d.novel.labels, range(5), 5, shots, 5, 8, 0, d.fingerprint,
                                 content_keys(d.novel.images)).episodes for d in (split, novel_only)]
        for e, f in zip(*drawn, strict=True):
            for field in ("support", "support_labels", "query", "query_labels", "classes"):
                np.testing.assert_array_equal(getattr(e, field), getattr(f, field))
    board = (tmp_path / "cross" / "leaderboard.md").read_text()
    assert "- **Source → target** (cross-domain): `cifar10-5-5` (" in board
    assert "base pool of 5 classes, 150 images) → `my-target` (5 novel classes: dog, frog, horse, ship, truck; " \
           "160 images each)" in board
    assert "Queries:" not in board  # --queries given


def test_without_a_source_only_rows_that_need_no_base_pool_run(imagefolder_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    toml = _target(tmp_path / "target", imagefolder_dir / "test")
    out = tmp_path / "run"
    assert main(["run", "--all", "--dataset", str(toml), "--out", str(out), "--shots", "1", *SMOKE]) == 0
    recs = records(out)
    ran = {name for (name, _), r in recs.items() if r["status"] == "ok"}
    assert ran == {"pixels-probe", "random-probe"}
    assert all(r["accuracy"] > 0.5 for r in recs.values() if r["status"] == "ok")  # easy synthetic classes
    skipped = recs[("frozen-features", 1)]
    assert skipped["status"] == "skipped" and "needs a base pool" in skipped["reason"]
    assert "names no source" in skipped["reason"] and "--source-dataset" in skipped["reason"]
    assert recs[("torch-pretrained", 1)]["status"] == "skipped"  # no model file given
    board = (out / "leaderboard.md").read_text()
    assert "- **Source → target** (novel only): no source" in board
    assert "Queries: 15 per class (auto: min(15, smallest novel class 160 - largest shots 1))" in board
    capsys.readouterr()
    code = main(["run", "frozen-features", "--dataset", str(toml), "--out", str(tmp_path / "named"), *SMOKE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "frozen-features needs a base pool to train its source phase on" in err


def _small_target(imagefolder_dir: Path, root: Path, per_class: dict[str, int]) -> None:
    for c, n in per_class.items():
        (root / c).mkdir(parents=True)
        for p in sorted((imagefolder_dir / "test" / c).iterdir())[:n]:
            shutil.copy(p, root / c / p.name)


def test_queries_auto_is_the_default_for_toml_datasets_and_a_small_class_is_one_line(
        imagefolder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _small_target(imagefolder_dir, tmp_path / "small", dict.fromkeys(NOVEL, 8))
    toml = _target(tmp_path / "target", tmp_path / "small", 'source = "cifar10-5-5"\n')
    out = tmp_path / "run"
    assert main(["run", "pixels-probe", "--dataset", str(toml), "--data-dir", str(imagefolder_dir), "--out", str(out),
                 "--episodes", "30", *SMOKE]) == 0
    recs = records(out)
    assert {r["queries"] for r in recs.values()} == {3} and len(recs) == 2  # min(15, 8 - 5)
    board = (out / "leaderboard.md").read_text()
    assert "Queries: 3 per class (auto: min(15, smallest novel class 8 - largest shots 5))" in board
    assert "8 images each" in board and "Warning: a small pool" in board  # 5-shot: all 40 images in 30 episodes
    assert json.loads((out / "config.json").read_text())["domains"]["queries_rule"].startswith("auto")
    # --queries auto with a registered dataset, and a class below shots + 1
    _small_target(imagefolder_dir, tmp_path / "tiny", {"dog": 8, "frog": 5, "horse": 8})
    tiny = _target(tmp_path / "tiny-target", tmp_path / "tiny", 'source = "cifar10-5-5"\n', ("dog", "frog", "horse"))
    capsys.readouterr()
    code = main(["run", "pixels-probe", "--dataset", str(tiny), "--data-dir", str(imagefolder_dir), "--ways", "3",
                 "--out", str(tmp_path / "tiny-run"), *SMOKE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "class 'frog' has 5 image(s); 5-shot episodes need at least 6 per class" in err


def test_list_datasets_says_which_can_be_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "datasets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "  source           " in lines["cifar10"] and "source, target" not in lines["cifar10"]
    assert "source, target" in lines["cifar10-5-5"] and "source, target" in lines["cifar-fs"]
    assert "FILE.toml" in lines


def test_a_model_pretrained_elsewhere_runs_on_a_novel_only_dataset_without_source(imagefolder_dir: Path,
                                                                                  tmp_path: Path) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pt")
    toml = _target(tmp_path / "target", imagefolder_dir / "test")
    out = tmp_path / "run"
    assert main(["run", "torch-pretrained", "pixels-probe", "--dataset", str(toml), "--shots", "1", "--out", str(out),
                 "--set", f"torch-pretrained.source.model={tmp_path / 'resnet18.pt'}", *SMOKE]) == 0
    recs = records(out)
    assert {r["status"] for r in recs.values()} == {"ok"} and len(recs) == 2
    assert recs[("torch-pretrained", 1)]["family"] == "external"
    board = (out / "leaderboard.md").read_text()
    assert "### External pretraining (not ranked)" in board and "(novel only): no source" in board
