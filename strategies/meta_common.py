"""Shared code of the meta-learning strategies (MAML, FOMAML, Reptile, ProtoNet).

A functional Conv-4 (same parameter names as :class:`strategies.backbones.Conv4`, so a state dict moves
between the two), inner loops written with ``torch.autograd.grad`` (``create_graph`` for second-order
MAML), a functional Adam step for Reptile, and the episodic task stream of meta-training, drawn with the
harness's own sampler (:func:`harness.episodes.sample_episode`) from the base split.

BatchNorm has two modes (``bn_mode``), always from batch statistics, never running averages:

* ``transductive``: every forward normalises with its own batch's statistics; the queries of an episode
  are normalised together (what the MAML and Reptile reference code did).
* ``inductive``: the queries are normalised with the support set's statistics, so one query's prediction
  does not depend on the other queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import to_float
from harness.episodes import index_by_class, sample_episode
from harness.errors import UsageError
from harness.measure import peak_memory_mb
from harness.strategy import SourceData

BnMode = Literal["transductive", "inductive"]
Params = dict[str, torch.Tensor]
Forward = Callable[..., torch.Tensor]


def check_bn_mode(mode: str) -> None:
    if mode not in ("transductive", "inductive"):
        raise UsageError(f"bn_mode must be 'transductive' or 'inductive', got {mode!r}")


def params_of(model: nn.Module, requires_grad: bool = True) -> Params:
    """Detached copies of a model's parameters (the source model is never touched)."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in model.named_parameters()}


def batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stats_from: int | None) -> torch.Tensor:
    """BatchNorm with the statistics of the whole batch, or of its first ``stats_from`` samples."""
    if stats_from is None:
        return F.batch_norm(x, None, None, weight, bias, training=True)
    ref = x[:stats_from]
    mean = ref.mean((0, 2, 3), keepdim=True)
    var = ref.var((0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + 1e-5) * weight[:, None, None] + bias[:, None, None]


def conv4(params: Params, x: torch.Tensor, stats_from: int | None = None, channels_last: bool = True) -> torch.Tensor:
    """Conv-4 forward with the given parameters (logits if there is a head, else 256-d features);
    blocks whose BatchNorm parameters are absent from ``params`` skip BatchNorm (used by tests).
    Channels-last activations: about 1.5x faster convolutions on CPU (oneDNN) than NCHW, but about 15%
    slower through double backward, so second-order MAML passes ``channels_last=False``."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for i in range(4):
        x = F.conv2d(x, params[f"blocks.{i}.0.weight"], params[f"blocks.{i}.0.bias"], padding=1)
        if f"blocks.{i}.1.weight" in params:
            x = batch_norm(x, params[f"blocks.{i}.1.weight"], params[f"blocks.{i}.1.bias"], stats_from)
        x = F.max_pool2d(F.relu(x), 2)
    x = x.flatten(1)
    return F.linear(x, params["head.weight"], params["head.bias"]) if "head.weight" in params else x


def sgd_adapt(params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
              create_graph: bool = False, forward: Forward = conv4) -> Params:
    """``steps`` full-batch SGD steps on the support set. ``create_graph`` keeps the graph through the
    inner loop (second-order MAML); otherwise the adapted weights are params - lr * (detached grads),
    whose gradient w.r.t. params is the identity (first-order MAML)."""
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(forward(params, x), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
            params = {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
    return params


def predict(params: Params, support: torch.Tensor, query: torch.Tensor, bn_mode: BnMode,
            forward: Forward = conv4) -> torch.Tensor:
    """Query logits; inductive mode normalises the queries with the support set's statistics."""
    if bn_mode == "transductive":
        return forward(params, query)
    return forward(params, torch.cat([support, query]), stats_from=len(support))[len(support):]


def adam_adapt(params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int,
               betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8,
               generator: torch.Generator | None = None) -> Params:
    """``steps`` Adam steps on mini-batches of ``batch`` samples cycling through shuffled (x, y); fresh
    optimiser state. Returns detached weights."""
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    order = torch.empty(0, dtype=torch.long)
    with torch.enable_grad():
        for t in range(1, steps + 1):
            if len(order) < min(batch, len(x)):
                order = torch.cat([order, torch.randperm(len(x), generator=generator)])
            idx, order = order[:batch].to(x.device), order[batch:]
            loss = F.cross_entropy(conv4(params, x[idx]), y[idx])
            grads = torch.autograd.grad(loss, list(params.values()))
            new = {}
            for (k, p), g in zip(params.items(), grads, strict=True):
                m[k] = betas[0] * m[k] + (1 - betas[0]) * g
                v2[k] = betas[1] * v2[k] + (1 - betas[1]) * g * g
                step = lr * (m[k] / (1 - betas[0] ** t)) / ((v2[k] / (1 - betas[1] ** t)).sqrt() + eps)
                new[k] = (p.detach() - step).requires_grad_()
            params = new
    return {k: v.detach() for k, v in params.items()}


def episode_stream(data: SourceData, shots: int, queries: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless base-class episodes (support x, support y, query x, query y) from the harness sampler."""
    if data.labels is None:
        raise UsageError("episodic meta-training needs the base labels")
    labels = data.labels.cpu().numpy()
    classes = sorted(set(labels.tolist()))
    by_class = index_by_class(labels, classes)
    rng = np.random.default_rng([data.seed, shots, 7])
    while True:
        e = sample_episode(by_class, classes, data.ways, shots, queries, rng)
        idx = torch.as_tensor(np.concatenate([e.support, e.query]), device=data.device)
        x = to_float(data.images[idx])
        y = torch.as_tensor(np.concatenate([e.support_labels, e.query_labels]), device=data.device)
        n = len(e.support)
        yield x[:n], y[:n], x[n:], y[n:]


def train_shots(data: SourceData, default: int = 1) -> int:
    """The shots of the evaluation (per_shots phases); ``default`` when called outside the harness."""
    return data.shots if data.shots is not None else default


def record_peak_memory(data: SourceData, key: str = "meta_step_peak_memory_mb") -> None:
    """Peak memory after the first meta-step: CUDA max allocated, or the process's peak RSS on CPU."""
    data.metrics[key] = round(peak_memory_mb(data.device), 1)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
