"""A pretraining loop shared by source phases that differ only in their loss on a batch (supervised,
rotation prediction, SimCLR, adversarial training): SGD with Nesterov momentum, a linear warm-up then
linear decay of the learning rate, minibatches drawn epoch by epoch.

``budget_images`` counts images through a forward+backward pass of the backbone: a base image counts once
per pass its loss makes (four rotations, two SimCLR views, steps + 1 for a PGD example). The harness sets it
from the phase's FLOP budget and its measured FLOPs per such image (harness/budgets.py), so passes that cost
less or more than a training pass (a PGD attack step) are priced at what they cost. Base images are
augmented with ``augment`` (crop+flip or none, harness/augment.py crop_flip). Precision (fp32 or bf16
autocast) is set by the harness around :meth:`Pretrainer.train`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from harness.augment import check_augment
from harness.errors import UsageError
from harness.phases import Pretrainer, SourceData


def lr_at(step: int, total: int, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` fraction of steps, then linear decay to zero."""
    rise = max(1, int(total * warmup))
    if step < rise:
        return peak * (step + 1) / rise
    return peak * max(0.0, (total - step) / max(1, total - rise))


def minibatches(n: int, batch_size: int, steps: int, generator: torch.Generator, device: torch.device):
    """Indices of ``steps`` batches, epoch by epoch, each epoch a fresh permutation. On a GPU the
    permutations are drawn there (from a device generator with the same seed): no host copies per step."""
    if device.type == "cuda":
        generator = torch.Generator(device=device).manual_seed(generator.initial_seed())
    order = torch.empty(0, dtype=torch.long, device=generator.device)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator, device=generator.device)])
        yield order[:batch_size].to(device)
        order = order[batch_size:]


@dataclass
class SgdSettings:
    """SGD with Nesterov momentum on minibatches of base images, crop+flip augmented: the settings (and their check)
    of every SGD source phase, the PyTorch ones below and the Keras one (strategies/keras_backbone.py)."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "crop+flip"  # base-image augmentation: "crop+flip" or "none" (harness/augment.py crop_flip)

    def check_sgd(self, phase_name: str) -> None:
        check_augment(phase_name, self.augment)
        if self.batch_size < 1 or self.lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise UsageError(f"{phase_name}: need source.batch_size >= 1, source.lr > 0, 0 <= source.momentum < 1 "
                             f"and source.weight_decay >= 0 (got {self.batch_size}, {self.lr:g}, {self.momentum:g}, "
                             f"{self.weight_decay:g})")


@dataclass
class SgdPretraining(SgdSettings, Pretrainer):
    """A source phase trained with SGD on minibatches of base images; subclasses define the loss."""

    def check(self) -> None:
        super().check()
        self.check_sgd(self.phase_name)

    def passes_per_image(self) -> int:
        """Forward+backward passes of the backbone per base image drawn (views, rotations, attack steps)."""
        return 1

    def head_classes(self, data: SourceData) -> int:
        """Outputs of the backbone's head: the base classes by default. Override."""
        return data.num_classes

    def training_model(self, data: SourceData) -> nn.Module:
        """What the optimiser trains: the backbone, or it plus a training-only part. Override."""
        return self.build_backbone(self.head_classes(data), data)

    @abstractmethod
    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
             generator: torch.Generator, data: SourceData) -> torch.Tensor:
        """The loss of one batch of uint8 ``images`` (and ``labels`` when the phase uses them)."""

    def finish(self, model: nn.Module) -> nn.Module:
        """The trained model -> the backbone kept in the cache (e.g. drop a projection head). Override."""
        return model

    def train(self, data: SourceData, budget_images: int) -> nn.Module:
        torch.manual_seed(data.seed)
        generator = torch.Generator().manual_seed(data.seed)
        device_generator = torch.Generator(device=data.device).manual_seed(data.seed)  # augmentations
        model = self.training_model(data).to(data.device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay, nesterov=True)
        passes = self.passes_per_image()
        steps = max(1, math.ceil(budget_images / (self.batch_size * passes)))
        model.train()
        for step, idx in enumerate(minibatches(len(data.images), self.batch_size, steps, generator,
                                               data.device)):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, self.lr)
            labels = data.labels[idx] if self.uses_labels else None
            loss = self.loss(model, data.images[idx], labels, device_generator, data)
            if step % 25 == 0 and not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at step {step}; lower source.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            data.progress(len(idx) * passes)
        return self.finish(model).to(memory_format=torch.contiguous_format)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)
