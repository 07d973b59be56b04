"""The backbone contract: every registered backbone is a :class:`Backbone`.

- ``blocks``: an ``nn.Sequential`` of stages (partial fine-tuning unfreezes the last ones);
- ``features(x, start, stop)``: blocks ``start`` to ``stop``; when the last block has run, the pooled,
  flattened ``feature_dim`` vector (``pool``);
- ``head``: a linear classifier on the features (``nn.Identity`` when ``num_classes`` is 0);
- ``tail(start)``: a module computing ``features(x, start)`` alone (the trainable part of fine-tuning);
- ``spec``: the keyword arguments that rebuild it (``build_backbone(**spec)``), stored with cached models.

Register one with ``BACKBONES.register`` (or ``register_lazy``) as a class taking ``num_classes``,
``width`` (None: its default) and ``image_size``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.registry import BACKBONES


class Backbone(nn.Module):
    """Base class: subclasses set ``blocks`` and ``feature_dim`` and may override ``pool``."""

    blocks: nn.Sequential
    feature_dim: int
    head: nn.Module
    spec: dict[str, Any]

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output -> (N, feature_dim)."""
        return x.flatten(1)

    def features(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        stop = len(self.blocks) if stop is None else stop
        for block in self.blocks[start:stop]:
            x = block(x)
        return self.pool(x) if stop == len(self.blocks) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def tail(self, start: int) -> nn.Module:
        """Blocks ``start``.. and the pooling, as one module (parameter names relative to it)."""
        return _Tail(self, start)

    def make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.feature_dim, num_classes) if num_classes else nn.Identity()


class _Tail(nn.Module):
    def __init__(self, backbone: Backbone, start: int):
        super().__init__()
        self.blocks = nn.Sequential(*list(backbone.blocks)[start:])
        self._pool = backbone.pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self._pool(x)


def build_backbone(name: str, num_classes: int = 0, width: int | None = None, image_size: int = 32) -> Backbone:
    """A freshly initialised registered backbone; ``spec`` records how to build it again."""
    cls = BACKBONES.load(name)
    model = cls(num_classes=num_classes, width=width, image_size=image_size)
    model.spec = {"name": name, "num_classes": num_classes, "width": width, "image_size": image_size}
    return model
