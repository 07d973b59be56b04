"""SimCLR: NT-Xent against an independent reference; the phase never sees labels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from synthetic import train_on_small_pool

from strategies.backbones.conv4 import Conv4
from strategies.simclr import SimclrPretraining, nt_xent


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Chen et al. 2020, eq. (1), averaged over all 2N anchors, written out with loops."""
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n, total = len(z1), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / denominator)
    return total / (2 * n)


def test_nt_xent_matches_reference():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    for t in (0.1, 0.5, 1.0):
        assert math.isclose(float(nt_xent(z1, z2, t)), reference_nt_xent(z1, z2, t), rel_tol=1e-4)


def test_identical_views_make_the_positive_the_most_similar():
    z = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    loss = nt_xent(z, z, 0.1)
    assert loss < nt_xent(z, z.roll(1, 0), 0.1)  # any other pairing scores worse
    sim = F.normalize(torch.cat([z, z]), dim=1) @ F.normalize(torch.cat([z, z]), dim=1).T
    sim.fill_diagonal_(-2)
    assert torch.equal(sim.argmax(1), torch.cat([torch.arange(64, 128), torch.arange(64)]))


def _train(labels):
    return train_on_small_pool(SimclrPretraining(batch_size=16), labels)


def test_source_phase_cannot_see_labels_and_drops_the_projection_head():
    assert SimclrPretraining.uses_labels is False
    blind = _train(None)
    poisoned = _train(torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(1)))
    for (name, a), b in zip(blind.state_dict().items(), poisoned.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert isinstance(blind, Conv4) and blind.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 256)
