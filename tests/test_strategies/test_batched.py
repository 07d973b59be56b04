"""The GPU paths, checked on a CPU: adaptation batched over episodes (torch.func.vmap over stacked
parameters) gives the per-episode loop's predictions, in float64; the batched Newton probe reaches the
L-BFGS optimum (gradient below 1e-6) with every episode solved on its own."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from synthetic import MEAN, STD, index_keys

from harness.backbone import build_backbone
from harness.episodes import EpisodeSet
from strategies.logistic import lbfgs, newton
from strategies.maml import MamlMetaTraining, SgdInnerLoop
from strategies.meta_common import minibatch_schedule
from strategies.reptile import AdamInnerLoop, ReptileMetaTraining


@pytest.fixture(scope="module")
def episodes64():
    torch.manual_seed(0)
    model = build_backbone("conv4", 5, width=8).double().eval()
    labels = torch.arange(5).repeat(24).numpy()
    pool = torch.randn(120, 3, 32, 32, dtype=torch.float64)
    return model, labels, pool


@pytest.mark.parametrize("adapter, source",
                         [(SgdInnerLoop, MamlMetaTraining()), (AdamInnerLoop, ReptileMetaTraining())],
                         ids=["maml", "reptile"])
@pytest.mark.parametrize("bn_mode", ["transductive", "inductive"])
@pytest.mark.parametrize("shots", [1, 5])
def test_batched_adaptation_equals_the_loop_in_float64(adapter, source, bn_mode, shots, episodes64):
    model, labels, pool = episodes64
    tasks = EpisodeSet.draw(labels, range(5), 5, shots, 4, 5, seed=shots, data_fingerprint="",
                            content=index_keys(len(labels))).batch(pool, MEAN, STD)
    source = dataclasses.replace(source, bn_mode=bn_mode)
    looped = adapter(batched="never", steps=4).adapt(model, tasks, source)
    batched = adapter(batched="always", steps=4, episode_batch=3).adapt(model, tasks, source)
    for a, b in zip(looped, batched, strict=True):
        assert a.dtype == torch.float64 and torch.allclose(a, b, rtol=1e-9, atol=1e-10)
        assert torch.equal(a.argmax(1), b.argmax(1))


def test_auto_picks_the_loop_on_a_cpu_and_the_batch_on_cuda():
    from strategies.meta_common import use_batched

    assert not use_batched("auto", torch.device("cpu")) and use_batched("auto", torch.device("cuda"))
    assert use_batched("always", torch.device("cpu")) and not use_batched("never", torch.device("cuda"))


def test_minibatch_schedule_cycles_through_shuffled_permutations():
    schedule = minibatch_schedule(25, 5, 15, torch.Generator().manual_seed(0))
    flat = schedule.flatten().tolist()
    assert schedule.shape == (5, 15) and sorted(flat[:25]) == list(range(25))  # every sample once per epoch
    assert minibatch_schedule(5, 3, 15).shape == (3, 5)  # fewer samples than the batch: all of them


@pytest.mark.parametrize("shots", [1, 5, 20])
def test_newton_probe_reaches_the_lbfgs_optimum_and_solves_each_episode_alone(shots):
    torch.manual_seed(shots)
    batch, n, d, k = 12, 5 * shots, 64, 5
    x = F.normalize(torch.randn(batch, n, d) + 2 * torch.randn(batch, 1, d), dim=-1)
    y = torch.arange(k).repeat(shots)[None].expand(batch, -1).contiguous()
    w, b = newton(x, y, k, 10.0, 100, 1e-6)
    w2, b2 = lbfgs(x, y, k, 10.0, 1000, 1e-6)

    def objective_and_gradient(w, b):
        w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
        logits = torch.baddbmm(b.unsqueeze(1), x.double(), w.transpose(1, 2))
        loss = F.cross_entropy(logits.reshape(-1, k), y.reshape(-1), reduction="none").reshape(batch, n).mean(1)
        loss = loss + (w * w).sum((1, 2)) / (2 * 10.0 * n)
        gw, gb = torch.autograd.grad(loss.sum(), [w, b])
        return loss.detach(), torch.maximum(gw.abs().amax((1, 2)), gb.abs().amax(1))

    loss, gradient = objective_and_gradient(w, b)
    loss2, _ = objective_and_gradient(w2, b2)
    assert gradient.max() < 1e-6  # converged, every episode
    assert torch.all(loss <= loss2 + 1e-12) and torch.allclose(loss, loss2, rtol=1e-8)
    alone = newton(x[3:4], y[3:4], k, 10.0, 100, 1e-6)
    assert torch.allclose(alone[0], w[3:4], rtol=0, atol=1e-12)  # the others in the batch change nothing
