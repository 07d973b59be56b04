"""Shared code of the meta-learning strategies (MAML, FOMAML, Reptile, ProtoNet).

The registered backbone runs through ``torch.func.functional_call`` (:func:`make_forward`): a copy of
the module whose BatchNorm layers always use batch statistics, called with the parameters being
adapted; inner loops written with ``torch.autograd.grad`` (``create_graph`` for second-order MAML), a
functional Adam step for Reptile, and the episodic task stream of meta-training, drawn with the
harness's own sampler (:func:`harness.episodes.sample_episode`) from the base pool, its support and query
images augmented with the same crop+flip as the pretraining phases (``augment``, harness/augment.py).

BatchNorm in the functional forward has two modes (``bn_mode``), always from batch statistics, never running
averages (ProtoNet's episode phase, strategies/protonet.py, embeds with the running statistics instead when
its ``bn_mode`` is ``inductive``):

* ``transductive``: every forward normalises with its own batch's statistics; the queries of an episode
  are normalised together (what the MAML and Reptile reference code did).
* ``inductive``: the queries are normalised with the support set's statistics, so one query's prediction
  does not depend on the other queries.

About 310 lines: the functional forward, both inner loops (one episode and vmap over many) and the episodic
task stream are shared by three strategies and tested together (tests/test_strategies/test_batched.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from harness.augment import check_augment, crop_flip
from harness.episodes import Task, TaskBatch, index_by_class, sample_episode
from harness.errors import UsageError
from harness.phases import EpisodeAdapter, Pretrainer, Progress, SourceData, no_progress

BnMode = Literal["transductive", "inductive"]
Params = dict[str, torch.Tensor]
Forward = Callable[..., torch.Tensor]


def check_bn_mode(mode: str) -> None:
    if mode not in ("transductive", "inductive"):
        raise UsageError(f"bn_mode must be 'transductive' or 'inductive', got {mode!r}")


@dataclass
class MetaTraining(Pretrainer):
    """Shared by the meta-learning source phases: the budget group, the base-task augmentation and the checks
    of their fields."""

    budget_group = "meta"

    augment: str = "crop+flip"  # of the base tasks' support and query images: "crop+flip" or "none"

    def check(self) -> None:
        super().check()
        check_augment(self.phase_name, self.augment)
        check_bn_mode(getattr(self, "bn_mode", "transductive"))
        if getattr(self, "inner_steps", 1) < 1 or getattr(self, "meta_batch", 1) < 1:
            raise UsageError("source.inner_steps and source.meta_batch must be >= 1")


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


class EpisodicBatchNorm(nn.Module):
    """BatchNorm2d from batch statistics only (no running averages), with the same parameter names."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias
        self.stats_from: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm(x, self.weight, self.bias, self.stats_from)


def _episodic(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, EpisodicBatchNorm(child))
        elif isinstance(child, nn.ReLU):
            setattr(module, name, nn.ReLU())  # out of place: the graph is differentiated twice
        else:
            _episodic(child)


def make_forward(model: nn.Module, channels_last: bool = True) -> Forward:
    """``forward(params, x, stats_from=None)``: the model's logits (features when it has no head) at the
    given parameters, BatchNorm from the batch (or its first ``stats_from`` samples). Channels-last
    activations: about 1.5x faster convolutions on CPU (oneDNN) than NCHW, but about 15% slower through
    double backward, so second-order MAML passes ``channels_last=False``."""
    module = copy.deepcopy(model)
    _episodic(module)
    norms = [m for m in module.modules() if isinstance(m, EpisodicBatchNorm)]

    def forward(params: Params, x: torch.Tensor, stats_from: int | None = None) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for m in norms:
            m.stats_from = stats_from
        try:
            return functional_call(module, params, (x,), strict=True)
        finally:
            for m in norms:
                m.stats_from = None

    return forward


def sgd_adapt(params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, forward: Forward,
              create_graph: bool = False) -> Params:
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
            forward: Forward) -> torch.Tensor:
    """Query logits; inductive mode normalises the queries with the support set's statistics."""
    if bn_mode == "transductive":
        return forward(params, query)
    return forward(params, torch.cat([support, query]), stats_from=len(support))[len(support):]


