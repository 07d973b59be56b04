"""Conv-4 (Vinyals et al. 2016; Snell et al. 2017): 4 x [conv3x3 64, BatchNorm, ReLU, maxpool 2].

At 32x32 input the last block leaves 64 x 2 x 2, so features are 256-d.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from harness.episodes import Task

FEATURE_DIM = 256


def conv_block(in_channels: int, out_channels: int = 64) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Conv-4 backbone with an optional linear head (``num_classes=0`` for none)."""

    def __init__(self, num_classes: int = 0, width: int = 64):
        super().__init__()
        self.blocks = nn.Sequential(conv_block(3, width), conv_block(width, width),
                                    conv_block(width, width), conv_block(width, width))
        self.head = nn.Linear(4 * width, num_classes) if num_classes else nn.Identity()

    def features(self, x: torch.Tensor, start: int = 0, stop: int = 4) -> torch.Tensor:
        """Run blocks ``start`` to ``stop``; flatten once the last block has run."""
        for block in self.blocks[start:stop]:
            x = block(x)
        return x.flatten(1) if stop == len(self.blocks) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, stop: int = 4, batch_size: int = 1000) -> torch.Tensor:
    """Eval-mode features (BatchNorm running statistics) of ``images``, blocks 0 to ``stop``.

    Runs a channels-last copy of the model (faster convolutions; the cached model is left as it is).
    """
    fast = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    out = torch.cat([fast.features(images[i:i + batch_size].contiguous(memory_format=torch.channels_last), 0, stop)
                     for i in range(0, len(images), batch_size)])
    return out.contiguous()


def embed_pool(model: nn.Module, tasks: Sequence[Task], stop: int = 4) -> torch.Tensor:
    """Eval-mode features (blocks 0 to ``stop``) of every pool image the tasks use, computed once and
    indexed like the pool (rows of unused images are left uninitialised)."""
    pool = tasks[0].pool
    used = torch.unique(torch.cat([torch.cat([t.support_index, t.query_index]) for t in tasks]))
    feats = embed(model, pool[used], stop=stop)
    out = torch.empty(len(pool), *feats.shape[1:], device=pool.device, dtype=feats.dtype)
    out[used] = feats
    return out


def chunks(tasks: Sequence[Task], size: int) -> Iterator[tuple[list[Task], dict[str, torch.Tensor]]]:
    """Tasks ``size`` at a time, with their stacked support/query indices and support labels."""
    for i in range(0, len(tasks), size):
        chunk = list(tasks[i:i + size])
        yield chunk, {"support": torch.stack([t.support_index for t in chunk]),
                      "labels": torch.stack([t.support_labels for t in chunk]),
                      "query": torch.stack([t.query_index for t in chunk])}
