"""The Keras rows run their PyTorch twins' algorithms, so a gap between them is the framework's: the probe
reaches the PyTorch probe's optimum on identical features; fine-tuning has the twin's hyperparameters,
head initialisation, optimiser and normalisation; and on one Keras-pretrained model (converted to a PyTorch
Conv-4) the PyTorch episode phases give the Keras rows' accuracies (the framework-isolating check). Their
episode FLOPs are counted on the twin (Adapter.episode_flops)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import MEAN, SOURCE_PROTOCOL, STD, index_keys, make_images

from harness.augment import to_float
from harness.episodes import EpisodeSet
from harness.flops import counted
from harness.phases import SourceData
from harness.stats import difference
from harness.suite import get_row

pytestmark = pytest.mark.slow  # end to end or training-heavy: `pytest -m "not slow"` skips it


def objective(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, C: float) -> np.ndarray:
    """Each problem's mean cross-entropy on L2-normalised features + ||W||^2 / (2 C n), in float64."""
    xn = F.normalize(torch.from_numpy(x).double(), dim=-1)
    logits = xn @ torch.from_numpy(w).double().transpose(1, 2) + torch.from_numpy(b).double()[:, None]
    n = x.shape[1]
    ce = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten(), reduction="none").view(len(x), n)
    return (ce.mean(1) + (torch.from_numpy(w).double() ** 2).sum((1, 2)) / (2 * C * n)).numpy()


@pytest.mark.parametrize("shots,dim", [(1, 256), (5, 256), (5, 16)])
def test_keras_probe_reaches_the_pytorch_probe_optimum(shots, dim):
    from strategies import keras_logistic
    from strategies.probe import apply_probe, fit_probe

    rng = np.random.default_rng(shots + dim)
    batch, ways, C = 12, 5, 10.0
    centres = rng.normal(size=(batch, ways, dim))
    y = np.stack([rng.permutation(np.repeat(np.arange(ways), shots)) for _ in range(batch)])
    x = np.maximum(0, np.take_along_axis(centres, y[..., None], 1) + rng.normal(size=(batch, ways * shots, dim)))
    x, query = x.astype(np.float32), np.maximum(0, rng.normal(size=(batch, 60, dim))).astype(np.float32)

    w_torch, b_torch = fit_probe(torch.from_numpy(x), torch.from_numpy(y), ways, C, 100, 1e-6)
    w_keras, b_keras = (t.numpy() for t in keras_logistic.fit_probe(x, y, ways, C, 100, 1e-6))
    f_torch, f_keras = objective(x, y, w_torch.numpy(), b_torch.numpy(), C), objective(x, y, w_keras, b_keras, C)
    assert np.all(np.abs(f_keras - f_torch) <= 1e-4 * np.abs(f_torch)), (f_keras, f_torch)
    torch_pred = apply_probe(torch.from_numpy(query), w_torch, b_torch).argmax(-1).numpy()
    keras_logits = keras_logistic.apply_probe(query, *keras_logistic.fit_probe(x, y, ways, C, 100, 1e-6)).numpy()
    np.testing.assert_array_equal(keras_logits.argmax(-1), torch_pred)
    np.testing.assert_allclose(b_keras.sum(-1), 0, atol=1e-9)  # the unpenalised bias: one optimum, as PyTorch's
    # each problem is solved on its own: alone it gets the same solution as in the batch
    w_alone, _ = keras_logistic.fit_probe(x[3:4], y[3:4], ways, C, 100, 1e-6)
    np.testing.assert_allclose(w_alone.numpy()[0], w_keras[3], atol=1e-10)


def test_keras_rows_have_their_twins_hyperparameters():
    pairs = {"keras-frozen-features": "frozen-features", "keras-partial-finetune": "partial-finetune"}
    for keras_name, torch_name in pairs.items():
        keras_row, torch_row = get_row(keras_name).build(), get_row(torch_name).build()
        assert keras_row.settings()["PyTorch twin"] == torch_name
        theirs = torch_row.adapter.params()
        mine = {k: v for k, v in keras_row.adapter.params().items() if k != "jit_compile"}
        assert mine == {k: theirs[k] for k in mine}, keras_name  # every shared field, the same default
        assert all(k.startswith("robust_") for k in set(theirs) - set(mine)), keras_name  # PGD evaluation only
        assert get_row(torch_name).source == "supervised"


