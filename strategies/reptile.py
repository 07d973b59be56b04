"""Reptile: Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms" (arXiv:1803.02999).

Source phase: per meta-iteration, ``meta_batch`` base-class tasks of ``ways`` classes with ``train_shots``
images each (15, as the paper's Mini-ImageNet runs, for both shot settings, so one model serves both);
on each, ``inner_steps`` Adam steps (beta1 = 0, fresh state) on mini-batches of ``inner_batch`` images;
then the initialisation moves toward the mean adapted weights: theta += epsilon * (mean(adapted) - theta),
epsilon annealed linearly from ``outer_step`` to 0. Budget: images processed = tasks * inner_steps *
inner_batch.

Episode phase: ``steps`` Adam steps (same optimiser) on mini-batches of ``eval_batch`` support images
from the learned initialisation, then the queries are predicted. BatchNorm: transductive by default (the
paper's reported setting).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.episodes import Task
from harness.errors import UsageError
from harness.registry import register
from harness.strategy import SourceData, SourcePhase, Strategy
from strategies.backbones import Conv4
from strategies.meta_common import (
    BnMode,
    Params,
    adam_adapt,
    check_bn_mode,
    episode_stream,
    params_of,
    predict,
    record_peak_memory,
    reset_peak_memory,
)


def reptile_step(params: Params, tasks: Sequence[tuple[torch.Tensor, torch.Tensor]], steps: int, lr: float,
                 batch: int, epsilon: float, generator: torch.Generator | None = None) -> Params:
    """One outer update: theta + epsilon * (mean over tasks of the adapted weights - theta)."""
    adapted = [adam_adapt(params, x, y, steps, lr, batch, generator=generator) for x, y in tasks]
    return {k: v.detach() + epsilon * (torch.stack([a[k] for a in adapted]).mean(0) - v.detach())
            for k, v in params.items()}


@dataclass
class ReptileMetaTraining(SourcePhase):
    """Reptile meta-training of Conv-4 with a ways-way head."""

    budget_group = "meta"

    inner_lr: float = 1e-3
    inner_steps: int = 8
    inner_batch: int = 10
    train_shots: int = 15
    meta_batch: int = 5
    outer_step: float = 1.0
    bn_mode: BnMode = "transductive"

    def build(self, num_classes: int) -> Conv4:
        return Conv4(5)  # the harness protocol is 5-way; train() uses the run's ways

    def train(self, data: SourceData, budget_images: int) -> Conv4:
        check_bn_mode(self.bn_mode)
        torch.manual_seed(data.seed)
        generator = torch.Generator().manual_seed(data.seed)
        model = Conv4(data.ways).to(data.device)
        params = params_of(model, requires_grad=False)
        per_task = self.inner_steps * self.inner_batch
        total = max(1, math.ceil(budget_images / (per_task * self.meta_batch)))
        stream = episode_stream(data, self.train_shots, 0)
        for step in range(total):
            if step == 0:
                reset_peak_memory(data.device)
            tasks = [next(stream)[:2] for _ in range(self.meta_batch)]
            epsilon = self.outer_step * (1 - step / total)
            params = reptile_step(params, tasks, self.inner_steps, self.inner_lr, self.inner_batch, epsilon,
                                  generator)
            if step == 0:
                record_peak_memory(data)
            data.progress(per_task * self.meta_batch)
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(params[k])
        return model


@register
@dataclass
class Reptile(Strategy):
    """Reptile (Nichol et al. 2018): Adam fine-tuning on the support set from a Reptile-learned init."""

    family = "meta-learning"
    episode_phase = "Adam (beta1=0) on support mini-batches from the meta-learned init (50 steps)"

    source: ReptileMetaTraining = field(default_factory=ReptileMetaTraining)
    steps: int = 50
    eval_batch: int = 15

    def check(self) -> None:
        check_bn_mode(self.source.bn_mode)
        if self.steps < 0 or self.eval_batch < 1 or self.source.inner_steps < 1 or self.source.meta_batch < 1:
            raise UsageError("steps must be >= 0; eval_batch, source.inner_steps and source.meta_batch >= 1")

    def protocol_settings(self) -> dict[str, object]:
        return {"bn_mode": self.source.bn_mode, "order": "first (Reptile)",
                "inner_steps_train": self.source.inner_steps, "inner_steps_eval": self.steps,
                "inner_lr": self.source.inner_lr}

    def run_episode(self, model: nn.Module, task: Task) -> torch.Tensor:
        xs, xq = task.support_images, task.query_images
        generator = torch.Generator().manual_seed(task.seed)
        adapted = adam_adapt(params_of(model, requires_grad=False), xs, task.support_labels, self.steps,
                             self.source.inner_lr, self.eval_batch, generator=generator)
        with torch.no_grad():
            return predict(adapted, xs, xq, self.source.bn_mode)
