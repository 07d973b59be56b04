"""ProtoNet: logits are negative squared Euclidean distances to the class means of the support set."""

from __future__ import annotations

import copy

import pytest
import torch
from synthetic import MEAN, STD, index_keys

from harness.augment import to_float
from harness.backbone import build_backbone
from harness.episodes import EpisodeSet
from harness.phases import Strategy
from harness.suite import get_row
from strategies.protonet import ProtonetTraining, Prototypes


@pytest.mark.parametrize("backbone", ["conv4", "resnet12"])
def test_logits_are_negative_squared_distances_to_class_means(backbone):
    torch.manual_seed(0)
    model = build_backbone(backbone, 0, width=8).eval()
    pool = to_float(torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8), MEAN, STD)
    labels = torch.arange(5).repeat(12).numpy()
    es = EpisodeSet.draw(labels, (0, 1, 2, 3, 4), 5, 3, 4, 3, seed=0, data_fingerprint="",
                         content=index_keys(len(labels)))
    tasks = es.batch(pool, MEAN, STD)
    for bn_mode in ("inductive", "transductive"):
        source = ProtonetTraining(backbone=backbone, bn_mode=bn_mode)
        logits = Prototypes().adapt(model, tasks, source)
        assert len(logits) == len(tasks)
        for task, lg in zip(tasks, logits, strict=True):
            images = torch.cat([task.support_images, task.query_images])
            # transductive: batch statistics of the episode's support + query images; inductive: running ones
            reference = copy.deepcopy(model).train(bn_mode == "transductive")
            with torch.no_grad():
                feats = reference(images).double()
            n = len(task.support_labels)
            support, query = feats[:n], feats[n:]
            means = torch.stack([support[task.support_labels == c].mean(0) for c in range(5)])
            expected = torch.stack([torch.stack([-((q - m) ** 2).sum() for m in means]) for q in query])
            assert torch.allclose(lg.double(), expected, rtol=1e-4, atol=1e-3), (backbone, bn_mode)
    # the two modes differ, so the comparison tells them apart
    inductive = Prototypes().adapt(model, tasks, ProtonetTraining(bn_mode="inductive"))
    transductive = Prototypes().adapt(model, tasks, ProtonetTraining(bn_mode="transductive"))
    assert not torch.allclose(inductive[0], transductive[0], atol=1e-2)


def test_settings():
    strategy = get_row("protonet").build()
    assert isinstance(strategy, Strategy) and isinstance(strategy.adapter, Prototypes)
    settings = strategy.settings()
    assert settings["bn_mode"] == "inductive" and settings["inner_steps_eval"] == 0
    assert ProtonetTraining.per_shots and not ProtonetTraining.uses_ways and strategy.family == "meta-learning"