@pytest.fixture(scope="module")
def keras_pretrained():
    """A Keras Conv-4 pretrained on blurred synthetic base classes, its PyTorch copy, and the novel pool (hard
    enough that accuracies are neither chance nor 100%)."""
    from strategies.keras_backbone import KerasSupervisedPretraining, to_torch

    images, labels = make_images(40, seed=3)
    rng = np.random.default_rng(0)  # each image blended with a random other one, plus noise
    noisy = 0.7 * images + 0.3 * images[rng.permutation(len(images))] + rng.normal(0, 40, images.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    nchw = torch.from_numpy(noisy).permute(0, 3, 1, 2).contiguous()
    base = labels < 5
    phase = KerasSupervisedPretraining(batch_size=32)
    weights = phase.train(SourceData(nchw[base], torch.from_numpy(labels[base]), 5, torch.device("cpu"), 0,
                                     **SOURCE_PROTOCOL), 1024)
    return phase, weights, to_torch(weights), to_float(nchw[~base], MEAN, STD), labels[~base]


@pytest.mark.parametrize("keras_name,shots", [("keras-frozen-features", 1), ("keras-frozen-features", 5),
                                               ("keras-partial-finetune", 1)])
def test_pytorch_episode_phase_on_keras_features_gives_the_keras_accuracy(keras_name, shots, keras_pretrained):
    """The framework-isolating check: the twin's episode phase on the same (Keras-pretrained) features."""
    phase, weights, torch_model, pool, labels = keras_pretrained
    keras_row = get_row(keras_name).build()
    twin = get_row(keras_row.settings()["PyTorch twin"]).build()
    es = EpisodeSet.draw(labels, (5, 6, 7, 8, 9), 5, shots, 10, 30, seed=2, data_fingerprint="",
                         content=index_keys(len(labels)))
    tasks = es.batch(pool, MEAN, STD)
    keras_logits = keras_row.adapter.adapt(weights, tasks, phase)
    torch_logits = twin.adapter.adapt(torch_model, tasks, phase)
    keras_acc = es.accuracies([lg.argmax(1) for lg in keras_logits])
    torch_acc = es.accuracies([lg.argmax(1) for lg in torch_logits])
    d = difference(keras_acc, torch_acc)
    agree = np.mean([float((a.argmax(1) == b.argmax(1)).float().mean())
                     for a, b in zip(keras_logits, torch_logits, strict=True)])
    gap = max(float((a - b).abs().max()) for a, b in zip(keras_logits, torch_logits, strict=True))
    print(f"\n{keras_name} {shots}-shot: Keras {100 * keras_acc.mean():.2f}%, PyTorch twin on the same features "
          f"{100 * torch_acc.mean():.2f}%, Δ {100 * d.delta:+.2f} pp [{100 * d.low:+.2f}, {100 * d.high:+.2f}], "
          f"predictions agree {100 * agree:.2f}%, max |Δ logit| {gap:.1e}")
    assert 0.3 < keras_acc.mean() < 1.0  # a meaningful comparison: neither chance nor perfect
    assert d.low <= 0 <= d.high and agree > 0.98 and gap < 1e-2


def test_keras_episode_flops_are_counted_on_the_pytorch_twin(keras_pretrained):
    phase, weights, torch_model, pool, labels = keras_pretrained
    tasks = EpisodeSet.draw(labels, (5, 6, 7, 8, 9), 5, 1, 10, 1, seed=2, data_fingerprint="",
                            content=index_keys(len(labels))).batch(pool, MEAN, STD)
    for name in ("keras-frozen-features", "keras-partial-finetune"):
        strategy = dataclasses.replace(get_row(name).build(), source=phase)
        twin = get_row(strategy.settings()["PyTorch twin"]).build()
        _, flops = strategy.warm_up(weights, tasks)
        _, expected = counted(lambda t=twin: t.run_episodes(torch_model, tasks))
        assert flops == expected > 0, name
    # a PyTorch row's FLOPs are counted on itself, as before
    twin = get_row("frozen-features").build()
    assert twin.warm_up(torch_model, tasks)[1] == counted(lambda: twin.run_episodes(torch_model, tasks))[1] > 0


def test_keras_conv4_converts_to_the_pytorch_one(keras_pretrained):
    from strategies.keras_backbone import to_keras, to_torch

    _, weights, _, _, _ = keras_pretrained
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    keras_logits = to_keras(weights, head=True)(x, training=False).numpy()
    torch_logits = to_torch(weights, head=True)(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(keras_logits, torch_logits, atol=1e-4, rtol=1e-4)
