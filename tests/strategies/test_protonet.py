"""ProtoNet: logits are negative squared Euclidean distances to the class means of the support set."""

from __future__ import annotations

import torch

from harness.augment import to_float
from harness.episodes import EpisodeSet
from strategies.backbones import Conv4
from strategies.protonet import Protonet, ProtonetTraining


def test_logits_are_negative_squared_distances_to_class_means():
    torch.manual_seed(0)
    model = Conv4(0, width=8).eval()
    pool = to_float(torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8))
    labels = torch.arange(5).repeat(12).numpy()
    es = EpisodeSet.draw(labels, (0, 1, 2, 3, 4), 5, 3, 4, 3, seed=0)
    tasks = es.tasks(pool)
    for bn_mode in ("inductive", "transductive"):
        logits = Protonet(source=ProtonetTraining(bn_mode=bn_mode)).run_episodes(model, tasks)
        for task, lg in zip(tasks, logits, strict=True):
            images = torch.cat([task.support_images, task.query_images])
            model.train(bn_mode == "transductive")  # transductive: batch statistics of support + query
            with torch.no_grad():
                feats = model(images).double()
            model.eval()
            support, query = feats[:len(task.support_index)], feats[len(task.support_index):]
            means = torch.stack([support[task.support_labels == c].mean(0) for c in range(5)])
            expected = torch.stack([torch.stack([-((q - m) ** 2).sum() for m in means]) for q in query])
            assert torch.allclose(lg.double(), expected, rtol=1e-4, atol=1e-3), bn_mode


def test_protocol_settings():
    assert Protonet().protocol_settings()["bn_mode"] == "inductive"
