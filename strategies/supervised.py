"""Supervised pretraining on the base classes: the source phase of the transfer baselines (Chen et al.
2019, "A Closer Look at Few-shot Classification", Baseline; Tian et al. 2020, "Rethinking Few-Shot Image
Classification").

Cross-entropy, SGD with Nesterov momentum, a linear warm-up then linear decay of the learning rate,
random crop (reflect padding 4) and horizontal flip as batched tensor operations on the device (the loop
is strategies/pretraining.py's). The budget counts images processed, so it is the same whatever the
batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import crop_flip
from harness.phases import SourceData
from strategies.pretraining import SgdPretraining, channels_last


@dataclass
class SupervisedPretraining(SgdPretraining):
    """Supervised pretraining: cross-entropy on the base classes with crop+flip augmentation (``augment``)."""

    label_smoothing: float = 0.0

    def describe(self) -> str:
        return f"supervised {self.backbone} pretraining (SGD, lr {self.lr:g})"

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
             generator: torch.Generator, data: SourceData) -> torch.Tensor:
        x = crop_flip(data.to_float(images), self.augment)  # the global generator, seeded by the loop
        return F.cross_entropy(model(channels_last(x)), labels, label_smoothing=self.label_smoothing)
