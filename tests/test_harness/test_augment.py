"""SimCLR view operations: batched, in range, seeded, and the identity where their parameters say so."""

from __future__ import annotations

import torch
from synthetic import MEAN, STD

from harness.augment import (
    color_jitter,
    denormalize,
    normalize,
    random_grayscale,
    random_resized_crop,
    simclr_view,
    to_float,
)


def _pixels(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_normalize_round_trip_matches_to_float():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(normalize(images.float() / 255, MEAN, STD), to_float(images, MEAN, STD))
    assert torch.allclose(denormalize(to_float(images, MEAN, STD), MEAN, STD), images.float() / 255, atol=1e-6)


def test_full_crop_is_identity_and_small_crops_zoom():
    x = _pixels()
    assert torch.allclose(random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0)), x, atol=1e-5)
    zoomed = random_resized_crop(x, scale=(0.1, 0.1), generator=torch.Generator().manual_seed(0))
    assert zoomed.shape == x.shape and not torch.allclose(zoomed, x, atol=1e-2)


def test_colour_ops_stay_in_range_and_are_seeded():
    x = _pixels()
    a = color_jitter(x, p=1.0, generator=torch.Generator().manual_seed(1))
    b = color_jitter(x, p=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.allclose(a, x)
    assert torch.equal(color_jitter(x, p=0.0), x)
    assert torch.allclose(color_jitter(x, 0, 0, 0, 0, p=1.0), x, atol=1e-5)  # zero strengths: identity
    gray = random_grayscale(x, p=1.0)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


def test_simclr_views_differ_per_image_and_per_call():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    v1, v2 = simclr_view(images, g, MEAN, STD), simclr_view(images, g, MEAN, STD)
    assert v1.shape == (8, 3, 32, 32) and v1.dtype == torch.float32 and not torch.allclose(v1, v2)
    p = denormalize(v1, MEAN, STD)
    assert p.min() >= -1e-5 and p.max() <= 1 + 1e-5
