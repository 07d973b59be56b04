"""Frozen features of a backbone, computed once per image of a batch of episodes."""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, stop: int | None = None, batch_size: int = 1000) -> torch.Tensor:
    """Eval-mode features (BatchNorm running statistics) of ``images``: blocks 0 to ``stop`` (all: the
    pooled feature vector). Runs a channels-last copy of the model (faster convolutions; the cached
    model is left as it is)."""
    fast = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    out = torch.cat([fast.features(images[i:i + batch_size].contiguous(memory_format=torch.channels_last), 0, stop)
                     for i in range(0, len(images), batch_size)])
    return out.contiguous()
