"""The strategy contract: a source phase (cached) times an episode phase (per support set).

A :class:`SourcePhase` is a dataclass of hyperparameters whose :meth:`SourcePhase.train` turns the base
split into a model. The harness caches that model on disk under a key made of the phase's class, its
fields, the split, the seed, the budget and the data fingerprint, so strategies whose source phases are
equal share one cache entry. A :class:`Strategy` is a dataclass of episode-phase hyperparameters with a
``source`` field; :meth:`Strategy.run_episode` adapts a copy of the cached model to a task's support set
and returns logits for the task's query images. Learned state lives only in returned objects.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from harness.episodes import Task


def _no_progress(n: int) -> None:
    pass


@dataclass(frozen=True)
class SourceData:
    """The base split handed to a source phase. ``labels`` is None for phases that must not see them."""

    images: torch.Tensor  # (N, 3, 32, 32) uint8 on the run's device
    labels: torch.Tensor | None  # (N,) int64 in 0..num_classes-1
    num_classes: int
    device: torch.device
    seed: int
    progress: Callable[[int], None]  # call with the number of images just processed
    ways: int = 5  # the evaluation protocol's ways...
    shots: int | None = None  # ...and shots (set only for phases with per_shots = True)
    queries: int = 15
    #: measurements the phase wants in the results (e.g. peak memory of one meta-step), JSON-able values
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourcePhase(ABC):
    """Hyperparameters of a source phase (pretraining or meta-training)."""

    #: which preset budget applies ("pretrain", "meta", ...); budgets count images processed
    budget_group: ClassVar[str] = "pretrain"
    #: False for self-supervised phases: the harness then passes labels=None
    uses_labels: ClassVar[bool] = True
    #: True for phases trained per shot setting (episodic meta-training with the evaluation's ways and
    #: shots): the harness then trains and caches one model per shots value and sets SourceData.shots
    per_shots: ClassVar[bool] = False

    @property
    def phase_name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def build(self, num_classes: int) -> nn.Module:
        """A freshly initialised model of the phase's architecture (used to load the cache)."""

    @abstractmethod
    def train(self, data: SourceData, budget_images: int) -> nn.Module:
        """Train on the base split for ``budget_images`` images processed; return the model."""

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Strategy(ABC):
    """Hyperparameters of a transfer strategy; subclasses add a ``source`` field and their own fields."""

    name: ClassVar[str] = ""  # set by the registry
    family: ClassVar[str] = "transfer"  # transfer / meta-learning / self-supervised / adversarial
    episode_phase: ClassVar[str] = ""  # short description of the adaptation, for the leaderboard

    source: SourcePhase

    def check(self) -> None:
        """Reject impossible hyperparameters before any training (raise UsageError). Override."""

    @abstractmethod
    def run_episode(self, model: nn.Module, task: Task) -> torch.Tensor:
        """Adapt (a copy of) ``model`` to the support set; return (queries, ways) logits."""

    def run_episodes(self, model: nn.Module, tasks: Sequence[Task],
                     progress: Callable[[int], None] = _no_progress) -> list[torch.Tensor | dict[str, torch.Tensor]]:
        """Evaluate many episodes; override to batch (e.g. to embed every image once).

        Each result is the (queries, ways) logits, or a dict with "logits" and further named logits
        (e.g. "robust": logits on attacked queries), which the harness scores the same way and reports
        as ``metrics["<name>_accuracy"]`` and ``metrics["<name>_ci95"]``.

        The default seeds torch with each task's seed, calls :meth:`run_episode` and reports progress.
        """
        logits = []
        for task in tasks:
            torch.manual_seed(task.seed)
            logits.append(self.run_episode(model, task))
            progress(1)
        return logits

    def params(self) -> dict[str, Any]:
        """Episode-phase hyperparameters (the source phase's are in ``self.source.params()``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}

    def protocol_settings(self) -> dict[str, Any]:
        """Settings a reader must see next to the accuracy (BN mode, inner steps...). Override."""
        return {}
