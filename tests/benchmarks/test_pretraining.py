"""Source-phase throughput (a few steps each, after a warm-up round), in images processed and in base
images per second: supervised pretraining (the baseline), rotation prediction (4 rotations per image),
SimCLR (2 views + augmentations) and PGD adversarial training (steps + 1 forward/backward passes per
image). On ``$HARNESS_BENCH_DEVICE`` (default cpu).

    pytest tests/benchmarks/test_pretraining.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
from synthetic import SOURCE_PROTOCOL, make_images

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
    images, labels = make_images(208, seed=0, classes=5)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


@pytest.mark.parametrize("name", list(PHASES))
def test_source_phase_images_per_second(benchmark, base, name, device, synchronized):
    """Images processed (forward+backward passes) per second; base images per second = that / passes."""
    batch = 512 if device.type == "cuda" else BATCH
    phase = PHASES[name](batch_size=batch)
    images, labels = (t.to(device) for t in base)
    data = SourceData(images, labels if phase.uses_labels else None, 5, device, 0, **SOURCE_PROTOCOL)
    budget = batch * STEPS * phase.passes_per_image()
    model = benchmark.pedantic(synchronized(lambda: phase.train(data, budget)), rounds=2, warmup_rounds=1)
    if benchmark.stats is not None:  # absent with --benchmark-disable
        benchmark.extra_info["images_per_second"] = budget / benchmark.stats.stats.mean
        benchmark.extra_info["base_images_per_second"] = (budget / phase.passes_per_image()
                                                          / benchmark.stats.stats.mean)
    assert all(torch.isfinite(p).all() for p in model.parameters())
