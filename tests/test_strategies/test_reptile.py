"""Reptile: the outer update is theta + epsilon * (mean adapted - theta), checked on a fixed seed; Adam's
first step; the inner loop runs the registered backbone through make_forward."""

from __future__ import annotations

import pytest
import torch

from harness.backbone import build_backbone
from harness.suite import get_row
from strategies.meta_common import adam_adapt, make_forward, params_of
from strategies.reptile import AdamInnerLoop, ReptileMetaTraining, reptile_step


@pytest.mark.parametrize("backbone", ["conv4", "resnet12"])
def test_outer_update_moves_toward_the_adapted_weights(backbone):
    torch.manual_seed(0)
    model = build_backbone(backbone, 5, width=4, image_size=16)
    forward = make_forward(model)
    params = params_of(model, requires_grad=False)
    tasks = [(torch.randn(10, 3, 16, 16), torch.arange(5).repeat(2)) for _ in range(2)]
    epsilon = 0.3
    updated = reptile_step(params, tasks, 3, 1e-2, 4, epsilon, forward, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same mini-batch order, adapted independently here
    adapted = [adam_adapt(params, x, y, 3, 1e-2, 4, forward, generator=g) for x, y in tasks]
    assert updated.keys() == params.keys() == dict(model.named_parameters()).keys()
    for k, theta in params.items():
        mean = (adapted[0][k] + adapted[1][k]) / 2
        assert torch.allclose(updated[k], theta + epsilon * (mean - theta), atol=1e-6), k
    assert any(not torch.allclose(updated[k], params[k]) for k in params)  # it moved
    assert all(torch.equal(p, params[k]) for k, p in model.named_parameters())  # the model did not


def test_adam_beta1_zero_first_step_is_sign_like():
    """Adam's first step is lr * g / (|g| + eps) whatever beta1: every weight moves by about lr."""
    torch.manual_seed(0)
    model = build_backbone("conv4", 5, width=4)
    params = params_of(model, requires_grad=False)
    x, y = torch.randn(5, 3, 32, 32), torch.arange(5)
    adapted = adam_adapt(params, x, y, 1, 1e-3, 5, make_forward(model))
    step = (adapted["head.weight"] - params["head.weight"]).abs()
    assert torch.allclose(step[step > 1e-6], torch.full_like(step[step > 1e-6], 1e-3), rtol=1e-2)


def test_settings():
    strategy = get_row("reptile").build()
    assert isinstance(strategy.source, ReptileMetaTraining) and isinstance(strategy.adapter, AdamInnerLoop)
    s = strategy.settings()
    assert s["bn_mode"] == "transductive" and s["inner_steps_train"] == 8 and s["inner_steps_eval"] == 50
    # one model serves both shot settings (15-shot training tasks), but its head has the evaluation's ways
    assert not ReptileMetaTraining.per_shots and ReptileMetaTraining.uses_ways
