"""Adversarial pretraining and the robust evaluation of the probe and fine-tuning adapters."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from synthetic import MEAN, SOURCE_PROTOCOL, STD, index_keys, make_images

from harness.augment import to_float
from harness.episodes import EpisodeSet
from harness.errors import UsageError
from harness.phases import SourceData, Strategy
from harness.suite import get_row
from strategies.adversarial import AdversarialPretraining
from strategies.finetune import PartialFinetune
from strategies.probe import LinearProbe


@pytest.fixture(scope="module")
def setup():
    images, labels = make_images(12, seed=3)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    base = labels < 5
    source = AdversarialPretraining(batch_size=20)
    data = SourceData(nchw[base], torch.from_numpy(labels[base]), 5, torch.device("cpu"), 0, **SOURCE_PROTOCOL)
    model = source.train(data, 120).eval()
    es = EpisodeSet.draw(labels[~base], (5, 6, 7, 8, 9), 5, 1, 4, 3, seed=1, data_fingerprint="",
                         content=index_keys(int((~base).sum())))
    pool = to_float(nchw[~base], MEAN, STD)
    return source, model, es, pool


def test_defaults_and_check():
    probe, finetune = get_row("adversarial-probe").build(), get_row("adversarial-finetune").build()
    for row in (probe, finetune):
        assert isinstance(row.source, AdversarialPretraining) and row.family == "adversarial"
        assert row.source.epsilon == pytest.approx(2 / 255) and row.source.steps == 3
        assert row.settings()["source PGD"] == "PGD eps 2/255, 3 x 1/255"
    assert isinstance(probe.adapter, LinearProbe) and isinstance(finetune.adapter, PartialFinetune)
    # robust evaluation is opt-in (costly on a CPU): the baseline rows are unchanged by default
    rows = ("adversarial-probe", "adversarial-finetune", "frozen-features", "partial-finetune")
    assert not any(get_row(n).build().adapter.robust_eval for n in rows)
    assert "robust eval" not in probe.settings()
    with pytest.raises(UsageError):
        Strategy("adversarial-probe", AdversarialPretraining(epsilon=-1.0), LinearProbe()).check()
    robust = Strategy("x", AdversarialPretraining(), LinearProbe(robust_eval=True, robust_epsilon=8 / 255))
    assert robust.settings()["robust eval"].startswith("PGD eps 8/255")


@pytest.mark.parametrize("cls", [LinearProbe, PartialFinetune])
def test_robust_eval_adds_robust_logits_and_leaves_clean_ones(cls, setup):
    source, model, es, pool = setup
    tasks = es.batch(pool, MEAN, STD)
    kwargs = {"steps": 5} if cls is PartialFinetune else {}
    plain = cls(robust_eval=False, **kwargs).adapt(model, tasks, source)
    adapter = cls(robust_eval=True, robust_epsilon=8 / 255, robust_step_size=4 / 255, **kwargs)
    robust = adapter.adapt(model, tasks, source)
    assert all(isinstance(p, torch.Tensor) for p in plain)
    for p, r in zip(plain, robust, strict=True):
        assert torch.allclose(p, r["logits"], atol=1e-5) and r["robust"].shape == p.shape
    scores = es.score(robust, cls.__name__)
    clean = es.accuracies([r["logits"].argmax(1) for r in robust]).mean()
    attacked = es.accuracies([r["robust"].argmax(1) for r in robust]).mean()
    assert attacked < clean  # an 8/255 attack flips some predictions
    # the harness reports the fraction right on both the clean and the attacked queries
    assert max(scores["extra_accuracies"]["robust"]) <= max(scores["episode_accuracies"])
    # a one-episode batch gives the same robust output (the random start comes from the episode's seed)
    (single,) = adapter.adapt(model, tasks[0:1], source)
    assert float((single["robust"].argmax(1) == robust[0]["robust"].argmax(1)).float().mean()) > 0.9
    # ... and so does the episode in a sealed batch of its own images only
    (alone,) = adapter.adapt(model, dataclasses.replace(es, episodes=es.episodes[:1]).batch(pool, MEAN, STD), source)
    assert torch.allclose(alone["logits"], robust[0]["logits"], atol=1e-4)
    # (signed-gradient steps turn rounding differences into small moves: compare the predictions)
    assert float((alone["robust"].argmax(1) == robust[0]["robust"].argmax(1)).float().mean()) > 0.9
