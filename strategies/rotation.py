"""Self-supervised rotation prediction (Gidaris et al. 2018, "Unsupervised Representation Learning by
Predicting Image Rotations"): every base image is shown at 0, 90, 180 and 270 degrees and a 4-way head on
the backbone's features predicts which. Base labels are never read (``uses_labels = False``).

The source model is the backbone whose head is the 4-way rotation head, so the episode phases (linear
probe, partial fine-tuning) use its ``.blocks`` / ``.features`` unchanged. A base image counts four times in the
budget: it is processed four times (a batch of 128 base images is 512 rotated ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import crop_flip
from harness.phases import SourceData
from strategies.pretraining import SgdPretraining, channels_last

ROTATIONS = 4


def rotate_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> the 4N rotated images (all of rotation 0, then 1, ...) and their labels 0..3,
    where label k is ``torch.rot90(image, k, dims=(2, 3))`` (k quarter turns counter-clockwise)."""
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=images.device).repeat_interleave(len(images))
    return rotated, labels


@dataclass
class RotationPretraining(SgdPretraining):
    """Self-supervised rotation prediction: which of four rotations was applied (no base labels)."""

    budget_group = "ssl"
    uses_labels = False

    def describe(self) -> str:
        return f"rotation prediction, 4-way head ({self.backbone}; no base labels)"

    def passes_per_image(self) -> int:
        return ROTATIONS

    def head_classes(self, data: SourceData) -> int:
        return ROTATIONS  # the base classes are not used: the head predicts rotations

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
             generator: torch.Generator, data: SourceData) -> torch.Tensor:
        x = crop_flip(data.to_float(images), self.augment, generator)
        rotated, targets = rotate_batch(x)
        return F.cross_entropy(model(channels_last(rotated)), targets)
