"""Supervised pretraining on the base classes: the source phase of the transfer baselines.

Cross-entropy, SGD with Nesterov momentum, a linear warm-up then linear decay of the learning rate,
random crop (reflect padding 4) and horizontal flip as batched tensor operations on the device.
The budget counts images processed, so it is the same whatever the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.augment import random_crop, random_flip, to_float
from harness.strategy import SourceData, SourcePhase
from strategies.backbones import Conv4


def lr_at(step: int, total: int, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` fraction of steps, then linear decay to zero."""
    rise = max(1, int(total * warmup))
    if step < rise:
        return peak * (step + 1) / rise
    return peak * max(0.0, (total - step) / max(1, total - rise))


def minibatches(n: int, batch_size: int, steps: int, generator: torch.Generator, device: torch.device):
    """Indices of ``steps`` batches, epoch by epoch, each epoch a fresh permutation."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        yield order[:batch_size].to(device)
        order = order[batch_size:]


@dataclass
class SupervisedPretraining(SourcePhase):
    """Cross-entropy on the base classes with crop+flip augmentation."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    label_smoothing: float = 0.0

    def build(self, num_classes: int) -> Conv4:
        return Conv4(num_classes)

    def train(self, data: SourceData, budget_images: int) -> Conv4:
        torch.manual_seed(data.seed)
        generator = torch.Generator().manual_seed(data.seed)
        model = self.build(data.num_classes).to(data.device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay, nesterov=True)
        steps = max(1, math.ceil(budget_images / self.batch_size))
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=data.device.type == "cuda")
        model.train()
        for step, idx in enumerate(minibatches(len(data.images), self.batch_size, steps, generator,
                                               data.device)):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, self.lr)
            x = random_flip(random_crop(to_float(data.images[idx]), 4))
            with autocast:
                loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)),
                                       data.labels[idx], label_smoothing=self.label_smoothing)
            if step % 25 == 0 and not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at step {step}; lower source.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            data.progress(len(idx))
        return model.to(memory_format=torch.contiguous_format)
