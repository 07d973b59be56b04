"""MAML and first-order MAML: Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks" (ICML).

Source phase: meta-training on base-class episodes with the evaluation's ways and shots (15 queries):
per task, ``inner_steps`` SGD steps on the support set from the shared initialisation, then the query
loss at the adapted weights; the mean over a meta-batch of tasks is minimised with Adam. The second-order
meta-gradient differentiates through the inner loop (``create_graph``); the first-order one uses the
query-loss gradient at the adapted weights. Budget: images processed = tasks * ways * (shots + queries).

Episode phase: ``steps`` SGD steps from the meta-learned initialisation on the support set, then the
queries are predicted. BatchNorm: batch statistics (transductive, as the reference code) by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from harness.episodes import Task
from harness.errors import UsageError
from harness.registry import register
from harness.strategy import SourceData, SourcePhase, Strategy
from strategies.backbones import Conv4
from strategies.meta_common import (
    BnMode,
    Forward,
    Params,
    check_bn_mode,
    conv4,
    episode_stream,
    params_of,
    predict,
    record_peak_memory,
    reset_peak_memory,
    sgd_adapt,
    train_shots,
)


def meta_loss(params: Params, tasks: Sequence[tuple[torch.Tensor, ...]], inner_steps: int, inner_lr: float,
              first_order: bool, bn_mode: BnMode, forward: Forward = conv4) -> torch.Tensor:
    """Mean post-adaptation query loss of a meta-batch; backward() gives the (first-order) meta-gradient."""
    if forward is conv4 and not first_order:
        forward = partial(conv4, channels_last=False)  # NCHW is faster through double backward (measured)
    total = 0.0
    for xs, ys, xq, yq in tasks:
        adapted = sgd_adapt(params, xs, ys, inner_steps, inner_lr, not first_order, forward)
        total = total + F.cross_entropy(predict(adapted, xs, xq, bn_mode, forward), yq)
    return total / len(tasks)


@dataclass
class MamlMetaTraining(SourcePhase):
    """Episodic MAML meta-training of Conv-4 with a ways-way head."""

    budget_group = "meta"
    per_shots = True

    first_order: bool = False
    inner_lr: float = 0.01
    inner_steps: int = 5
    meta_batch: int = 4
    outer_lr: float = 1e-3
    bn_mode: BnMode = "transductive"
    width: int = 64  # Conv-4 channels (smaller only for tests)

    def build(self, num_classes: int) -> Conv4:
        return Conv4(5, self.width)  # the harness protocol is 5-way; train() uses the run's ways

    def train(self, data: SourceData, budget_images: int) -> Conv4:
        check_bn_mode(self.bn_mode)
        torch.manual_seed(data.seed)
        shots = train_shots(data)
        model = Conv4(data.ways, self.width).to(data.device)
        params = dict(model.named_parameters())
        optimizer = torch.optim.Adam(model.parameters(), lr=self.outer_lr)
        per_task = data.ways * (shots + data.queries)
        stream = episode_stream(data, shots, data.queries)
        for step in range(max(1, math.ceil(budget_images / (per_task * self.meta_batch)))):
            if step == 0:
                reset_peak_memory(data.device)
            optimizer.zero_grad(set_to_none=True)
            # one backward per task frees that task's graph before the next one is built
            for _ in range(self.meta_batch):
                loss = meta_loss(params, [next(stream)], self.inner_steps, self.inner_lr, self.first_order,
                                 self.bn_mode)
                (loss / self.meta_batch).backward()
            optimizer.step()
            if step == 0:
                record_peak_memory(data)
            data.progress(per_task * self.meta_batch)
        return model


@register
@dataclass
class Maml(Strategy):
    """MAML (Finn et al. 2017), second order: SGD inner loop from a meta-learned Conv-4 initialisation."""

    family = "meta-learning"
    episode_phase = "SGD on the support set from the meta-learned init (10 steps, lr 0.01)"

    source: MamlMetaTraining = field(default_factory=MamlMetaTraining)
    steps: int = 10

    def check(self) -> None:
        check_bn_mode(self.source.bn_mode)
        if self.steps < 0 or self.source.inner_steps < 1 or self.source.meta_batch < 1:
            raise UsageError("steps must be >= 0, source.inner_steps and source.meta_batch >= 1")

    def protocol_settings(self) -> dict[str, object]:
        return {"bn_mode": self.source.bn_mode, "order": "first" if self.source.first_order else "second",
                "inner_steps_train": self.source.inner_steps, "inner_steps_eval": self.steps,
                "inner_lr": self.source.inner_lr}

    def run_episode(self, model: nn.Module, task: Task) -> torch.Tensor:
        xs, xq = task.support_images, task.query_images
        adapted = sgd_adapt(params_of(model), xs, task.support_labels, self.steps, self.source.inner_lr)
        with torch.no_grad():
            return predict(adapted, xs, xq, self.source.bn_mode)

    def run_episodes(self, model: nn.Module, tasks: Sequence[Task],
                     progress: Callable[[int], None] = lambda n: None) -> list[torch.Tensor]:
        # a plain loop: measured faster on CPU than vmap over episodes (grouped convolutions)
        logits = []
        for task in tasks:
            logits.append(self.run_episode(model, task))
            progress(1)
        return logits


@register
@dataclass
class Fomaml(Maml):
    """First-order MAML (Finn et al. 2017): no gradient through the inner loop."""

    source: MamlMetaTraining = field(default_factory=lambda: MamlMetaTraining(first_order=True))
