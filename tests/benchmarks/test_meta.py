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
from torch.func import grad, vmap

from harness.augment import to_float
from harness.backbone import build_backbone
from harness.episodes import EpisodeSet
from harness.suite import get_row
from strategies.maml import meta_loss
from strategies.meta_common import Forward, make_forward, params_of
from strategies.protonet import prototype_logits
from strategies.reptile import reptile_step

WAYS, QUERIES, META_BATCH = 5, 15, 4


def make_tasks(shots: int, n: int = META_BATCH, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(WAYS * shots, 3, 32, 32, generator=g), torch.arange(WAYS).repeat(shots),
             torch.randn(WAYS * QUERIES, 3, 32, 32, generator=g), torch.arange(WAYS).repeat(QUERIES))
            for _ in range(n)]


def conv4(num_classes: int = WAYS, width: int | None = None) -> torch.nn.Module:
    return build_backbone("conv4", num_classes, width=width)


def vmap_meta_grads(params, tasks, steps: int, lr: float, forward: Forward) -> dict[str, torch.Tensor]:
    """Second-order MAML meta-gradient with torch.func: vmap over tasks of grad through the inner loop."""

    def task_loss(p, xs, ys, xq, yq):
        for _ in range(steps):
            g = grad(lambda q: F.cross_entropy(forward(q, xs), ys))(p)
            p = {k: p[k] - lr * g[k] for k in p}
        return F.cross_entropy(forward(p, xq), yq)

    stacked = [torch.stack(t) for t in zip(*tasks, strict=True)]
    per_task = vmap(grad(task_loss), in_dims=(None, 0, 0, 0, 0))(params, *stacked)
    return {k: v.mean(0) for k, v in per_task.items()}


def loop_meta_grads(params, tasks, steps: int, lr: float, forward: Forward,
                    first_order: bool = False) -> dict[str, torch.Tensor]:
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    for task in tasks:
        (meta_loss(leaves, [task], steps, lr, first_order, "transductive", forward) / len(tasks)).backward()
    return {k: v.grad for k, v in leaves.items()}


def test_vmap_meta_gradient_equals_loop():
    torch.manual_seed(0)
    model = conv4(width=8)
    forward = make_forward(model, channels_last=False)
    params = params_of(model, requires_grad=False)
    tasks = make_tasks(1, n=2)
    loop, batched = loop_meta_grads(params, tasks, 2, 0.01, forward), vmap_meta_grads(params, tasks, 2, 0.01, forward)
    for k in params:
        assert torch.allclose(loop[k], batched[k], rtol=1e-3, atol=1e-5), k
    assert any(loop[k].abs().max() > 1e-4 for k in params)  # not trivially equal


@pytest.mark.parametrize("shots", [1, 5])
@pytest.mark.parametrize("variant", ["second-order-loop", "second-order-vmap", "first-order-loop"])
def test_maml_meta_step(benchmark, shots, variant):
    torch.manual_seed(0)
    model = conv4()
    first_order = variant.startswith("first")
    forward = make_forward(model, channels_last=first_order)  # as MamlMetaTraining.train
    params = params_of(model, requires_grad=False)
    tasks = make_tasks(shots)
    if variant == "second-order-vmap":
        def step():
            return vmap_meta_grads(params, tasks, 5, 0.01, forward)
    else:
        def step():
            return loop_meta_grads(params, tasks, 5, 0.01, forward, first_order=first_order)
    benchmark.extra_info["tasks_per_call"] = META_BATCH
    grads = benchmark.pedantic(step, rounds=2, iterations=1)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_reptile_meta_step(benchmark):
    torch.manual_seed(0)
    model = conv4()
    forward, params = make_forward(model), params_of(model, requires_grad=False)
    tasks = [(t[2], t[3]) for t in make_tasks(1, n=5)]  # 75 images (15 per class) per task
    benchmark.extra_info["tasks_per_call"] = 5
    out = benchmark.pedantic(lambda: reptile_step(params, tasks, 8, 1e-3, 10, 1.0, forward), rounds=2, iterations=1)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("shots", [1, 5])
def test_protonet_train_step(benchmark, shots):
    torch.manual_seed(0)
    model = conv4(0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys, xq, yq = make_tasks(shots, n=1)[0]

    def step():
        feats = model(torch.cat([xs, xq]))
        loss = F.cross_entropy(prototype_logits(feats[:len(xs)], ys, feats[len(xs):], WAYS), yq)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    benchmark.extra_info["tasks_per_call"] = 1
    assert torch.isfinite(benchmark.pedantic(step, rounds=3, iterations=1))


@pytest.mark.parametrize("shots", [1, 5])
@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile", "protonet"])
def test_evaluation_episodes(benchmark, name, shots):
    strategy = get_row(name).build()
    torch.manual_seed(0)
    model = conv4(WAYS if type(strategy.source).uses_ways else 0).eval()
    labels = torch.arange(WAYS).repeat(40).numpy()
    pool = to_float(torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8))
    episodes = 4
    tasks = EpisodeSet.draw(labels, range(WAYS), WAYS, shots, QUERIES, episodes, seed=0).batch(pool)
    benchmark.extra_info["tasks_per_call"] = episodes
    logits = benchmark.pedantic(lambda: strategy.run_episodes(model, tasks), rounds=1, iterations=1)
    assert len(logits) == episodes
    assert all(lg.shape == (WAYS * QUERIES, WAYS) and torch.isfinite(lg).all() for lg in logits)
