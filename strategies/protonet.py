"""Prototypical Networks: Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning"
(NeurIPS).

Source phase: episodic training of the backbone's embedding on base-class episodes with the evaluation's
ways and shots (15 queries), Adam (lr 1e-3); logits are negative squared Euclidean distances to the class
means of the support embeddings. Budget: images processed = episodes * ways * (shots + queries).

Episode phase (:class:`Prototypes`): no adaptation; prototypes from the support set, nearest prototype
for each query. BatchNorm: inductive by default (running statistics, i.e. eval mode, as the reference
code evaluates), so every image is embedded once for all episodes; transductive normalises each
episode's support and query images together with their batch statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.episodes import Task, TaskBatch
from harness.phases import EpisodeAdapter, Pretrainer, Progress, SourceData, no_progress
from strategies.features import embed
from strategies.meta_common import (
    BnMode,
    MetaTraining,
    PerShots,
    episode_stream,
    make_forward,
    params_of,
)


def prototype_logits(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Negative squared Euclidean distances from each query embedding to each class mean."""
    prototypes = torch.zeros(ways, support.shape[1], dtype=support.dtype, device=support.device)
    prototypes.index_add_(0, labels, support)
    prototypes = prototypes / torch.bincount(labels, minlength=ways).clamp_min(1)[:, None].to(support.dtype)
    return -((query[:, None, :] - prototypes[None]) ** 2).sum(-1)


@dataclass
class ProtonetTraining(PerShots, MetaTraining):
    """Prototypical-network training: episodic, nearest class mean, no head."""

    lr: float = 1e-3
    bn_mode: BnMode = "inductive"

    def describe(self) -> str:
        return f"episodic prototypical-network training of {self.backbone} (Adam {self.lr:g})"

    def settings(self) -> dict:
        return {"bn_mode": self.bn_mode}

    def train(self, data: SourceData, budget_images: int) -> nn.Module:
        torch.manual_seed(data.seed)
        shots = self.train_shots()
        model = self.build_backbone(0, data).to(data.device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        per_episode = data.ways * (shots + data.queries)
        stream = episode_stream(data, shots, data.queries, augment=self.augment)
        for _ in range(max(1, math.ceil(budget_images / per_episode))):
            xs, ys, xq, yq = next(stream)
            feats = model(torch.cat([xs, xq]))
            loss = F.cross_entropy(prototype_logits(feats[:len(xs)], ys, feats[len(xs):], data.ways), yq)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            data.progress(per_episode)
        return model


@dataclass
class Prototypes(EpisodeAdapter):
    """Nearest prototype (class mean of the support embeddings), squared Euclidean distance."""

    scores_as = "negative squared Euclidean distances to the prototypes"

    def describe(self, source: Pretrainer) -> str:
        return "nearest prototype (class mean), squared Euclidean distance"

    def settings(self, source: Pretrainer) -> dict:
        return {"inner_steps_eval": 0}

    def adapt_episode(self, model: nn.Module, task: Task, source: Pretrainer) -> torch.Tensor:
        images = torch.cat([task.support_images, task.query_images])
        if source.bn_mode == "inductive":
            feats = embed(model, images)
        else:
            with torch.no_grad():
                feats = make_forward(model)(params_of(model, requires_grad=False), images)
        n = len(task.support_labels)
        return prototype_logits(feats[:n], task.support_labels, feats[n:], task.ways)

    def frozen_features(self, model: nn.Module, images: torch.Tensor, source: Pretrainer) -> torch.Tensor | None:
        """Inductive: each image's embedding is its own, computed once; transductive: none (an episode's batch
        statistics)."""
        return embed(model, images) if source.bn_mode == "inductive" else None

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        if source.bn_mode == "transductive" or not len(tasks):
            return super().adapt(model, tasks, source, progress)
        feats = self.features(model, tasks, source)
        logits = []
        for i in range(len(tasks)):
            logits.append(prototype_logits(feats[tasks.support[i]], tasks.support_labels[i], feats[tasks.query[i]],
                                           tasks.ways))
            progress(1)
        return logits
