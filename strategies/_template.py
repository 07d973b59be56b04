"""Template for a new strategy: copy to strategies/<your_name>.py, rename, fill in, and import it (or, for
a built-in, add ``ADAPTERS.register_lazy`` and ``register_row`` lines to strategies/__init__.py; from your
own package, register through the ``harness.strategies`` entry-point group). Cite the paper the strategy
implements here, in the module docstring.

Not imported by default: this module is only a starting point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.episodes import Task
from harness.phases import EpisodeAdapter, Pretrainer
from harness.suite import register
from strategies.features import embed


# An adapter (the episode phase) registered with a strategy of the same name over the "supervised"
# pretrainer (see `python -m harness list` and strategies/__init__.py for the others). Equal source
# phases share one cached model across strategies.
@register(source="supervised")  # registered as "my-strategy" (from the class name); or name="..."
@dataclass
class MyStrategy(EpisodeAdapter):
    """One line that `python -m harness list` shows."""

    # Hyperparameters: plain fields with defaults, settable with --set my-strategy.NAME=VALUE
    # (the pretrainer's with --set my-strategy.source.NAME=VALUE).
    temperature: float = 1.0

    def describe(self, source: Pretrainer) -> str:  # the leaderboard's episode-phase text, from the fields
        return f"nearest prototype, temperature {self.temperature:g}"

    def adapt_episode(self, model: nn.Module, task: Task, source: Pretrainer) -> torch.Tensor:
        # Never modify `model` in place (copy.deepcopy it first if you train it). Use task.generator() for
        # randomness: an episode's result must depend on that episode alone.
        support = embed(model, task.support_images)
        query = embed(model, task.query_images)
        prototypes = torch.stack([support[task.support_labels == c].mean(0) for c in range(task.ways)])
        return -torch.cdist(query, prototypes) / self.temperature  # (queries, ways) logits
