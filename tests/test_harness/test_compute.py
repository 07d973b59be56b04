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


# --- one cost unit: every preset's budgets are FLOP budgets in supervised-image equivalents -----------------


def _strategy(phase):
    from harness.phases import Strategy
    from strategies.probe import LinearProbe

    return Strategy(phase.phase_name, phase, LinearProbe())


def _fake_probe(table):
    """A probe answering (FLOPs per image, method, images per step) from ``table`` by phase class name."""
    calls = []

    def probe(phase):
        calls.append(phase.phase_name)
        per_image, step = table[phase.phase_name]
        return per_image, "fake", step

    probe.calls = calls
    return probe


def test_every_group_budget_is_a_flop_budget_rounded_to_whole_steps():
    from harness.budgets import Budgets
    from strategies.adversarial import AdversarialPretraining
    from strategies.maml import MamlMetaTraining
    from strategies.supervised import SupervisedPretraining

    # a supervised image costs 100 FLOPs; a MAML image 296 (second order), a PGD-3 image 70
    probe = _fake_probe({"SupervisedPretraining": (100.0, 128), "MamlMetaTraining": (296.0, 500),
                         "AdversarialPretraining": (70.0, 512)})
    groups = {"pretrain": 100_000, "meta": 20_000, "ssl": 40_000, "adversarial": 40_000}
    budgets = Budgets(groups, [1.0], False, probe)
    for phase, group in ((SupervisedPretraining(), "pretrain"), (MamlMetaTraining(), "meta"),
                         (AdversarialPretraining(), "adversarial")):
        b = budgets(_strategy(phase), 1.0)
        per_image = b.flops_per_image[0]
        step = {"SupervisedPretraining": 128, "MamlMetaTraining": 500, "AdversarialPretraining": 512}[phase.phase_name]
        assert b.matched_flops == groups[group] * 100.0  # the group's budget in supervised-image equivalents
        assert b.images % step == 0  # whole training steps...
        assert abs(b.images * per_image - b.matched_flops) <= step * per_image / 2  # ...the nearest number of them
        assert abs(b.images * per_image / b.matched_flops - 1) < 0.05, phase.phase_name
    # a second-order MAML image costs ~3x a supervised one: fewer images than the group's number
    assert budgets(_strategy(MamlMetaTraining()), 1.0).images == 7_000  # 20,000 x 100 / 296 = 6,757 -> 14 steps
    assert budgets(_strategy(AdversarialPretraining()), 1.0).images == 57_344  # 40,000 x 100 / 70 -> 112 steps
    assert budgets(_strategy(SupervisedPretraining()), 0.5).images == 50_048  # scaled: 390.6 -> 391 steps of 128


def test_match_compute_gives_every_group_the_pretrain_groups_flops():
    from harness.budgets import Budgets
    from strategies.maml import MamlMetaTraining

    probe = _fake_probe({"SupervisedPretraining": (100.0, 128), "MamlMetaTraining": (296.0, 500)})
    groups = {"pretrain": 40_000, "meta": 20_000, "ssl": 1, "adversarial": 1}
    b = Budgets(groups, [1.0], True, probe)(_strategy(MamlMetaTraining()), 1.0)
    assert b.matched_flops == 40_000 * 100.0 and b.images == 13_500  # 4,000,000 / 296 = 13,514 -> 27 steps


def test_a_phase_that_trains_nothing_keeps_its_image_count():
    from harness.budgets import Budgets
    from strategies.torch_pretrained import TorchPretrained

    probe = _fake_probe({})
    b = Budgets({"pretrain": 1_000, "meta": 1, "ssl": 1, "adversarial": 1}, [1.0], False, probe)(
        _strategy(TorchPretrained()), 1.0)
    assert b.images == 1_000 and b.matched_flops is None and probe.calls == []


