"""Prototypical Networks: Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning"
(NeurIPS).

Source phase: episodic training of the Conv-4 embedding on base-class episodes with the evaluation's
ways and shots (15 queries), Adam (lr 1e-3); logits are negative squared Euclidean distances to the class
means of the support embeddings. Budget: images processed = episodes * ways * (shots + queries).

Episode phase: no adaptation; prototypes from the support set, nearest prototype for each query.
BatchNorm: inductive by default (running statistics, i.e. eval mode, as the reference code evaluates),
so every image is embedded once for all episodes; transductive normalises each episode's support and
query images together with their batch statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from harness.episodes import Task
from harness.registry import register
from harness.strategy import SourceData, SourcePhase, Strategy
from strategies.backbones import Conv4, embed
from strategies.meta_common import (
    BnMode,
    check_bn_mode,
    conv4,
    episode_stream,
    params_of,
    record_peak_memory,
    reset_peak_memory,
    train_shots,
)


def prototype_logits(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Negative squared Euclidean distances from each query embedding to each class mean."""
    prototypes = torch.zeros(ways, support.shape[1], dtype=support.dtype, device=support.device)
    prototypes.index_add_(0, labels, support)
    prototypes = prototypes / torch.bincount(labels, minlength=ways).clamp_min(1)[:, None].to(support.dtype)
    return -((query[:, None, :] - prototypes[None]) ** 2).sum(-1)


@dataclass
class ProtonetTraining(SourcePhase):
    """Episodic prototypical-network training of the Conv-4 embedding (no head)."""

    budget_group = "meta"
    per_shots = True

    lr: float = 1e-3
    bn_mode: BnMode = "inductive"

    def build(self, num_classes: int) -> Conv4:
        return Conv4(0)

    def train(self, data: SourceData, budget_images: int) -> Conv4:
        check_bn_mode(self.bn_mode)
        torch.manual_seed(data.seed)
        shots = train_shots(data)
        model = self.build(0).to(data.device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        per_episode = data.ways * (shots + data.queries)
        stream = episode_stream(data, shots, data.queries)
        for step in range(max(1, math.ceil(budget_images / per_episode))):
            if step == 0:
                reset_peak_memory(data.device)
            xs, ys, xq, yq = next(stream)
            feats = model(torch.cat([xs, xq]))
            loss = F.cross_entropy(prototype_logits(feats[:len(xs)], ys, feats[len(xs):], data.ways), yq)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step == 0:
                record_peak_memory(data)
            data.progress(per_episode)
        return model


@register(name="protonet")
@dataclass
class Protonet(Strategy):
    """Prototypical Networks (Snell et al. 2017): nearest class mean in an episodically trained embedding."""

    family = "meta-learning"
    episode_phase = "nearest prototype (class mean), squared Euclidean distance"

    source: ProtonetTraining = field(default_factory=ProtonetTraining)

    def check(self) -> None:
        check_bn_mode(self.source.bn_mode)

    def protocol_settings(self) -> dict[str, object]:
        return {"bn_mode": self.source.bn_mode, "inner_steps_eval": 0}

    def _embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        if self.source.bn_mode == "inductive":
            return embed(model, images)
        with torch.no_grad():
            return conv4(params_of(model, requires_grad=False), images)

    def run_episode(self, model: nn.Module, task: Task) -> torch.Tensor:
        feats = self._embed(model, torch.cat([task.support_images, task.query_images]))
        n = len(task.support_index)
        return prototype_logits(feats[:n], task.support_labels, feats[n:], task.ways)

    def run_episodes(self, model: nn.Module, tasks: Sequence[Task],
                     progress: Callable[[int], None] = lambda n: None) -> list[torch.Tensor]:
        if self.source.bn_mode == "transductive" or not tasks:
            return super().run_episodes(model, tasks, progress)
        pool = tasks[0].pool  # inductive: each image's embedding is independent, embed each once
        used = torch.unique(torch.cat([torch.cat([t.support_index, t.query_index]) for t in tasks]))
        embedded = embed(model, pool[used])
        feats = torch.zeros(len(pool), embedded.shape[1], device=pool.device)
        feats[used] = embedded
        logits = []
        for t in tasks:
            logits.append(prototype_logits(feats[t.support_index], t.support_labels, feats[t.query_index], t.ways))
            progress(1)
        return logits
