"""ResNet-12 as in TADAM (Oreshkin et al. 2018), MetaOptNet (Lee et al. 2019) and RFS (Tian et al. 2020,
"Rethinking Few-Shot Image Classification"): four residual stages of 64, 160, 320 and 640 channels
(scaled by ``width`` / 64), each three 3x3 conv + BatchNorm layers with leaky ReLU (slope 0.1), a 1x1
conv + BatchNorm shortcut, and 2x2 max pooling; the last stage is average-pooled to a 640-d feature.
DropBlock, which those papers add for long training runs, is left out.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.backbone import Backbone


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


class ResidualStage(nn.Module):
    """conv-BN-leaky x3 with a 1x1 shortcut, then max pooling (halves the resolution)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_channels, channels), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.conv3, self.bn3 = conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.act(out + self.shortcut(x)))


class ResNet12(Backbone):
    """ResNet-12 backbone with an optional linear head (``num_classes=0`` for none)."""

    def __init__(self, num_classes: int = 0, width: int | None = None, image_size: int = 32):
        super().__init__()
        width = width or 64
        channels = [width, width * 5 // 2, width * 5, width * 10]
        stages, previous = [], 3
        for c in channels:
            stages.append(ResidualStage(previous, c))
            previous = c
        self.blocks = nn.Sequential(*stages)
        self.feature_dim = channels[-1]
        self.head = self.make_head(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))
