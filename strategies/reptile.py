"""Reptile: Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms" (arXiv:1803.02999).

Source phase: per meta-iteration, ``meta_batch`` base-class tasks of ``ways`` classes with ``train_shots``
images each (15, as the paper's Mini-ImageNet runs, for both shot settings, so one model serves both);
on each, ``inner_steps`` Adam steps (beta1 = 0, fresh state) on mini-batches of ``inner_batch`` images;
then the initialisation moves toward the mean adapted weights: theta += epsilon * (mean(adapted) - theta),
epsilon annealed linearly from ``outer_step`` to 0. Budget: images processed = tasks * inner_steps *
inner_batch.

Episode phase (:class:`AdamInnerLoop`): ``steps`` Adam steps (same optimiser) on mini-batches of
``eval_batch`` support images from the learned initialisation, then the queries are predicted.
BatchNorm: transductive by default (the paper's reported setting).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

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
    adam_adapt,
    adam_adapt_batched,
    episode_stream,
    make_forward,
    params_of,
)


def reptile_step(params: Params, tasks: Sequence[tuple[torch.Tensor, torch.Tensor]], steps: int, lr: float,
                 batch: int, epsilon: float, forward: Forward, generator: torch.Generator | None = None) -> Params:
    """One outer update: theta + epsilon * (mean over tasks of the adapted weights - theta)."""
    adapted = [adam_adapt(params, x, y, steps, lr, batch, forward, generator=generator) for x, y in tasks]
    return {k: v.detach() + epsilon * (torch.stack([a[k] for a in adapted]).mean(0) - v.detach())
            for k, v in params.items()}


@dataclass
class ReptileMetaTraining(MetaTraining):
    """Reptile meta-training: Adam inner loops on base tasks, a ways-way head."""

    uses_ways = True

    inner_lr: float = 1e-3
    inner_steps: int = 8
    inner_batch: int = 10
    train_shots: int = 15
    meta_batch: int = 5
    outer_step: float = 1.0
    bn_mode: BnMode = "transductive"

    def describe(self) -> str:
        return (f"Reptile meta-training of {self.backbone}: {self.inner_steps} inner Adam steps (lr "
                f"{self.inner_lr:g}, batch {self.inner_batch}) on {self.train_shots}-shot tasks, meta-batch "
                f"{self.meta_batch}")

    def settings(self) -> dict:
        return {"bn_mode": self.bn_mode, "order": "first (Reptile)", "inner_steps_train": self.inner_steps,
                "inner_lr": self.inner_lr}

    def episode_images(self, shots: int, queries: int) -> int:
        return self.train_shots

    def train(self, data: SourceData, budget_images: int) -> nn.Module:
        torch.manual_seed(data.seed)
        generator = torch.Generator().manual_seed(data.seed)
        model = self.build_backbone(data.ways, data).to(data.device)
        forward = make_forward(model)
        params = params_of(model, requires_grad=False)
        per_task = self.inner_steps * self.inner_batch
        total = max(1, math.ceil(budget_images / (per_task * self.meta_batch)))
        stream = episode_stream(data, self.train_shots, 0, augment=self.augment)
        for step in range(total):
            tasks = [next(stream)[:2] for _ in range(self.meta_batch)]
            epsilon = self.outer_step * (1 - step / total)
            params = reptile_step(params, tasks, self.inner_steps, self.inner_lr, self.inner_batch, epsilon,
                                  forward, generator)
            data.progress(per_task * self.meta_batch)
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(params[k])
        return model


@dataclass
class AdamInnerLoop(InnerLoop):
    """Reptile's inner loop: Adam on support mini-batches from the meta-learned initialisation."""

    steps: int = tunable(50, 10, 100, integer=True)
    #: the inner learning rate; None: the source phase's ``inner_lr``, the one the initialisation was meta-trained for
    lr: float | None = tunable(None, 1e-4, 1e-2, log=True)
    eval_batch: int = 15
    batched: Literal["auto", "always", "never"] = "auto"  # episodes at once (vmap): auto = on CUDA only
    episode_batch: int = 100  # episodes adapted at once on the batched path (memory vs speed)

    def check(self, source: Pretrainer) -> None:
        if self.steps < 0 or self.eval_batch < 1 or (self.lr is not None and self.lr <= 0):
            raise UsageError(f"need steps >= 0, eval_batch >= 1 and lr > 0, got {self.steps}, {self.eval_batch} and "
                             f"{self.lr}")

    def describe(self, source: Pretrainer) -> str:
        return (f"Adam (beta1=0) on support mini-batches of {self.eval_batch} from the meta-learned init "
                f"({self.steps} steps, lr {self.inner_lr(source):g})")

    def settings(self, source: Pretrainer) -> dict:
        return {"inner_steps_eval": self.steps}

    def adapt_params(self, params: Params, task: Task, source: Pretrainer, forward: Forward) -> Params:
        return adam_adapt(params, task.support_images, task.support_labels, self.steps, self.inner_lr(source),
                          self.eval_batch, forward, generator=task.generator())

    def adapt_stacked(self, params: Params, xs: torch.Tensor, ys: torch.Tensor, chunk: TaskBatch,
                      source: Pretrainer, forward: Forward) -> Params:
        return adam_adapt_batched(params, xs, ys, self.steps, self.inner_lr(source), self.eval_batch, forward,
                                  [task.generator() for task in chunk])
