"""MAML and first-order MAML: Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks" (ICML).

Source phase: meta-training on base-class episodes with the evaluation's ways and shots (15 queries):
per task, ``inner_steps`` SGD steps on the support set from the shared initialisation, then the query
loss at the adapted weights; the mean over a meta-batch of tasks is minimised with Adam. The second-order
meta-gradient differentiates through the inner loop (``create_graph``); the first-order one uses the
query-loss gradient at the adapted weights. Budget: images processed = tasks * (ways * shots * inner_steps *
(2 if second order else 1) + ways * queries), the inner loop's passes included (``task_cost``).
The registered backbone runs through ``torch.func.functional_call`` (strategies/meta_common.py).

Episode phase (:class:`SgdInnerLoop`): ``steps`` SGD steps from the meta-learned initialisation on the
support set at the meta-training's inner learning rate, then the queries are predicted. BatchNorm:
batch statistics (transductive, as the reference code) by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from harness.episodes import Task, TaskBatch
from harness.errors import UsageError
from harness.phases import Pretrainer, SourceData
from harness.tuning import tunable
from strategies.meta_common import (
    BnMode,
    Forward,
    InnerLoop,
    MetaTraining,
    Params,
    PerShots,
    episode_stream,
    make_forward,
    predict,
    sgd_adapt,
    sgd_adapt_batched,
    use_batched,
)


def meta_loss(params: Params, tasks: Sequence[tuple[torch.Tensor, ...]], inner_steps: int, inner_lr: float,
              first_order: bool, bn_mode: BnMode, forward: Forward) -> torch.Tensor:
    """Mean post-adaptation query loss of a meta-batch; backward() gives the (first-order) meta-gradient."""
    total = 0.0
    for xs, ys, xq, yq in tasks:
        adapted = sgd_adapt(params, xs, ys, inner_steps, inner_lr, forward, create_graph=not first_order)
        total = total + F.cross_entropy(predict(adapted, xs, xq, bn_mode, forward), yq)
    return total / len(tasks)


def batched_meta_gradients(params: Params, tasks: Sequence[tuple[torch.Tensor, ...]], inner_steps: int,
                           inner_lr: float, first_order: bool, bn_mode: BnMode, forward: Forward) -> Params:
    """The meta-gradient of the mean post-adaptation query loss of a meta-batch, with ``torch.func``: vmap
    over the tasks of the gradient through the inner loop (the GPU path; equal to backward() of
    :func:`meta_loss` up to rounding)."""

    def task_loss(p: Params, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor):
        for _ in range(inner_steps):
            g = grad(lambda q: F.cross_entropy(forward(q, xs), ys))(p)
            p = {k: p[k] - inner_lr * (g[k].detach() if first_order else g[k]) for k in p}
        return F.cross_entropy(predict(p, xs, xq, bn_mode, forward), yq)

    stacked_tasks = [torch.stack(t) for t in zip(*tasks, strict=True)]
    detached = {k: v.detach() for k, v in params.items()}
    per_task = vmap(grad(task_loss), in_dims=(None, 0, 0, 0, 0))(detached, *stacked_tasks)
    return {k: v.mean(0) for k, v in per_task.items()}


@dataclass
class MamlMetaTraining(PerShots, MetaTraining):
    """MAML meta-training: episodic, SGD inner loop, a ways-way head."""

    uses_ways = True

    first_order: bool = False
    inner_lr: float = 0.01
    inner_steps: int = 5
    meta_batch: int = 4
    outer_lr: float = 1e-3
    bn_mode: BnMode = "transductive"
    width: int = 64  # backbone channels (smaller only for tests)
    batched: Literal["auto", "always", "never"] = "auto"  # the meta-batch at once (vmap): auto = on CUDA only

    def describe(self) -> str:
        order = "first-order" if self.first_order else "second-order"
        return (f"{order} MAML meta-training of {self.backbone}: {self.inner_steps} inner SGD steps "
                f"(lr {self.inner_lr:g}), meta-batch {self.meta_batch}, Adam {self.outer_lr:g}")

    def settings(self) -> dict:
        return {"bn_mode": self.bn_mode, "order": "first" if self.first_order else "second",
                "inner_steps_train": self.inner_steps, "inner_lr": self.inner_lr}

    def task_cost(self, ways: int, shots: int, queries: int) -> int:
        """Images through a forward+backward pass per meta-training task (see the module docstring)."""
        return ways * shots * self.inner_steps * (1 if self.first_order else 2) + ways * queries

    def train(self, data: SourceData, budget_images: int) -> nn.Module:
        torch.manual_seed(data.seed)
        shots = self.train_shots()
        model = self.build_backbone(data.ways, data, width=self.width).to(data.device)
        params = dict(model.named_parameters())
        batched = use_batched(self.batched, data.device)
        # NCHW is faster through double backward (measured); channels-last for the first-order loop
        forward = make_forward(model, channels_last=self.first_order and not batched)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.outer_lr)
        per_task = self.task_cost(data.ways, shots, data.queries)
        stream = episode_stream(data, shots, data.queries, augment=self.augment)
        for _ in range(max(1, math.ceil(budget_images / (per_task * self.meta_batch)))):
            optimizer.zero_grad(set_to_none=True)
            if batched:
                grads = batched_meta_gradients(params, [next(stream) for _ in range(self.meta_batch)],
                                               self.inner_steps, self.inner_lr, self.first_order, self.bn_mode,
                                               forward)
                for k, p in params.items():
                    p.grad = grads[k]
            else:  # one backward per task frees that task's graph before the next one is built
                for _ in range(self.meta_batch):
                    loss = meta_loss(params, [next(stream)], self.inner_steps, self.inner_lr, self.first_order,
                                     self.bn_mode, forward)
                    (loss / self.meta_batch).backward()
            optimizer.step()
            data.progress(per_task * self.meta_batch)
        return model


@dataclass
class SgdInnerLoop(InnerLoop):
    """MAML's inner loop: SGD on the support set from the meta-learned initialisation."""

    steps: int = tunable(10, 1, 25, integer=True)
    #: the inner learning rate; None: the source phase's ``inner_lr``, the one the initialisation was meta-trained for
    lr: float | None = tunable(None, 1e-3, 1.0, log=True)
    batched: Literal["auto", "always", "never"] = "auto"  # episodes at once (vmap): auto = on CUDA only
    episode_batch: int = 100  # episodes adapted at once on the batched path (memory vs speed)

    def check(self, source: Pretrainer) -> None:
        if self.steps < 0 or (self.lr is not None and self.lr <= 0):
            raise UsageError(f"need steps >= 0 and lr > 0, got {self.steps} and {self.lr}")

    def describe(self, source: Pretrainer) -> str:
        return f"SGD on the support set from the meta-learned init ({self.steps} steps, lr {self.inner_lr(source):g})"

    def settings(self, source: Pretrainer) -> dict:
        return {"inner_steps_eval": self.steps}

    def adapt_params(self, params: Params, task: Task, source: Pretrainer, forward: Forward) -> Params:
        return sgd_adapt(params, task.support_images, task.support_labels, self.steps, self.inner_lr(source), forward)

    def adapt_stacked(self, params: Params, xs: torch.Tensor, ys: torch.Tensor, chunk: TaskBatch,
                      source: Pretrainer, forward: Forward) -> Params:
        return sgd_adapt_batched(params, xs, ys, self.steps, self.inner_lr(source), forward)
