"""Compute recorded for every row: FLOPs counted with FlopCounterMode (checked against a hand count of
Conv-4), budgets per group and scale, and --match-compute landing every phase on the same FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.backbone import build_backbone
from harness.cli import main
from harness.flops import counted


def conv_flops(cin: int, cout: int, side: int) -> int:
    """A 3x3 'same' convolution over side x side: 2 FLOPs (multiply, add) per weight per output pixel."""
    return 2 * cin * cout * 9 * side * side


def test_conv4_forward_backward_flops_equal_a_hand_count():
    model = build_backbone("conv4", num_classes=5)
    x = torch.randn(128, 3, 32, 32)
    _, flops = counted(lambda: model(x).sum().backward())
    convs = [conv_flops(3, 64, 32), conv_flops(64, 64, 16), conv_flops(64, 64, 8), conv_flops(64, 64, 4)]
    head = 2 * 256 * 5
    forward = sum(convs) + head
    # backward: weight gradients of every layer, input gradients of all but the first (the images need none)
    backward = sum(convs) + (sum(convs) - convs[0]) + 2 * head
    assert flops == 128 * (forward + backward)
    assert forward == 28_311_552 + 2_560


def records(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "records").glob("*.json"))]


@pytest.mark.slow
def test_match_compute_lands_every_phase_within_5_percent(imagefolder_dir, tmp_path):
    # every kind of source phase (keras-supervised counts its PyTorch twin's FLOPs, test_keras_twins.py); one-task
    # meta-batches and 32-image PGD batches make the steps small enough to land within 5% of 3,000 images
    names = ["frozen-features", "ssl-rotation", "ssl-simclr", "adversarial-probe", "fomaml", "protonet", "reptile"]
    out = tmp_path / "run"
    assert main(["run", *names, "--preset", "smoke", "--match-compute", "--budget", "pretrain=3000", "--shots", "1",
                 "--set", "fomaml.source.meta_batch=1", "--set", "reptile.source.meta_batch=1",
                 "--set", "adversarial-probe.source.batch_size=32",
                 "--episodes", "2", "--data-dir", str(imagefolder_dir), "--out", str(out), "--quiet"]) == 0
    recs = records(out)
    target = recs[0]["matched_flops"]
    assert target and len(recs) == len(names)
    for r in recs:
        assert r["matched_flops"] == target and r["source_flops"] and r["episode_flops"] is not None
        assert abs(r["source_flops"] / target - 1) < 0.05, (r["strategy"], r["source_flops"] / target)
    header = json.loads((out / "config.json").read_text())
    assert header["matched_flops"] == pytest.approx(target)


@pytest.mark.slow
def test_budget_overrides_and_scales_are_recorded(imagefolder_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "frozen-features", "protonet", "--preset", "smoke", "--budget", "meta=640",
                 "--budget-scale", "0.5,1", "--shots", "1", "--episodes", "2", "--data-dir", str(imagefolder_dir),
                 "--out", str(out), "--quiet"]) == 0
    recs = {(r["strategy"], r["budget_scale"]): r for r in records(out)}
    assert set(recs) == {(n, s) for n in ("frozen-features", "protonet") for s in (0.5, 1.0)}
    assert recs[("frozen-features", 0.5)]["source_budget_images"] == 512  # 1,024 x 0.5
    assert recs[("protonet", 1.0)]["source_budget_images"] == 640 and recs[("protonet", 0.5)]["budget_group"] == "meta"
    for r in recs.values():  # every record carries its compute
        per_image = r["source_flops"] / r["source_images_processed"]
        assert 5e7 < per_image < 2e8 and r["episode_flops"] > 0 and "FlopCounterMode" in r["source_flops_method"]
    # one episode's FLOPs: the probe embeds that episode's 5 x (1 + 15) images (28.3 MFLOP each, the hand count
    # above) and fits a small logistic regression, not every image of the batch of episodes
    embed = 5 * (1 + 15) * 28_311_552
    assert embed < recs[("frozen-features", 1.0)]["episode_flops"] < 1.2 * embed
    assert (out / "records" / "protonet-1shot-x0.5.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["budget_scales"] == [0.5, 1.0] and config["run"]["budget"] == ["meta=640"]