@pytest.mark.slow  # counts one training step of every phase (5-shot second-order MAML: seconds on a CPU)
@pytest.mark.parametrize("shots", [1, 5])
def test_quick_preset_lands_every_phase_within_5_percent_of_its_groups_flop_budget(shots):
    """Every registered pretrainer (and row variant: fomaml), measured for real on the default protocol's shapes:
    the images the quick preset gives it buy its group's FLOP budget within 5%."""
    from harness.budgets import Budgets
    from harness.flops import flops_per_step, pretrainer_variants, synthetic_source
    from harness.presets import PRESETS
    from harness.registry import PRETRAINERS
    from harness.units import for_shots

    data = synthetic_source()
    measured = {}

    def probe(phase):
        key = (phase.phase_name, repr(phase.params()))
        if key not in measured:
            measured[key] = flops_per_step(phase, data)
        return measured[key]

    for preset in ("quick", "quick-matched"):
        p = PRESETS[preset]
        budgets = Budgets(dict(p.source_images), [1.0], p.match_compute, probe)
        for name, params in pretrainer_variants():
            if not PRETRAINERS.get(name).available() or not PRETRAINERS.load(name).trains:
                continue
            phase = for_shots(_strategy(PRETRAINERS.load(name)(**params)), shots).source
            b = budgets(_strategy(phase), 1.0)
            per_image, _, step = probe(phase)
            group = "pretrain" if p.match_compute else type(phase).budget_group
            assert b.matched_flops == pytest.approx(p.source_images[group] * budgets.supervised_image_flops())
            assert b.images % step == 0
            assert abs(b.images * per_image / b.matched_flops - 1) < 0.05, (preset, name, params)


@pytest.mark.slow
def test_every_phase_lands_within_5_percent_of_its_groups_flop_budget(imagefolder_dir, tmp_path):
    # without --match-compute: each group its own FLOP budget (small budgets; one-task meta-batches and 32-image
    # PGD batches make the steps small enough to land within 5%)
    names = ["frozen-features", "ssl-rotation", "ssl-simclr", "adversarial-probe", "maml", "fomaml", "protonet",
             "reptile"]
    budgets = {"pretrain": 4000, "meta": 2000, "ssl": 3000, "adversarial": 3000}
    out = tmp_path / "run"
    assert main(["run", *names, "--preset", "smoke", *[a for g, n in budgets.items() for a in ("--budget", f"{g}={n}")],
                 "--shots", "1", "--set", "maml.source.meta_batch=1", "--set", "maml.source.inner_steps=2",
                 "--set", "fomaml.source.meta_batch=1", "--set", "reptile.source.meta_batch=1",
                 "--set", "adversarial-probe.source.batch_size=32",
                 "--episodes", "2", "--data-dir", str(imagefolder_dir), "--out", str(out), "--quiet"]) == 0
    recs = {r["strategy"]: r for r in records(out)}
    assert set(recs) == set(names)
    image_flops = recs["frozen-features"]["matched_flops"] / budgets["pretrain"]
    for name, r in recs.items():
        assert r["status"] == "ok", (name, r.get("reason"))
        assert r["matched_flops"] == pytest.approx(budgets[r["budget_group"]] * image_flops), name
        assert abs(r["source_flops"] / r["matched_flops"] - 1) < 0.05, (name, r["source_flops"] / r["matched_flops"])
    # a second-order MAML image costs more than a supervised one: fewer images for its FLOPs
    assert recs["maml"]["source_images_processed"] < budgets["meta"] <= recs["fomaml"]["source_images_processed"] * 1.05
    header = json.loads((out / "config.json").read_text())
    assert header["matched_flops"] is None and header["preset_budgets"]["meta"] == 1_024


def test_a_changed_budget_or_augment_changes_the_source_cache_key():
    import dataclasses
    from types import SimpleNamespace

    from protocols import protocol

    from harness.resolve import source_key
    from strategies.maml import MamlMetaTraining

    phase, data = MamlMetaTraining(), SimpleNamespace(fingerprint="fp")

    def key(p, images):
        return source_key(p, 0, data, protocol(), images)

    key(phase, 20_000)  # the first call imports what the code hash covers
    assert key(phase, 20_000) == key(MamlMetaTraining(), 20_000)
    assert key(phase, 20_000) != key(phase, 17_000)  # a FLOP budget that buys other images: another model
    assert key(phase, 20_000) != key(dataclasses.replace(phase, augment="none"), 20_000)
