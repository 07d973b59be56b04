"""Adversarial pretraining and the robust evaluation of the probe and fine-tuning episode phases."""

from __future__ import annotations

import pytest
import torch
from synthetic import make_images

from harness.augment import to_float
from harness.episodes import EpisodeSet
from harness.errors import UsageError
from harness.strategy import SourceData
from strategies.adversarial import AdversarialFinetune, AdversarialPretraining, AdversarialProbe
from strategies.frozen_features import FrozenFeatures
from strategies.partial_finetune import PartialFinetune


@pytest.fixture(scope="module")
def setup():
    images, labels = make_images(12, seed=3)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    base = labels < 5
    data = SourceData(nchw[base], torch.from_numpy(labels[base]), 5, torch.device("cpu"), 0, lambda n: None)
    model = AdversarialPretraining(batch_size=20).train(data, 120).eval()
    es = EpisodeSet.draw(labels[~base], (5, 6, 7, 8, 9), 5, 1, 4, 3, seed=1)
    return model, es, es.tasks(to_float(nchw[~base]))


def test_defaults_and_check():
    assert AdversarialProbe().source.epsilon == pytest.approx(2 / 255) and AdversarialProbe().source.steps == 3
    # robust evaluation is opt-in (costly on a CPU): the baseline rows are unchanged by default
    defaults = (AdversarialProbe, AdversarialFinetune, FrozenFeatures, PartialFinetune)
    assert not any(cls().robust_eval for cls in defaults)
    with pytest.raises(UsageError):
        AdversarialProbe(source=AdversarialPretraining(epsilon=-1.0)).check()


@pytest.mark.parametrize("cls", [FrozenFeatures, PartialFinetune])
def test_robust_eval_adds_robust_logits_and_leaves_clean_ones(cls, setup):
    model, es, tasks = setup
    kwargs = {"steps": 5} if cls is PartialFinetune else {}
    plain = cls(robust_eval=False, **kwargs).run_episodes(model, tasks)
    robust = cls(robust_eval=True, robust_epsilon=8 / 255, robust_step_size=4 / 255, **kwargs).run_episodes(
        model, tasks)
    assert all(isinstance(p, torch.Tensor) for p in plain)
    for p, r in zip(plain, robust, strict=True):
        assert torch.allclose(p, r["logits"], atol=1e-5) and r["robust"].shape == p.shape
    clean = es.accuracies([r["logits"].argmax(1) for r in robust]).mean()
    attacked = es.accuracies([r["robust"].argmax(1) for r in robust]).mean()
    assert attacked < clean  # an 8/255 attack flips some predictions
    # the single-episode path gives the same robust output
    torch.manual_seed(tasks[0].seed)
    single = cls(robust_eval=True, robust_epsilon=8 / 255, robust_step_size=4 / 255, **kwargs).run_episode(
        model, tasks[0])
    assert float((single["robust"].argmax(1) == robust[0]["robust"].argmax(1)).float().mean()) > 0.9
