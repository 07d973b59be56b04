"""The contract every registered strategy must meet, generated from the registry: a new strategy is
checked by these tests without writing any."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from synthetic import make_images

from harness import registry
from harness.augment import to_float
from harness.episodes import EpisodeSet
from harness.strategy import SourceData

NAMES = sorted(registry.load_all())
WAYS, QUERIES, EPISODES = 5, 6, 4
_SOURCE_MODELS: dict[str, torch.nn.Module] = {}


@pytest.fixture(scope="module")
def synthetic():
    images, labels = make_images(24, seed=3)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    base = labels < 5
    return {"base_images": nchw[base], "base_labels": torch.from_numpy(labels[base]),
            "pool": to_float(nchw[~base]), "pool_labels": labels[~base]}


def make_strategy(name: str):
    entry = registry.get(name)
    if not entry.available():
        pytest.fail(f"{name} needs {entry.requires}, which the dev install should provide")
    return entry.load()()


def source_model(strategy, synthetic) -> torch.nn.Module:
    key = repr(strategy.source)
    if key not in _SOURCE_MODELS:
        phase = strategy.source
        labels = synthetic["base_labels"] if phase.uses_labels else None
        data = SourceData(synthetic["base_images"], labels, 5, torch.device("cpu"), 0, lambda n: None)
        _SOURCE_MODELS[key] = phase.train(data, 512).eval()
    return _SOURCE_MODELS[key]


def episodes(synthetic, shots: int) -> EpisodeSet:
    return EpisodeSet.draw(synthetic["pool_labels"], (5, 6, 7, 8, 9), WAYS, shots, QUERIES, EPISODES, seed=1)


def as_logits(outputs: list) -> list[torch.Tensor]:
    """Episode outputs are logits or dicts with "logits" (and extra named logits)."""
    return [o["logits"] if isinstance(o, dict) else o for o in outputs]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shots", [1, 5])
def test_contract(name, shots, synthetic):
    strategy = make_strategy(name)
    model = source_model(strategy, synthetic)
    before = copy.deepcopy(model.state_dict())
    es = episodes(synthetic, shots)
    tasks = es.tasks(synthetic["pool"])
    ticks = []
    logits = as_logits(strategy.run_episodes(model, tasks, ticks.append))

    # shape and finiteness, one result per episode, progress reported for each episode
    assert len(logits) == EPISODES and sum(ticks) == EPISODES
    for lg in logits:
        assert lg.shape == (WAYS * QUERIES, WAYS) and torch.isfinite(lg).all()
    # the cached source model is never modified (parameters and BatchNorm statistics)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), f"{name} modified the source model"
    # determinism under a fixed seed
    again = as_logits(strategy.run_episodes(model, tasks))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(logits, again, strict=True))
    # the single-episode path agrees with the batched one
    torch.manual_seed(tasks[0].seed)
    single = as_logits([strategy.run_episode(model, tasks[0])])[0]
    assert (single.argmax(1) == logits[0].argmax(1)).float().mean() > 0.9
    # better than chance on easy episodes
    accuracy = es.accuracies([lg.argmax(1) for lg in logits]).mean()
    assert accuracy > 0.6, f"{name} {shots}-shot accuracy {accuracy:.2f} on easy synthetic episodes"


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_are_plain_dataclass_fields(name):
    strategy = make_strategy(name)
    params = strategy.params()
    assert "source" not in params
    assert isinstance(strategy.source.params(), dict)
    assert type(strategy).family in {"transfer", "meta-learning", "self-supervised", "adversarial"}
    assert type(strategy).episode_phase and registry.get(name).description


@pytest.mark.parametrize("name", NAMES)
def test_strategy_never_sees_query_labels(name, synthetic):
    """Scrambling the pool labels the harness keeps changes nothing the strategy computes."""
    strategy = make_strategy(name)
    model = source_model(strategy, synthetic)
    es = episodes(synthetic, 1)
    tasks = es.tasks(synthetic["pool"])
    first = as_logits(strategy.run_episodes(model, tasks))
    for e in es.episodes:  # the harness-side query labels are replaced by garbage
        e.query_labels[:] = np.random.default_rng(0).integers(0, WAYS, len(e.query_labels))
    second = as_logits(strategy.run_episodes(model, tasks))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(first, second, strict=True))
