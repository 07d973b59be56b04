"""Floating-point operations, counted with ``torch.utils.flop_counter.FlopCounterMode``.

- A source phase's FLOPs per image processed come from ONE training step run under the counter (budget 1:
  every phase then runs exactly one step; the model it makes is thrown away), divided by the images that
  step processed. ``source_flops`` = that ratio x the images the real training processed. Steps of a
  phase all have the same shapes, so one step is representative. A phase computed by another framework
  (Keras) names a PyTorch twin of the same architecture and schedule (``Pretrainer.flop_twin``).
- An episode phase's FLOPs are counted over the untimed warm-up episode (a batch of one episode: the
  count of a batched ``vmap`` over several episodes is not per-episode exact).

The counter sees the matrix multiplications and convolutions (forward, backward, double backward) of
PyTorch; element-wise work and other frameworks' operations are not counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch.utils.flop_counter import FlopCounterMode

from harness.phases import Pretrainer, SourceData


def counted(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), its FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, int(counter.get_total_flops())


def flops_per_image(phase: Pretrainer, data: SourceData) -> tuple[float, str]:
    """(FLOPs per image processed, how it was measured) for a source phase on this data."""
    if not type(phase).trains:
        return 0.0, "none: the phase trains nothing (a model pretrained elsewhere, loaded)"
    twin = phase.flop_twin()
    processed: list[int] = []
    probe = dataclasses.replace(data, progress=processed.append, metrics={})
    _, flops = counted(lambda: twin.train(probe, 1))
    images = max(1, sum(processed))
    what = "" if twin is phase else f" of its PyTorch twin ({twin.phase_name})"
    return flops / images, f"FlopCounterMode over one training step{what} ({images} images), x images processed"
