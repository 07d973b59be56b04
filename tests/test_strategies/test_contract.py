"""The contract every registered strategy must meet, generated from the registry: a new row is checked by
these tests without writing any. Each (pretrainer, adapter) row is built from the table with its defaults,
its source phase trained once per distinct source (small budget) and taken through the harness's cache
round trip (spec -> rebuild -> load_state_dict), then its adapter run on sealed batches of easy episodes."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from synthetic import MEAN, SOURCE_PROTOCOL, STD, index_keys, make_images

from harness.augment import to_float
from harness.episodes import EpisodeSet
from harness.phases import SourceData, Strategy, Unsupported, family_of
from harness.registry import BACKBONES, STRATEGIES
from harness.suite import get_row
from harness.units import for_shots
from harness.work import has_frozen_features
from strategies.backbones.resnet12 import ResNet12

# Rows of external pretraining need the user's model file: their contract runs on saved model files in
# tests/test_strategies/test_pretrained_rows.py (test_contract there).
NAMES = [n for n in STRATEGIES.names() if get_row(n).family != "external"]
WAYS, QUERIES, EPISODES = 5, 6, 4
NOVEL = (5, 6, 7, 8, 9)
FAMILIES = {"transfer", "meta-learning", "self-supervised", "adversarial", "external", "no-transfer"}
BUDGET = 512
_SOURCE_MODELS: dict[tuple, torch.nn.Module] = {}


def test_registry_lists_the_built_in_rows():
    assert len(NAMES) >= 14
    assert {"frozen-features", "partial-finetune", "maml", "fomaml", "reptile", "protonet", "ssl-rotation",
            "ssl-simclr", "adversarial-probe", "keras-frozen-features", "keras-partial-finetune"} <= set(NAMES)


@pytest.fixture(scope="module")
def synthetic():
    images, labels = make_images(24, seed=3)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    base = labels < 5
    return {"base_images": nchw[base], "base_labels": torch.from_numpy(labels[base]),
            "pool": to_float(nchw[~base], MEAN, STD), "pool_labels": labels[~base]}


class ResNet12W8(ResNet12):
    """ResNet-12 at width 8 whatever width it is asked for (build_backbone passes width=None)."""

    def __init__(self, num_classes: int = 0, width: int | None = None, image_size: int = 32):
        super().__init__(num_classes=num_classes, width=8, image_size=image_size)


@pytest.fixture(scope="module")
def resnet12_w8():
    BACKBONES.entries()  # the built-ins first, so adding a test entry never hides them
    BACKBONES.add("resnet12-w8", ResNet12W8, description="ResNet-12 at width 8 (tests only)")
    yield "resnet12-w8"
    BACKBONES.unregister("resnet12-w8")


def make_strategy(name: str) -> Strategy:
    row = get_row(name)
    if not row.available():
        pytest.fail(f"{name} needs {row.requires}, which the dev install should provide")
    strategy = row.build()
    assert isinstance(strategy, Strategy) and strategy.name == name
    return strategy


def source_model(strategy: Strategy, synthetic, shots: int) -> torch.nn.Module:
    """The source model as the harness hands it to the adapter: trained (SourceData as the harness builds
    it), stored as spec + state dict, rebuilt, loaded and put in eval mode. Cached per distinct source."""
    phase = for_shots(strategy, shots).source  # a per-shots phase trains for the evaluation's shots
    key = (type(phase), repr(phase))
    if key not in _SOURCE_MODELS:
        labels = synthetic["base_labels"] if phase.uses_labels else None
        data = SourceData(synthetic["base_images"], labels, 5, torch.device("cpu"), 0,
                          **{**SOURCE_PROTOCOL, "ways": WAYS})
        trained = phase.train(data, BUDGET)
        model = phase.rebuild(phase.spec(trained))
        model.load_state_dict({k: v.detach().cpu().clone() for k, v in trained.state_dict().items()})
        _SOURCE_MODELS[key] = model.eval()
    return _SOURCE_MODELS[key]


def episodes(synthetic, shots: int) -> EpisodeSet:
    labels = synthetic["pool_labels"]
    return EpisodeSet.draw(labels, NOVEL, WAYS, shots, QUERIES, EPISODES, seed=1, data_fingerprint="",
                           content=index_keys(len(labels)))


def as_logits(outputs: list) -> list[torch.Tensor]:
    """Episode outputs are logits or dicts with "logits" (and extra named logits)."""
    return [o["logits"] if isinstance(o, dict) else o for o in outputs]


def check_outputs(name: str, logits: list, es: EpisodeSet) -> None:
    assert len(logits) == len(es.episodes)
    for lg in logits:
        assert isinstance(lg, torch.Tensor) and lg.shape == (WAYS * QUERIES, WAYS), (name, tuple(lg.shape))
        assert torch.isfinite(lg).all(), name
    es.score(logits, name)  # the harness's own checks accept them


def accuracy(es: EpisodeSet, logits: list) -> float:
    return float(es.accuracies([lg.argmax(1) for lg in logits]).mean())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shots", [1, pytest.param(5, marks=pytest.mark.slow)])  # 5-shot: full suite
def test_contract(name, shots, synthetic):
    strategy = make_strategy(name)
    strategy.check()
    model = source_model(strategy, synthetic, shots)
    before = copy.deepcopy(model.state_dict())
    es = episodes(synthetic, shots)
    tasks = es.batch(synthetic["pool"], MEAN, STD)
    ticks: list[int] = []
    outputs = strategy.run_episodes(model, tasks, ticks.append)
    logits = as_logits(outputs)

    # shape and finiteness, one result per episode, progress reported for each episode
    check_outputs(name, logits, es)
    assert sum(ticks) == EPISODES and all(t > 0 for t in ticks), ticks
    # the cached source model is never modified (parameters and BatchNorm statistics)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), f"{name} modified the source model"
    assert not model.training, f"{name} left the source model in training mode"
    # determinism under a fixed seed
    again = as_logits(strategy.run_episodes(model, tasks))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(logits, again, strict=True)), name
    # a one-episode batch agrees with the batched run
    single = as_logits(strategy.run_episodes(model, tasks[0:1]))
    assert len(single) == 1
    agreement = float((single[0].argmax(1) == logits[0].argmax(1)).float().mean())
    assert agreement > 0.9, f"{name}: one-episode batch agrees on {agreement:.2f} of the queries"
    # frozen features as the harness hands them over (computed once, on every image, by the model as loaded)
    # give the same logits as the adapter computing them itself
    if has_frozen_features(strategy):
        features = strategy.adapter.frozen_features(model, tasks.images, strategy.source)
        if features is not None:
            assert len(features) == len(tasks.images), name
            handed = as_logits(strategy.run_episodes(model, dataclasses.replace(tasks, features=features)))
            assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(logits, handed, strict=True)), name
    # better than chance (0.2) on easy episodes
    acc = accuracy(es, logits)
    assert acc > 0.6, f"{name} {shots}-shot accuracy {acc:.2f} on easy synthetic episodes"


@pytest.mark.slow  # the fast suite keeps the one-episode-batch check of test_contract
@pytest.mark.parametrize("name", NAMES)
def test_episode_output_does_not_depend_on_the_rest_of_the_batch(name, synthetic):
    """Each episode batched with episodes 0-3 and alone, in a sealed batch of its own (other images, another
    order): the adapter contract says an episode's output never depends on the other episodes."""
    strategy = make_strategy(name)
    model = source_model(strategy, synthetic, 1)
    es = episodes(synthetic, 1)
    batch = es.batch(synthetic["pool"], MEAN, STD)
    together = as_logits(strategy.run_episodes(model, batch))
    for i in (1, 0, 2, 3):  # episode 1 first: neither the first nor the last of its batch
        alone_tasks = dataclasses.replace(es, episodes=[es.episodes[i]]).batch(synthetic["pool"], MEAN, STD)
        assert len(alone_tasks.images) < len(batch.images)  # a different batch indeed
        (alone,) = as_logits(strategy.run_episodes(model, alone_tasks))
        if name.startswith("keras-"):  # TensorFlow kernels: agreement of the predictions
            agreement = float((alone.argmax(1) == together[i].argmax(1)).float().mean())
            assert agreement > 0.95, f"{name} episode {i}: {agreement:.2f}"
        else:
            # float32 sums in another order when the batch differs; fine-tuning carries that over its steps (seen:
            # 1.5e-4 on logits of about 2.4 for torch-finetune-on-keras); a real dependence moves them by far more
            diff = float((alone - together[i]).abs().max())
            assert torch.allclose(alone, together[i], atol=5e-4), f"{name} episode {i}: max difference {diff:.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_strategy_never_sees_query_labels(name, synthetic):
    """Scrambling the query labels the harness keeps changes nothing the strategy gets or computes."""
    strategy = make_strategy(name)
    model = source_model(strategy, synthetic, 1)
    es = episodes(synthetic, 1)
    first = as_logits(strategy.run_episodes(model, es.batch(synthetic["pool"], MEAN, STD)))
    rng = np.random.default_rng(0)
    scrambled = dataclasses.replace(es, episodes=[
        dataclasses.replace(e, query_labels=rng.permutation(e.query_labels) if i % 2 else (e.query_labels + 1) % WAYS)
        for i, e in enumerate(es.episodes)])
    assert any((a.query_labels != b.query_labels).any() for a, b in zip(es.episodes, scrambled.episodes, strict=True))
    second = as_logits(strategy.run_episodes(model, scrambled.batch(synthetic["pool"], MEAN, STD)))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(first, second, strict=True)), name
    assert accuracy(scrambled, second) != accuracy(es, first)  # the scoring does read the labels


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_are_plain_dataclass_fields(name):
    row = get_row(name)
    strategy = make_strategy(name)
    for part in (strategy.source, strategy.adapter):
        assert dataclasses.is_dataclass(part), type(part)
        for f in dataclasses.fields(part):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, \
                f"{type(part).__name__}.{f.name} has no default"
    # the row's values rebuild from the plain fields (what --set and the config file override)
    assert type(strategy.source)(**strategy.source.params()) == strategy.source
    assert type(strategy.adapter)(**strategy.params()) == strategy.adapter
    assert "source" not in strategy.params() and isinstance(strategy.settings(), dict)
    # the family is declared once, in the lazy table, and the built strategy (and its class's lookup) agree with it
    assert row.family == strategy.family == family_of(type(strategy.source))
    assert strategy.family in FAMILIES
    assert row.description and STRATEGIES.get(name).description
    assert strategy.source.describe() and strategy.episode_phase()
    assert strategy.source.backbone == ("pixels" if name == "pixels-probe" else "conv4")  # pixels: no network


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_runs_on_a_tiny_resnet12(name, synthetic, resnet12_w8):
    strategy = make_strategy(name)
    strategy = dataclasses.replace(strategy, source=dataclasses.replace(strategy.source, backbone=resnet12_w8))
    if not type(strategy.source).any_backbone:  # the Keras Conv-4 rows and their framework checks
        with pytest.raises(Unsupported, match="pixels" if name == "pixels-probe" else "conv4"):
            strategy.check()
        return
    strategy.check()
    model = source_model(strategy, synthetic, 1)
    assert isinstance(model, ResNet12W8) and model.spec["name"] == resnet12_w8
    es = episodes(synthetic, 1)
    logits = as_logits(strategy.run_episodes(model, es.batch(synthetic["pool"], MEAN, STD)))
    check_outputs(name, logits, es)
    acc = accuracy(es, logits)
    assert acc > 0.6, f"{name} on ResNet-12 (width 8): 1-shot accuracy {acc:.2f} on easy synthetic episodes"
