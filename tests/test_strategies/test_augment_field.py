"""No free confounds: every training pretrainer (generated from the registry) has the same ``augment`` field,
"crop+flip" by default, rejects other values with a one-line UsageError, records it in its params and the row's
settings, and applies it in its training loop (the meta-learners augment their base tasks too)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from harness.errors import UsageError
from harness.flops import synthetic_source
from harness.registry import PRETRAINERS, STRATEGIES
from harness.suite import get_row


def _available(name: str) -> bool:
    return PRETRAINERS.get(name).available()


TRAINING = [n for n in PRETRAINERS.names() if _available(n) and PRETRAINERS.load(n).trains]


def test_every_training_pretrainer_is_covered():
    assert {"supervised", "rotation", "simclr", "adversarial", "maml", "reptile", "protonet"} <= set(TRAINING)


@pytest.mark.parametrize("name", TRAINING)
def test_augment_field_defaults_to_crop_flip_and_is_recorded(name):
    cls = PRETRAINERS.load(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert "augment" in fields, name
    assert fields["augment"].default == "crop+flip" and fields["augment"].type in ("str", str)
    phase = cls()
    phase.check()
    assert phase.params()["augment"] == "crop+flip"
    none = cls(augment="none")
    none.check()
    assert none.params()["augment"] == "none"


@pytest.mark.parametrize("name", TRAINING)
@pytest.mark.parametrize("bad", ["flip", "crop", "", "Crop+Flip"])
def test_bad_augment_value_is_a_one_line_usage_error(name, bad):
    with pytest.raises(UsageError) as e:
        PRETRAINERS.load(name)(augment=bad).check()
    message = str(e.value)
    assert "\n" not in message and "augment" in message and repr(bad) in message


def test_augment_is_in_every_training_row_settings():
    for row_name in STRATEGIES.names():
        row = get_row(row_name)
        if row.source in TRAINING:
            assert row.build().settings()["source augment"] == "crop+flip", row_name


@pytest.mark.parametrize("name,params", [("protonet", {}), ("reptile", {"meta_batch": 1, "inner_steps": 1}),
                                         ("maml", {"first_order": True, "meta_batch": 1, "inner_steps": 1})])
def test_meta_learners_augment_their_base_tasks(name, params):
    from strategies import meta_common

    data = synthetic_source()
    # the stream itself: "none" gives the normalised images, "crop+flip" differs from them, deterministically
    plain = next(meta_common.episode_stream(data, 1, 15))
    again = next(meta_common.episode_stream(data, 1, 15, augment="none"))
    augmented = next(meta_common.episode_stream(data, 1, 15, augment="crop+flip"))
    augmented2 = next(meta_common.episode_stream(data, 1, 15, augment="crop+flip"))
    assert torch.equal(plain[0], again[0]) and torch.equal(plain[1], augmented[1])
    assert not torch.equal(plain[0], augmented[0]) and not torch.equal(plain[2], augmented[2])
    assert torch.equal(augmented[0], augmented2[0])
    # and the phase hands its augment value to the stream
    calls = []
    real = meta_common.episode_stream

    def spy(*args, **kwargs):
        calls.append(kwargs.get("augment", "none"))
        return real(*args, **kwargs)

    module = sys.modules[PRETRAINERS.load(name).__module__]
    old = module.episode_stream
    module.episode_stream = spy
    try:
        for augment in ("crop+flip", "none"):
            PRETRAINERS.load(name)(augment=augment, **params).train(data, 1)
    finally:
        module.episode_stream = old
    assert calls == ["crop+flip", "none"]


@pytest.mark.parametrize("name", ["supervised", "rotation", "adversarial"])
def test_sgd_pretrainers_apply_the_field(name):
    from harness.augment import crop_flip

    phase = PRETRAINERS.load(name)(augment="none")
    data = synthetic_source()
    x = data.to_float(data.images[:8])
    assert torch.equal(crop_flip(x, "none"), x)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(crop_flip(x, "crop+flip", g), x)
    # the loss differs between augment values for the same model, batch and generator
    torch.manual_seed(0)
    model = phase.training_model(data)
    losses = []
    for augment in ("none", "crop+flip"):
        torch.manual_seed(1)
        p = dataclasses.replace(phase, augment=augment)
        losses.append(float(p.loss(model, data.images[:16], data.labels[:16], torch.Generator().manual_seed(2),
                                   data).detach()))
    assert losses[0] != losses[1]
