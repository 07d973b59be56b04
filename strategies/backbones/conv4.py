"""Conv-4 (Vinyals et al. 2016, "Matching Networks for One Shot Learning"; Snell et al. 2017):
4 x [conv3x3 ``width``, BatchNorm, ReLU, maxpool 2]. At 32x32 input the last block leaves
``width`` x 2 x 2, so features are 256-d at the default width of 64.
"""

from __future__ import annotations

from torch import nn

from harness.backbone import Backbone


def conv_block(in_channels: int, out_channels: int = 64) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(Backbone):
    """Conv-4 backbone with an optional linear head (``num_classes=0`` for none)."""

    def __init__(self, num_classes: int = 0, width: int | None = None, image_size: int = 32):
        super().__init__()
        width = width or 64
        self.blocks = nn.Sequential(conv_block(3, width), conv_block(width, width),
                                    conv_block(width, width), conv_block(width, width))
        self.feature_dim = width * (image_size // 16) ** 2
        self.head = self.make_head(num_classes)
