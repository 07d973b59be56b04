"""Throughput of the meta-learning strategies (pytest-benchmark; plain pytest runs each once).

Meta-training steps at 5-way, 15 queries, Conv-4, 32x32, the registered backbone run through make_forward:
MAML second order as the per-task loop (autograd.grad with create_graph, what the strategy uses) and
batched over tasks with torch.func.vmap,
first-order MAML, Reptile, ProtoNet; then evaluation episodes per second of each strategy.
``extra_info["tasks_per_call"]`` turns the timings into tasks/s. The vmap variant is also checked against
the loop's gradients (test_vmap_meta_gradient_equals_loop).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from synthetic import MEAN, STD, index_keys

from harness.augment import to_float
from harness.backbone import build_backbone
from harness.episodes import EpisodeSet
from harness.suite import get_row
from strategies.maml import batched_meta_gradients, meta_loss
from strategies.meta_common import Forward, make_forward, params_of
from strategies.protonet import prototype_logits
from strategies.reptile import reptile_step

WAYS, QUERIES, META_BATCH = 5, 15, 4


def make_tasks(shots: int, n: int = META_BATCH, seed: int = 0,
               device: torch.device | str = "cpu") -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(t.to(device) for t in (torch.randn(WAYS * shots, 3, 32, 32, generator=g),
                                         torch.arange(WAYS).repeat(shots),
                                         torch.randn(WAYS * QUERIES, 3, 32, 32, generator=g),
                                         torch.arange(WAYS).repeat(QUERIES)))
            for _ in range(n)]


def conv4(num_classes: int = WAYS, width: int | None = None) -> torch.nn.Module:
    return build_backbone("conv4", num_classes, width=width)


def vmap_meta_grads(params, tasks, steps: int, lr: float, forward: Forward, first_order: bool = False,
                    bn_mode: str = "transductive") -> dict[str, torch.Tensor]:
    """The meta-gradient as MamlMetaTraining computes it on a GPU: vmap over tasks."""
    return batched_meta_gradients(params, tasks, steps, lr, first_order, bn_mode, forward)


def loop_meta_grads(params, tasks, steps: int, lr: float, forward: Forward, first_order: bool = False,
                    bn_mode: str = "transductive") -> dict[str, torch.Tensor]:
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    for task in tasks:
        (meta_loss(leaves, [task], steps, lr, first_order, bn_mode, forward) / len(tasks)).backward()
    return {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("bn_mode", ["transductive", "inductive"])
def test_vmap_meta_gradient_equals_loop(first_order, bn_mode):
    """The GPU path of MAML meta-training (the meta-batch at once) gives the loop's meta-gradient."""
    torch.manual_seed(0)
    model = conv4(width=8).double()
    forward = make_forward(model, channels_last=False)
    params = params_of(model, requires_grad=False)
    tasks = [tuple(t.double() if t.is_floating_point() else t for t in task) for task in make_tasks(1, n=2)]
    loop = loop_meta_grads(params, tasks, 2, 0.01, forward, first_order, bn_mode)
    batched = vmap_meta_grads(params, tasks, 2, 0.01, forward, first_order, bn_mode)
    for k in params:
        assert torch.allclose(loop[k], batched[k], rtol=1e-8, atol=1e-10), k
    assert any(loop[k].abs().max() > 1e-4 for k in params)  # not trivially equal


@pytest.mark.parametrize("shots", [1, 5])
@pytest.mark.parametrize("variant", ["second-order-loop", "second-order-vmap", "first-order-loop",
                                     "first-order-vmap"])
def test_maml_meta_step(benchmark, shots, variant, device, synchronized):
    """Meta-gradients of a meta-batch; tasks/s = tasks_per_call / time."""
    torch.manual_seed(0)
    model = conv4().to(device)
    first_order = variant.startswith("first")
    vmapped = variant.endswith("vmap")
    forward = make_forward(model, channels_last=first_order and not vmapped)  # as MamlMetaTraining.train
    params = params_of(model, requires_grad=False)
    meta_batch = 32 if device.type == "cuda" else META_BATCH
    tasks = make_tasks(shots, n=meta_batch, device=device)
    if vmapped:
        def step():
            return vmap_meta_grads(params, tasks, 5, 0.01, forward, first_order)
    else:
        def step():
            return loop_meta_grads(params, tasks, 5, 0.01, forward, first_order=first_order)
    benchmark.extra_info["tasks_per_call"] = meta_batch
    grads = benchmark.pedantic(synchronized(step), rounds=2, iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_reptile_meta_step(benchmark, device, synchronized):
    torch.manual_seed(0)
    model = conv4().to(device)
    forward, params = make_forward(model), params_of(model, requires_grad=False)
    tasks = [(t[2], t[3]) for t in make_tasks(1, n=5, device=device)]  # 75 images (15 per class) per task
    benchmark.extra_info["tasks_per_call"] = 5
    out = benchmark.pedantic(synchronized(lambda: reptile_step(params, tasks, 8, 1e-3, 10, 1.0, forward)), rounds=2,
                             iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("shots", [1, 5])
def test_protonet_train_step(benchmark, shots, device, synchronized):
    torch.manual_seed(0)
    model = conv4(0).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys, xq, yq = make_tasks(shots, n=1, device=device)[0]

    def step():
        feats = model(torch.cat([xs, xq]))
        loss = F.cross_entropy(prototype_logits(feats[:len(xs)], ys, feats[len(xs):], WAYS), yq)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    benchmark.extra_info["tasks_per_call"] = 1
    assert torch.isfinite(benchmark.pedantic(synchronized(step), rounds=3, iterations=1, warmup_rounds=1))


@pytest.mark.parametrize("shots", [1, 5])
@pytest.mark.parametrize("name", ["frozen-features", "partial-finetune", "maml", "fomaml", "reptile", "protonet"])
def test_evaluation_episodes(benchmark, name, shots, device, episodes, synchronized):
    """Episode phases, batched as on a run of this device; ms/episode = time / tasks_per_call."""
    strategy = get_row(name).build()
    torch.manual_seed(0)
    model = conv4(WAYS if type(strategy.source).uses_ways else 0).to(device).eval()
    labels = torch.arange(WAYS).repeat(200).numpy()
    pool = to_float(torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8, device=device), MEAN, STD)
    tasks = EpisodeSet.draw(labels, range(WAYS), WAYS, shots, QUERIES, episodes, seed=0, data_fingerprint="",
                            content=index_keys(len(labels))).batch(pool, MEAN, STD)
    strategy.run_episodes(model, tasks[0:1])  # warm-up
    benchmark.extra_info["tasks_per_call"] = episodes
    logits = benchmark.pedantic(synchronized(lambda: strategy.run_episodes(model, tasks)), rounds=1, iterations=1)
    assert len(logits) == episodes
    assert all(lg.shape == (WAYS * QUERIES, WAYS) and torch.isfinite(lg).all() for lg in logits)