def minibatch_schedule(n: int, steps: int, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(steps, min(batch, n)) sample indices: mini-batches cycling through shuffled permutations of n."""
    order = torch.empty(0, dtype=torch.long)
    rows = []
    for _ in range(steps):
        if len(order) < min(batch, n):
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        rows.append(order[:batch])
        order = order[batch:]
    return torch.stack(rows) if rows else torch.empty(0, min(batch, n), dtype=torch.long)


def adam_update(params: Params, grads: Params, m: Params, v: Params, t: int, lr: float,
                betas: tuple[float, float], eps: float) -> Params:
    """One Adam step (fresh-state bias correction at step t) with multi-tensor ops."""
    keys = list(params)
    ps, gs = [params[k] for k in keys], [grads[k] for k in keys]
    ms, vs = [m[k] for k in keys], [v[k] for k in keys]
    torch._foreach_mul_(ms, betas[0])
    torch._foreach_add_(ms, gs, alpha=1 - betas[0])
    torch._foreach_mul_(vs, betas[1])
    torch._foreach_addcmul_(vs, gs, gs, value=1 - betas[1])
    denominators = torch._foreach_add(torch._foreach_sqrt(torch._foreach_div(vs, 1 - betas[1] ** t)), eps)
    steps = torch._foreach_div(torch._foreach_mul(ms, lr / (1 - betas[0] ** t)), denominators)
    return dict(zip(keys, torch._foreach_sub(ps, steps), strict=True))


def adam_adapt(params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int,
               forward: Forward, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8,
               generator: torch.Generator | None = None) -> Params:
    """``steps`` Adam steps on mini-batches of ``batch`` samples cycling through shuffled (x, y); fresh
    optimiser state. Returns detached weights."""
    schedule = minibatch_schedule(len(x), steps, batch, generator).to(x.device)
    params = {k: v.detach() for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(1, steps + 1):
        idx = schedule[t - 1]
        with torch.enable_grad():
            leaves = {k: p.requires_grad_() for k, p in params.items()}
            loss = F.cross_entropy(forward(leaves, x[idx]), y[idx])
            grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
        params = adam_update({k: p.detach() for k, p in leaves.items()}, grads, m, v2, t, lr, betas, eps)
    return params


# --- many episodes at once: torch.func.vmap over stacked parameters (the GPU path) -----------------


def stacked(params: Params, batch: int) -> Params:
    """``batch`` copies of every parameter, stacked on a new first dimension."""
    return {k: v.detach().unsqueeze(0).expand(batch, *v.shape).clone() for k, v in params.items()}


def sgd_adapt_batched(params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                      forward: Forward) -> Params:
    """:func:`sgd_adapt` (first order, no graph kept) for B episodes at once: params stacked (B, ...),
    x (B, n, ...), y (B, n)."""
    def loss(p: Params, xe: torch.Tensor, ye: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(forward(p, xe), ye)

    step = vmap(grad(loss))
    with torch.enable_grad():
        for _ in range(steps):
            grads = step(params, x, y)
            params = {k: p - lr * grads[k] for k, p in params.items()}
    return params


def adam_adapt_batched(params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int,
                       forward: Forward, generators: list[torch.Generator], betas: tuple[float, float] = (0.0, 0.999),
                       eps: float = 1e-8) -> Params:
    """:func:`adam_adapt` for B episodes at once (each with its own generator, so its own mini-batches)."""
    schedule = torch.stack([minibatch_schedule(x.shape[1], steps, batch, g) for g in generators]).to(x.device)
    rows = torch.arange(len(generators), device=x.device)[:, None]

    def loss(p: Params, xe: torch.Tensor, ye: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(forward(p, xe), ye)

    step = vmap(grad(loss))
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(1, steps + 1):
        idx = schedule[:, t - 1]
        with torch.enable_grad():
            grads = step(params, x[rows, idx], y[rows, idx])
        params = adam_update(params, grads, m, v2, t, lr, betas, eps)
    return params


def predict_batched(params: Params, support: torch.Tensor, query: torch.Tensor, bn_mode: BnMode,
                    forward: Forward) -> torch.Tensor:
    """:func:`predict` for B episodes at once."""
    return vmap(lambda p, s, q: predict(p, s, q, bn_mode, forward))(params, support, query)


def use_batched(batched: str, device: torch.device) -> bool:
    """``auto``: batched over episodes on CUDA (kernel launches dominate there), the per-episode loop on a
    CPU, where it measured faster; ``always`` / ``never`` force one."""
    return batched == "always" or (batched == "auto" and device.type == "cuda")


class InnerLoop(EpisodeAdapter):
    """Shared by the meta-learners' episode phases (MAML's SGD, Reptile's Adam): an inner loop from the
    meta-learned initialisation, then the queries predicted with the source phase's ``bn_mode``. Many
    episodes at once through ``vmap`` (:meth:`adapt_stacked`) where :func:`use_batched` says so, else one at
    a time (:meth:`adapt_params`). Subclasses are dataclasses with ``batched`` and ``episode_batch`` fields."""

    batched: str
    episode_batch: int

    def inner_lr(self, source: Pretrainer) -> float:
        """The episode phase's inner learning rate: its own ``lr`` when set, else the source phase's."""
        own = getattr(self, "lr", None)
        return source.inner_lr if own is None else own

    def adapt_params(self, params: Params, task: Task, source: Pretrainer, forward: Forward) -> Params:
        """The adapted weights of one episode."""
        raise NotImplementedError

    def adapt_stacked(self, params: Params, xs: torch.Tensor, ys: torch.Tensor, chunk: TaskBatch,
                      source: Pretrainer, forward: Forward) -> Params:
        """The adapted weights of a chunk of episodes at once (stacked parameters, (B, n, ...) supports)."""
        raise NotImplementedError

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        outputs: list = []
        if use_batched(self.batched, tasks.images.device):
            forward = make_forward(model, channels_last=False)  # vmap keeps the memory format as it is
            init = params_of(model, requires_grad=False)
            for chunk in tasks.chunks(self.episode_batch):
                xs, xq = chunk.images[chunk.support], chunk.images[chunk.query]
                adapted = self.adapt_stacked(stacked(init, len(chunk)), xs, chunk.support_labels, chunk, source,
                                             forward)
                with torch.no_grad():
                    outputs += list(predict_batched(adapted, xs, xq, source.bn_mode, forward))
                progress(len(chunk))
            return outputs
        forward = make_forward(model)  # one functional copy for the batch
        for task in tasks:  # a plain loop: measured faster on CPU than vmap over episodes
            outputs.append(self.adapt_episode(model, task, source, forward))
            progress(1)
        return outputs

    def adapt_episode(self, model: nn.Module, task: Task, source: Pretrainer,
                      forward: Forward | None = None) -> torch.Tensor:
        forward = forward or make_forward(model)
        adapted = self.adapt_params(params_of(model), task, source, forward)
        with torch.no_grad():
            return predict(adapted, task.support_images, task.query_images, source.bn_mode, forward)


def episode_stream(data: SourceData, shots: int, queries: int, prefetch: int = 32,
                   augment: str = "none") -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless base-class episodes (support x, support y, query x, query y) from the harness sampler. The
    indices of ``prefetch`` episodes are drawn at once and sent to the device in one copy, their images
    gathered and normalised on the device in one call (the same episodes as one at a time). ``augment``
    ("crop+flip" or "none", harness/augment.py crop_flip) is applied to every image, support and query, from
    a device generator seeded with the training seed."""
    if data.labels is None:
        raise UsageError("episodic meta-training needs the base labels")
    labels = data.labels.cpu().numpy()
    classes = sorted(set(labels.tolist()))
    by_class = index_by_class(labels, classes)
    rng = np.random.default_rng([data.seed, shots, 7])
    generator = torch.Generator(device=data.device).manual_seed(data.seed)
    while True:
        drawn = [sample_episode(by_class, classes, data.ways, shots, queries, rng) for _ in range(prefetch)]
        idx = torch.as_tensor(np.concatenate([np.concatenate([e.support, e.query]) for e in drawn]), device=data.device)
        y = torch.as_tensor(np.concatenate([np.concatenate([e.support_labels, e.query_labels]) for e in drawn]),
                            device=data.device)
        x = crop_flip(data.to_float(data.images[idx]), augment, generator)
        size = len(drawn[0].support) + len(drawn[0].query)
        n = len(drawn[0].support)
        for i in range(prefetch):
            xe, ye = x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]
            yield xe[:n], ye[:n], xe[n:], ye[n:]


@dataclass
class PerShots:
    """A source phase trained for one shot setting (episodic meta-training on base tasks with the evaluation's ways
    and shots): ``shots`` None means each evaluation's, and the harness then trains and caches one model per shot
    setting with ``shots`` set (harness/units.py); a number trains one model for every evaluation."""

    per_shots: ClassVar[bool] = True

    shots: int | None = None

    def check(self) -> None:
        super().check()  # the pretrainer's (MRO: PerShots comes before it)
        if self.shots is not None and self.shots < 1:
            raise UsageError(f"source.shots must be 1 or more, or None for each evaluation's shots; got {self.shots}")

    def train_shots(self) -> int:
        """The shots of the base tasks (1 when called outside the harness without ``shots``)."""
        return self.shots if self.shots is not None else 1

    def episode_images(self, shots: int, queries: int) -> int:
        return (self.shots or shots) + queries
