"""MAML / first-order MAML: meta-gradients against finite differences (a hand-written smooth net, and the
registered Conv-4 and ResNet-12 through make_forward) and a hand-written closed form, and a learning
check on synthetic few-shot tasks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import MEAN, SOURCE_PROTOCOL, STD, index_keys, make_images
from torch import nn

from harness.augment import to_float
from harness.backbone import build_backbone
from harness.episodes import EpisodeSet
from harness.phases import SourceData, Strategy
from harness.suite import get_row
from strategies.maml import MamlMetaTraining, SgdInnerLoop, meta_loss
from strategies.meta_common import batch_norm, make_forward, params_of


def tiny_tasks(n_tasks: int = 2, ways: int = 3, shots: int = 2, queries: int = 3, seed: int = 0, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(n_tasks):
        xs = torch.randn(ways * shots, 3, size, size, generator=g, dtype=torch.float64)
        xq = torch.randn(ways * queries, 3, size, size, generator=g, dtype=torch.float64)
        tasks.append((xs, torch.arange(ways).repeat(shots), xq, torch.arange(ways).repeat(queries)))
    return tasks


def smooth_conv_net(params, x, stats_from=None):
    """A two-block conv net with the production BatchNorm (both modes) but softplus and average pooling:
    with ReLU and max pooling the inner-loop gradients jump at kinks, so the post-adaptation loss is not
    smooth and finite differences of a tiny network are dominated by those jumps."""
    for i in range(2):
        x = F.conv2d(x, params[f"conv{i}.weight"], params[f"conv{i}.bias"], padding=1)
        if f"bn{i}.weight" in params:
            x = batch_norm(x, params[f"bn{i}.weight"], params[f"bn{i}.bias"], stats_from)
        x = F.avg_pool2d(F.softplus(x), 2)
    return F.linear(x.flatten(1), params["head.weight"], params["head.bias"])


@pytest.mark.parametrize("variant", ["batchnorm-transductive", "batchnorm-inductive", "no-batchnorm"])
def test_second_order_meta_gradient_matches_finite_differences(variant):
    g = torch.Generator().manual_seed(0)
    shapes = {"conv0.weight": (2, 3, 3, 3), "conv0.bias": (2,), "bn0.weight": (2,), "bn0.bias": (2,),
              "conv1.weight": (2, 2, 3, 3), "conv1.bias": (2,), "bn1.weight": (2,), "bn1.bias": (2,),
              "head.weight": (3, 8), "head.bias": (3,)}
    params = {k: torch.randn(s, generator=g, dtype=torch.float64) * 0.5 for k, s in shapes.items()}
    if variant == "no-batchnorm":
        params = {k: v for k, v in params.items() if not k.startswith("bn")}
    bn_mode = "inductive" if variant.endswith("inductive") else "transductive"
    tasks = tiny_tasks(size=8)

    def loss_at(p, first_order=False):
        return meta_loss(p, tasks, inner_steps=2, inner_lr=0.1, first_order=first_order, bn_mode=bn_mode,
                         forward=smooth_conv_net)

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    analytic = torch.cat([x.flatten() for x in torch.autograd.grad(loss_at(leaves), list(leaves.values()))])
    flat = torch.cat([v.flatten() for v in params.values()])

    def loss_value(vec):  # the inner loop differentiates, so the perturbed weights need grad
        out, i = {}, 0
        for k, v in params.items():
            out[k] = vec[i:i + v.numel()].view(v.shape).clone().requires_grad_()
            i += v.numel()
        return loss_at(out).item()

    h, numeric = 1e-5, torch.empty_like(flat)
    for i in range(len(flat)):
        e = torch.zeros_like(flat)
        e[i] = h
        numeric[i] = (loss_value(flat + e) - loss_value(flat - e)) / (2 * h)
    rel = (analytic - numeric).norm() / numeric.norm()
    assert rel < 1e-5, f"relative error {rel:.2e}"
    # the first-order gradient is measurably different, so the comparison can fail
    first = torch.cat([x.flatten() for x in torch.autograd.grad(loss_at(leaves, True), list(leaves.values()))])
    assert (first - analytic).norm() / analytic.norm() > 1e-3


def linear(params, x):
    return x @ params["w"].T


def test_one_step_meta_gradients_match_closed_form_for_a_linear_model():
    g = torch.Generator().manual_seed(1)
    ways, dim, alpha = 3, 4, 0.5
    w = torch.randn(ways, dim, generator=g, dtype=torch.float64)
    xs = torch.randn(6, dim, generator=g, dtype=torch.float64)
    xq = torch.randn(9, dim, generator=g, dtype=torch.float64)
    ys, yq = torch.arange(ways).repeat(2), torch.arange(ways).repeat(3)
    task = [(xs, ys, xq, yq)]

    # by hand: mean cross-entropy gradient of a linear model is (P - Y)^T X / n
    def ce_grad(weights, x, y):
        return (torch.softmax(x @ weights.T, 1) - F.one_hot(y, ways).double()).T @ x / len(x)

    adapted = w - alpha * ce_grad(w, xs, ys)
    g_query = ce_grad(adapted, xq, yq)
    # Hessian of the support loss applied to g_query: (1/n) sum_i (diag(p_i) - p_i p_i^T) (G x_i) x_i^T
    p = torch.softmax(xs @ w.T, 1)
    hvp = torch.zeros_like(w)
    for pi, xi in zip(p, xs, strict=True):
        hvp += torch.outer((torch.diag(pi) - torch.outer(pi, pi)) @ (g_query @ xi), xi) / len(xs)
    second_order = g_query - alpha * hvp

    for first_order, expected in ((False, second_order), (True, g_query)):
        leaf = {"w": w.clone().requires_grad_()}
        loss = meta_loss(leaf, task, 1, alpha, first_order, "transductive", forward=linear)
        (grad,) = torch.autograd.grad(loss, [leaf["w"]])
        assert torch.allclose(grad, expected, rtol=1e-10, atol=1e-12), first_order
    assert not torch.allclose(second_order, g_query, atol=1e-6)  # the test can tell the two apart


def smooth(module: nn.Module) -> nn.Module:
    """Swap a backbone's non-smooth modules for smooth ones in place (ReLU / leaky ReLU -> softplus, max
    pooling -> average pooling), keeping its convolutions, BatchNorm layers, shortcuts and parameter names."""
    for name, child in module.named_children():
        if isinstance(child, (nn.ReLU, nn.LeakyReLU)):
            setattr(module, name, nn.Softplus())
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size))
        else:
            smooth(child)
    return module


@pytest.mark.parametrize("bn_mode", ["transductive", "inductive"])
@pytest.mark.parametrize("backbone", ["conv4", pytest.param("resnet12", marks=pytest.mark.slow)])
def test_meta_gradient_through_registered_backbones_matches_finite_differences(backbone, bn_mode):
    """Second-order meta-gradients of the production path (make_forward: functional_call on a copy of the
    registered module, episodic BatchNorm, ResNet-12's 1x1 shortcuts) against central differences along
    a random direction in each parameter tensor and in all of them at once."""
    torch.manual_seed(0)
    model = smooth(build_backbone(backbone, num_classes=3, width=2, image_size=16)).double()
    assert not any(isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d)) for m in model.modules())
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert norms == (4 if backbone == "conv4" else 16)  # ResNet-12: 3 per stage + the shortcut's
    forward = make_forward(model, channels_last=False)
    g = torch.Generator().manual_seed(1)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype)  # off BatchNorm's (1, 0) init
              for k, v in params_of(model, requires_grad=False).items()}
    tasks = tiny_tasks(size=16)

    def loss_at(p, first_order=False):
        return meta_loss(p, tasks, inner_steps=2, inner_lr=0.1, first_order=first_order, bn_mode=bn_mode,
                         forward=forward)

    def gradient(first_order=False):
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        return dict(zip(leaves, torch.autograd.grad(loss_at(leaves, first_order), list(leaves.values())),
                        strict=True))

    directions = []
    for k, v in params.items():  # one direction per tensor: every conv, BatchNorm, shortcut and the head
        d = {j: torch.zeros_like(w) for j, w in params.items()}
        d[k] = torch.randn(v.shape, generator=g, dtype=v.dtype)
        directions.append(d)
    directions += [{k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
                   for _ in range(3)]

    def along(grads):
        return torch.stack([sum((grads[k] * d[k]).sum() for k in d) for d in directions])

    def loss_value(d, step):  # the inner loop differentiates, so the perturbed weights need grad
        return loss_at({k: (v + step * d[k]).requires_grad_() for k, v in params.items()}).item()

    h = 1e-5
    numeric = torch.tensor([(loss_value(d, h) - loss_value(d, -h)) / (2 * h) for d in directions],
                           dtype=torch.float64)
    analytic = along(gradient())
    rel = (analytic - numeric).norm() / numeric.norm()
    assert rel < 1e-5, f"{backbone} {bn_mode}: relative error {rel:.2e}"
    # the first-order gradient is measurably different, so the comparison can fail
    first = along(gradient(first_order=True))
    assert (first - analytic).norm() / analytic.norm() > 1e-3


def test_settings_and_first_order_default():
    maml, fomaml = get_row("maml").build(), get_row("fomaml").build()
    assert fomaml.source.first_order and not maml.source.first_order
    assert dataclasses.replace(fomaml.source, first_order=False) == maml.source  # otherwise the same rows
    assert isinstance(maml.adapter, SgdInnerLoop) and maml.adapter == fomaml.adapter
    assert MamlMetaTraining.per_shots and MamlMetaTraining.uses_ways and maml.family == "meta-learning"
    settings = maml.settings()
    assert settings["bn_mode"] == "transductive" and settings["order"] == "second"
    assert settings["inner_steps_train"] == 5 and settings["inner_steps_eval"] == 10
    assert fomaml.settings()["order"] == "first"
    assert "second-order" in maml.source.describe() and "first-order" in fomaml.source.describe()


def noisy_images(per_class: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = make_images(per_class, seed=seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * 70
    return x.clamp(0, 255).to(torch.uint8), labels


def test_meta_training_beats_random_init_on_held_out_tasks():
    images, labels = noisy_images(40, seed=5)
    base = labels < 5
    data = SourceData(images[base], torch.from_numpy(labels[base]), 5, torch.device("cpu"), 0, lambda n: None,
                      **SOURCE_PROTOCOL)
    phase = MamlMetaTraining(width=8, inner_lr=0.1, outer_lr=3e-3, inner_steps=2, shots=1)
    trained = phase.train(data, 5 * 16 * 4 * 15)  # 15 meta-steps of 4 tasks
    assert trained.spec == {"name": "conv4", "num_classes": 5, "width": 8, "image_size": 32}
    pool = to_float(images[~base], MEAN, STD)
    es = EpisodeSet.draw(labels[~base], (5, 6, 7, 8, 9), 5, 1, 15, 30, seed=2, data_fingerprint="",
                         content=index_keys(len(pool)))
    strategy = Strategy("maml", phase, SgdInnerLoop(steps=5))
    tasks = es.batch(pool, MEAN, STD)

    def accuracy(model):
        logits = strategy.run_episodes(model.eval(), tasks)
        return es.accuracies([lg.argmax(1) for lg in logits]).mean()

    torch.manual_seed(0)
    meta, scratch = accuracy(trained), accuracy(build_backbone("conv4", 5, width=8))
    assert meta > scratch + 0.1, (meta, scratch)
