"""Template for a new strategy: copy to strategies/<your_name>.py, rename, fill in, and import it in
strategies/__init__.py (or register it from your own package through the ``harness.strategies``
entry-point group). Cite the paper the strategy implements here, in the module docstring.

Not imported by default: this module is only a starting point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from harness.episodes import Task
from harness.registry import register
from harness.strategy import Strategy
from strategies.backbones import embed
from strategies.supervised import SupervisedPretraining


@register  # registered as "my-strategy" (from the class name); or @register(name="...")
@dataclass
class MyStrategy(Strategy):
    """One line that `python -m harness list` shows."""

    family = "transfer"  # transfer / meta-learning / self-supervised / adversarial
    episode_phase = "what happens per support set"

    # The source phase: equal source phases share one cached model across strategies.
    source: SupervisedPretraining = field(default_factory=SupervisedPretraining)
    # Hyperparameters: plain fields with defaults, settable with --set my-strategy.NAME=VALUE.
    temperature: float = 1.0

    def run_episode(self, model: nn.Module, task: Task) -> torch.Tensor:
        # Never modify `model` in place (copy.deepcopy it first if you train it).
        support = embed(model, task.support_images)
        query = embed(model, task.query_images)
        prototypes = torch.stack([support[task.support_labels == c].mean(0) for c in range(task.ways)])
        return -torch.cdist(query, prototypes) / self.temperature  # (queries, ways) logits
