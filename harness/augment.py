"""Batched image operations on the device: normalisation (with the dataset's channel statistics),
random crop with padding, horizontal flip, SimCLR views.

No per-image Python loop: every function takes a whole batch (N, 3, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from harness.errors import UsageError

#: a dataset's per-channel mean or standard deviation in [0, 1] pixel units (``FewShotData.mean``/``std``)
Stats = Sequence[float]

#: values of every training pretrainer's ``augment`` field: what its training loop does to base images
AUGMENTS = ("crop+flip", "none")


def check_augment(phase: str, value: str) -> None:
    """One-line UsageError for an ``augment`` value that is not one of :data:`AUGMENTS`."""
    if value not in AUGMENTS:
        raise UsageError(f"{phase}: source.augment must be one of {', '.join(repr(a) for a in AUGMENTS)}, "
                         f"got {value!r}")


def crop_flip(images: torch.Tensor, augment: str, generator: torch.Generator | None = None,
              padding: int = 4) -> torch.Tensor:
    """The pretrainers' shared base-image augmentation: random crop (reflect ``padding``) then horizontal flip
    with ``augment == "crop+flip"``; the images unchanged with ``"none"``."""
    if augment == "none":
        return images
    return random_flip(random_crop(images, padding, generator), generator)


def to_float(images: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 normalised with the dataset's channel statistics (``FewShotData.mean``/``std``)."""
    m = torch.tensor(tuple(mean), device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(tuple(std), device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad by ``padding`` (reflect) and crop back to the original size at a random offset per image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (n,), device=images.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=images.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (n,1,h,1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (n,1,1,w)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


# --- SimCLR views (Chen et al. 2020): pixel-space ops on [0, 1] float batches -----------------------


def normalize(pixels: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """[0, 1] float pixels -> normalised with the channel statistics (as :func:`to_float`)."""
    m = torch.tensor(tuple(mean), device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    s = torch.tensor(tuple(std), device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - m) / s


def denormalize(images: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """Normalised images -> [0, 1] float pixels (the inverse of :func:`normalize`)."""
    m = torch.tensor(tuple(mean), device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(tuple(std), device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images * s + m


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=like.device, generator=generator)


def random_resized_crop(pixels: torch.Tensor, scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop a random area fraction ``scale`` and aspect ``ratio`` of each image, resize back (bilinear)."""
    n = pixels.shape[0]
    area = _uniform(n, *scale, pixels, generator)
    aspect = torch.exp(_uniform(n, math.log(ratio[0]), math.log(ratio[1]), pixels, generator))
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width and height as fractions of the side
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = _uniform(n, -1.0, 1.0, pixels, generator) * (1 - w)  # centre in [-1, 1] grid coordinates
    cy = _uniform(n, -1.0, 1.0, pixels, generator) * (1 - h)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(pixels: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels * weights).sum(1, keepdim=True)


def color_jitter(pixels: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability ``p`` per image: brightness, contrast, saturation factors in [1-s, 1+s] and a hue
    rotation by up to ``hue`` turns (in YIQ space), in that fixed order; clamped to [0, 1]."""
    n = pixels.shape[0]

    def factor(s: float) -> torch.Tensor:
        return _uniform(n, 1 - s, 1 + s, pixels, generator).view(n, 1, 1, 1)

    x = (pixels * factor(brightness)).clamp(0, 1)
    mean = _gray(x).mean((2, 3), keepdim=True)
    x = (mean + (x - mean) * factor(contrast)).clamp(0, 1)
    gray = _gray(x)
    x = (gray + (x - gray) * factor(saturation)).clamp(0, 1)
    angle = _uniform(n, -hue, hue, pixels, generator) * 2 * math.pi
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=x.device, dtype=x.dtype)
    cos, sin, one, zero = torch.cos(angle), torch.sin(angle), torch.ones_like(angle), torch.zeros_like(angle)
    rotate = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                          torch.stack([zero, sin, cos], 1)], 1)  # (n, 3, 3) about the luma axis
    mix = torch.linalg.inv(to_yiq) @ rotate @ to_yiq
    x = torch.einsum("nij,njhw->nihw", mix, x).clamp(0, 1)
    apply = torch.rand(n, device=pixels.device, generator=generator) < p
    return torch.where(apply[:, None, None, None], x, pixels)


def random_grayscale(pixels: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each image by its luma (on all three channels) with probability ``p``."""
    apply = torch.rand(pixels.shape[0], device=pixels.device, generator=generator) < p
    return torch.where(apply[:, None, None, None], _gray(pixels).expand_as(pixels), pixels)


def simclr_view(images: torch.Tensor, generator: torch.Generator | None, mean: Stats, std: Stats,
                geometric: bool = True) -> torch.Tensor:
    """One SimCLR view of a uint8 batch: resized crop, flip, colour jitter, grayscale; normalised. With
    ``geometric=False`` no crop and no flip (the photometric part of the view only)."""
    x = images.float() / 255.0
    if geometric:
        x = random_flip(random_resized_crop(x, generator=generator), generator)
    return normalize(random_grayscale(color_jitter(x, generator=generator), generator=generator), mean, std)
