"""Source-phase throughput in base images per second (a few steps each): supervised pretraining (the
baseline), rotation prediction (4 rotations per image), SimCLR (2 views + augmentations) and PGD
adversarial training (steps + 1 forward/backward passes per image).

    pytest tests/benchmarks/test_pretraining.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
from synthetic import make_images

from harness.phases import SourceData
from strategies.adversarial import AdversarialPretraining
from strategies.rotation import RotationPretraining
from strategies.simclr import SimclrPretraining
from strategies.supervised import SupervisedPretraining

BATCH, STEPS = 64, 3
PHASES = {"supervised": SupervisedPretraining, "rotation": RotationPretraining, "simclr": SimclrPretraining,
          "adversarial": AdversarialPretraining}


@pytest.fixture(scope="module")
def base():
    images, labels = make_images(52, seed=0, classes=5)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


@pytest.mark.parametrize("name", list(PHASES))
def test_source_phase_images_per_second(benchmark, base, name):
    phase = PHASES[name](batch_size=BATCH)
    images, labels = base
    data = SourceData(images, labels if phase.uses_labels else None, 5, torch.device("cpu"), 0)
    budget = BATCH * STEPS
    model = benchmark.pedantic(phase.train, args=(data, budget), rounds=2, warmup_rounds=1)
    if benchmark.stats is not None:  # absent with --benchmark-disable
        benchmark.extra_info["images_per_second"] = budget / benchmark.stats.stats.mean
    assert all(torch.isfinite(p).all() for p in model.parameters())
