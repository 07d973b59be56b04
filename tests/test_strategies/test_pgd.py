"""PGD: the perturbation stays in the epsilon-ball (pixel units) and in [0, 1]; it raises the loss of a
trained model; zero steps returns the clean input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from synthetic import MEAN, STD, make_images
from torch import nn

from harness.augment import denormalize, to_float
from strategies.pgd import PGD, episode_uniform, pgd_attack


@pytest.fixture(scope="module")
def toy():
    """A linear classifier trained on two synthetic classes, and its training data."""
    images, labels = make_images(20, seed=0, classes=2)
    x = to_float(torch.from_numpy(images).permute(0, 3, 1, 2), MEAN, STD)
    y = torch.from_numpy(labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, x, y


def test_perturbation_within_epsilon_and_valid_range(toy):
    model, x, y = toy
    attack = PGD(epsilon=8 / 255, step_size=2 / 255, steps=5)
    adv = pgd_attack(model, x, y, attack, generator=torch.Generator().manual_seed(0), mean=MEAN, std=STD)
    clean, attacked = denormalize(x, MEAN, STD), denormalize(adv, MEAN, STD)
    assert (attacked - clean).abs().max() <= attack.epsilon + 1e-5
    assert attacked.min() >= -1e-5 and attacked.max() <= 1 + 1e-5
    assert (attacked - clean).abs().max() > attack.epsilon / 2  # it did move


def test_valid_range_holds_for_saturated_pixels():
    x = to_float(torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(3 * 32 * 16).view(1, 3, 32, 32), MEAN,
                 STD)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    adv = denormalize(pgd_attack(model, x, torch.tensor([0]), PGD(0.1, 0.05, 3), mean=MEAN, std=STD), MEAN, STD)
    assert adv.min() >= -1e-5 and adv.max() <= 1 + 1e-5


def test_attack_raises_loss_of_trained_model(toy):
    model, x, y = toy
    with torch.no_grad():
        clean_loss = F.cross_entropy(model(x), y)
        adv = pgd_attack(model, x, y, PGD(8 / 255, 2 / 255, 5), mean=MEAN, std=STD)
        attacked_loss = F.cross_entropy(model(adv), y)
    assert attacked_loss > 2 * clean_loss, (clean_loss, attacked_loss)
    # more steps do not weaken the attack (on a linear model the optimum is reached quickly)
    stronger = F.cross_entropy(model(pgd_attack(model, x, y, PGD(8 / 255, 2 / 255, 10), mean=MEAN, std=STD)), y)
    assert stronger >= attacked_loss - 1e-3


def test_zero_steps_returns_clean_input(toy):
    model, x, y = toy
    assert torch.equal(pgd_attack(model, x, y, PGD(8 / 255, 2 / 255, 0), mean=MEAN, std=STD), x)


def test_no_parameter_gradients_accumulate(toy):
    model, x, y = toy
    model.zero_grad(set_to_none=True)
    pgd_attack(model, x, y, PGD(), mean=MEAN, std=STD)
    assert all(p.grad is None for p in model.parameters())


def test_explicit_start_replaces_the_generator_draw(toy):
    model, x, y = toy
    attack = PGD(8 / 255, 2 / 255, 3)
    start = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    with_start = pgd_attack(model, x, y, attack, start=start, generator=torch.Generator().manual_seed(0), mean=MEAN,
                            std=STD)
    same_draw = pgd_attack(model, x, y, attack, generator=torch.Generator().manual_seed(3), mean=MEAN, std=STD)
    other_draw = pgd_attack(model, x, y, attack, generator=torch.Generator().manual_seed(0), mean=MEAN, std=STD)
    assert torch.equal(with_start, same_draw) and not torch.equal(with_start, other_draw)


def test_episode_uniform_depends_on_each_episode_seed_only():
    batch = episode_uniform([5, 9, 11], (2, 3), torch.device("cpu"))
    assert batch.shape == (3, 2, 3) and batch.min() >= 0 and batch.max() < 1
    assert torch.equal(batch[1], episode_uniform([9], (2, 3), torch.device("cpu"))[0])
    assert torch.equal(batch[1], episode_uniform([1, 9], (2, 3), torch.device("cpu"))[1])
    assert not torch.equal(batch[0], batch[1])
