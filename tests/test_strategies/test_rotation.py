"""Rotation prediction: rotated images and labels match torch.rot90; the phase never sees labels."""

from __future__ import annotations

import torch
from synthetic import train_on_small_pool

from strategies.rotation import RotationPretraining, rotate_batch


def test_rotate_batch_matches_rot90():
    images = torch.randn(3, 3, 8, 8)
    rotated, labels = rotate_batch(images)
    assert rotated.shape == (12, 3, 8, 8) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for image, label, i in zip(rotated, labels, range(12), strict=True):
        assert torch.equal(image, torch.rot90(images[i % 3], int(label), dims=(1, 2)))
    # the four rotations of one image are different (90 degrees is a counter-clockwise quarter turn)
    assert torch.equal(rotated[3], images[0].transpose(1, 2).flip(1))


def _train(labels):
    return train_on_small_pool(RotationPretraining(batch_size=16), labels)


def test_source_phase_cannot_see_labels():
    assert RotationPretraining.uses_labels is False
    blind = _train(None)  # the harness passes labels=None
    poisoned = _train(torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(1)))
    assert blind.head.out_features == 4  # the head predicts rotations, not the 5 base classes
    for (name, a), b in zip(blind.state_dict().items(), poisoned.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
