"""Reptile: the outer update is theta + epsilon * (mean adapted - theta), checked on a fixed seed."""

from __future__ import annotations

import torch

from strategies.backbones import Conv4
from strategies.meta_common import adam_adapt, params_of
from strategies.reptile import Reptile, reptile_step


def test_outer_update_moves_toward_the_adapted_weights():
    torch.manual_seed(0)
    params = params_of(Conv4(5, width=4), requires_grad=False)
    tasks = [(torch.randn(10, 3, 32, 32), torch.arange(5).repeat(2)) for _ in range(2)]
    epsilon = 0.3
    updated = reptile_step(params, tasks, 3, 1e-2, 4, epsilon, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same mini-batch order, adapted independently here
    adapted = [adam_adapt(params, x, y, 3, 1e-2, 4, generator=g) for x, y in tasks]
    for k, theta in params.items():
        mean = (adapted[0][k] + adapted[1][k]) / 2
        assert torch.allclose(updated[k], theta + epsilon * (mean - theta), atol=1e-6), k
    assert any(not torch.allclose(updated[k], params[k]) for k in params)  # it moved


def test_adam_beta1_zero_first_step_is_sign_like():
    """Adam's first step is lr * g / (|g| + eps) whatever beta1: every weight moves by about lr."""
    torch.manual_seed(0)
    params = params_of(Conv4(5, width=4), requires_grad=False)
    x, y = torch.randn(5, 3, 32, 32), torch.arange(5)
    adapted = adam_adapt(params, x, y, 1, 1e-3, 5)
    step = (adapted["head.weight"] - params["head.weight"]).abs()
    assert torch.allclose(step[step > 1e-6], torch.full_like(step[step > 1e-6], 1e-3), rtol=1e-2)


def test_protocol_settings():
    s = Reptile().protocol_settings()
    assert s["bn_mode"] == "transductive" and s["inner_steps_train"] == 8 and s["inner_steps_eval"] == 50
