"""``pixels-probe``: the no-transfer baseline of raw pixels. No source phase: the "features" are the image's
normalised pixels, flattened (3 x H x W values), and the episode phase is the harness's linear probe
(strategies/probe.py) on them. This is the raw-pixel baseline every representation-learning paper compares
against (e.g. Coates, Lee & Ng 2011, "An Analysis of Single-Layer Networks in Unsupervised Feature
Learning", AISTATS, Table 1's raw-pixel row; Chen et al. 2019, "A Closer Look at Few-shot Classification",
for the probe). On a small or unusual target it is the bar a transfer strategy has to clear: what a pretrained
representation adds over the pixels themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.backbone import Backbone
from harness.phases import Pretrainer, SourceData


class Pixels(Backbone):
    """The identity as a backbone: no blocks; the features are the flattened input (3 x size x size)."""

    def __init__(self, image_size: int = 32):
        super().__init__()
        self.blocks = nn.Sequential()
        self.feature_dim = 3 * image_size * image_size
        self.head = nn.Identity()
        self.spec = {"image_size": image_size}

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), -1)


@dataclass
class RawPixels(Pretrainer):
    """No source phase: the raw normalised pixels are the features (a no-transfer baseline)."""

    any_backbone = False  # no network at all
    trains = False  # nothing is trained: 0 images processed, no FLOPs
    precisions = ("fp32", "bf16")

    backbone: str = "pixels"  # no network: the pixels themselves

    def check(self) -> None:
        """Nothing to check: no network, no hyperparameters."""

    def describe(self) -> str:
        return "none: the raw normalised pixels as features (no transfer)"

    def train(self, data: SourceData, budget_images: int) -> Pixels:
        return Pixels(data.image_size).to(data.device)

    def spec(self, model: nn.Module) -> dict[str, Any]:
        return dict(model.spec)

    def rebuild(self, spec: dict[str, Any]) -> Pixels:
        return Pixels(**spec)
