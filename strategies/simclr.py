"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"):
two augmented views of each base image (random resized crop, flip, colour jitter, grayscale; batched
tensor ops on the device, harness/augment.py), a 2-layer MLP projection head on the backbone's features
and the NT-Xent loss with a temperature. Base labels are never read (``uses_labels = False``).

The projection head is dropped after pretraining: the source model is the bare backbone (identity head),
whose features the episode phases use. A base image counts twice in the budget (two views, one pass
each). The similarity matrix and the loss are computed in fp32 whatever the precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import simclr_view
from harness.errors import UsageError
from harness.phases import SourceData
from strategies.pretraining import SgdPretraining, channels_last


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy over 2N embeddings: for each view, its other view is
    the positive and the remaining 2N - 2 views are the negatives; the mean over all 2N views."""
    with torch.autocast(z1.device.type, enabled=False):  # fp32 under bf16 autocast too
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        n = len(z1)
        sim = z @ z.T / temperature
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
        return F.cross_entropy(sim, positives)


class ContrastiveModel(nn.Module):
    """The backbone plus the projection head used only while pretraining."""

    def __init__(self, backbone: nn.Module, projection_dim: int):
        super().__init__()
        self.backbone = backbone
        dim = backbone.feature_dim
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone.features(x))


@dataclass
class SimclrPretraining(SgdPretraining):
    """SimCLR contrastive pretraining: NT-Xent between two augmented views (no base labels)."""

    budget_group = "ssl"
    uses_labels = False

    temperature: float = 0.5
    projection_dim: int = 128

    def describe(self) -> str:
        return f"SimCLR, NT-Xent at temperature {self.temperature:g} ({self.backbone}; no base labels)"

    def check(self) -> None:
        super().check()
        if self.temperature <= 0:
            raise UsageError(f"source.temperature must be positive, got {self.temperature}")

    def passes_per_image(self) -> int:
        return 2  # two views

    def head_classes(self, data: SourceData) -> int:
        return 0

    def training_model(self, data: SourceData) -> ContrastiveModel:
        return ContrastiveModel(self.build_backbone(0, data), self.projection_dim)

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
             generator: torch.Generator, data: SourceData) -> torch.Tensor:
        geometric = self.augment != "none"  # "none": the views keep their colour jitter and grayscale only
        views = torch.cat([simclr_view(images, generator, data.mean, data.std, geometric),
                           simclr_view(images, generator, data.mean, data.std, geometric)])
        z = model(channels_last(views))  # one forward: BatchNorm sees both views together
        return nt_xent(z[:len(images)], z[len(images):], self.temperature)

    def finish(self, model: nn.Module) -> nn.Module:
        return model.backbone  # projection head dropped
