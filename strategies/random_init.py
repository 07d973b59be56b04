"""``random-probe``: the no-transfer baseline of an untrained network. No source phase: the backbone keeps
the random initialisation it is built with (seeded by the training seed; BatchNorm at its initial running
statistics), and the episode phase is the harness's linear probe (strategies/probe.py) on its frozen
features. Random convolutional features are a classic, surprisingly strong baseline (Jarrett, Kavukcuoglu,
Ranzato & LeCun 2009, "What is the Best Multi-Stage Architecture for Object Recognition?", ICCV; Saxe et al.
2011, "On Random Weights and Unsupervised Feature Learning", ICML): what the architecture alone gives, so the
gap to it is what pretraining adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.phases import Pretrainer, SourceData


@dataclass
class RandomInit(Pretrainer):
    """No source phase: a randomly initialised backbone, frozen (a no-transfer baseline)."""

    trains = False  # nothing is trained: 0 images processed, no FLOPs

    def describe(self) -> str:
        return f"none: a randomly initialised {self.backbone}, untrained (no transfer)"

    def train(self, data: SourceData, budget_images: int) -> nn.Module:
        torch.manual_seed(data.seed)
        return self.build_backbone(0, data).to(data.device).eval()
