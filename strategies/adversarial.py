"""Adversarial pretraining (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks"): supervised cross-entropy on the base classes, computed on L-infinity PGD adversarial examples
(random start, ``steps`` signed-gradient steps of ``step_size``, projection onto the epsilon-ball and
onto valid [0, 1] pixels; strategies/pgd.py) of the crop+flip augmented images.

Defaults: ``epsilon = 2/255`` (two grey levels), ``step_size = 1/255``, ``steps = 3``. Robust features
transfer best at a SMALL epsilon (Salman et al. 2020, "Do Adversarially Robust ImageNet Models Transfer
Better?"; Utrera et al. 2021): large budgets trade away clean accuracy. Three steps of 1/255 with a
random start reach the boundary of a 2/255 ball from anywhere inside it. Each base image costs steps + 1
forward/backward passes, and counts that many times in the budget. The attack is generated with
BatchNorm in eval mode, so attack passes do not move the running statistics, and in fp32 whatever the
precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import crop_flip
from harness.errors import UsageError
from harness.phases import SourceData
from strategies.pgd import PGD, describe, pgd_attack
from strategies.pretraining import SgdPretraining, channels_last


@dataclass
class AdversarialPretraining(SgdPretraining):
    """Adversarial pretraining: supervised training on L-infinity PGD examples (pixel units)."""

    budget_group = "adversarial"

    epsilon: float = PGD.epsilon
    step_size: float = PGD.step_size
    steps: int = PGD.steps

    def attack(self) -> PGD:
        return PGD(self.epsilon, self.step_size, self.steps)

    def describe(self) -> str:
        return f"supervised {self.backbone} pretraining on {describe(self.attack())} examples"

    def settings(self) -> dict:
        return {"source PGD": describe(self.attack())}

    def passes_per_image(self) -> int:
        return self.steps + 1

    def check(self) -> None:
        super().check()
        if self.epsilon < 0 or self.step_size <= 0 or self.steps < 0:
            raise UsageError("source.epsilon must be >= 0, source.step_size > 0 and source.steps >= 0 "
                             f"(pixel units in [0, 1]); got {self.epsilon}, {self.step_size}, {self.steps}")

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
             generator: torch.Generator, data: SourceData) -> torch.Tensor:
        x = channels_last(crop_flip(data.to_float(images), self.augment, generator))
        model.eval()
        x = pgd_attack(model, x, labels, self.attack(), generator=generator, mean=data.mean, std=data.std)
        model.train()
        return F.cross_entropy(model(x), labels)
