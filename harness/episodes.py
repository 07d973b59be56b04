"""N-way K-shot episodes: the one sampler used for evaluation and for episodic meta-training.

An evaluation episode is drawn from ``(seed, shots, index)`` alone, so every strategy is scored on the
same episodes (a paired design). Labels are remapped to 0..N-1 in a random class order per episode and
queries are shuffled, so neither the label ids nor the query order leak the classes. Query labels stay
with the harness in :class:`EpisodeSet`; strategies only ever get :class:`Task` objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from harness.errors import UsageError


@dataclass(frozen=True)
class Episode:
    """Indices of one episode into an image pool; ``query_labels`` never leaves the harness."""

    support: np.ndarray  # (ways*shots,) pool indices
    support_labels: np.ndarray  # (ways*shots,) in 0..ways-1
    query: np.ndarray  # (ways*queries,) pool indices, shuffled
    query_labels: np.ndarray  # (ways*queries,)
    classes: np.ndarray  # (ways,) original class id of episode label 0..ways-1
    seed: int  # seed for the strategy's own randomness in this episode


def index_by_class(labels: np.ndarray, classes: Sequence[int]) -> list[np.ndarray]:
    """Pool indices of each class, in the order given."""
    return [np.flatnonzero(labels == c) for c in classes]


def sample_episode(by_class: Sequence[np.ndarray], class_ids: Sequence[int], ways: int, shots: int,
                   queries: int, rng: np.random.Generator) -> Episode:
    """Draw one episode: ``ways`` classes in random order, disjoint support and query images."""
    chosen = rng.permutation(len(by_class))[:ways]
    support, query = [], []
    for label, c in enumerate(chosen):
        picked = rng.choice(by_class[c], size=shots + queries, replace=False)
        support.append(np.stack([picked[:shots], np.full(shots, label)], 1))
        query.append(np.stack([picked[shots:], np.full(queries, label)], 1))
    s = np.concatenate(support)[rng.permutation(ways * shots)]
    q = np.concatenate(query)[rng.permutation(ways * queries)]
    return Episode(support=s[:, 0], support_labels=s[:, 1], query=q[:, 0], query_labels=q[:, 1],
                   classes=np.asarray(class_ids)[chosen], seed=int(rng.integers(2**31 - 1)))


def validate_protocol(class_sizes: Sequence[int], ways: int, shots: int, queries: int, episodes: int) -> None:
    """Check an episode protocol against the pool before any training."""
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries), ("episodes", episodes)):
        if value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value}; pass --{name} 1 or more")
    if ways > len(class_sizes):
        raise UsageError(f"ways={ways} exceeds the {len(class_sizes)} novel classes of the split; "
                         f"pass --ways {len(class_sizes)} or fewer")
    smallest = min(class_sizes)
    if shots + queries > smallest:
        raise UsageError(f"shots + queries = {shots + queries} exceeds the {smallest} images of the "
                         f"smallest novel class; lower --shots or --queries")


@dataclass(frozen=True)
class EpisodeSet:
    """The fixed evaluation episodes for one (seed, ways, shots, queries)."""

    episodes: list[Episode]
    ways: int
    shots: int
    queries: int
    seed: int

    @classmethod
    def draw(cls, labels: np.ndarray, classes: Sequence[int], ways: int, shots: int, queries: int,
             episodes: int, seed: int) -> EpisodeSet:
        by_class = index_by_class(labels, classes)
        validate_protocol([len(ix) for ix in by_class], ways, shots, queries, episodes)
        drawn = [sample_episode(by_class, classes, ways, shots, queries,
                                np.random.default_rng([seed, shots, i])) for i in range(episodes)]
        return cls(drawn, ways, shots, queries, seed)

    def fingerprint(self) -> str:
        """sha256 of every index and label of every episode: equal fingerprints, equal episodes."""
        h = hashlib.sha256(f"{self.ways}|{self.shots}|{self.queries}|{len(self.episodes)}".encode())
        for e in self.episodes:
            for a in (e.classes, e.support, e.support_labels, e.query, e.query_labels):
                h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def tasks(self, pool: torch.Tensor) -> list[Task]:
        """What strategies see: support images and labels, query images, never query labels."""
        device = pool.device
        return [Task(pool, torch.as_tensor(e.support, device=device),
                     torch.as_tensor(e.support_labels, device=device),
                     torch.as_tensor(e.query, device=device), self.ways, e.seed) for e in self.episodes]

    def correct(self, predictions: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Per episode, which queries the predicted labels get right."""
        return [p.cpu().numpy() == e.query_labels for p, e in zip(predictions, self.episodes, strict=True)]

    def accuracies(self, predictions: Sequence[torch.Tensor]) -> np.ndarray:
        """Per-episode accuracy of predicted labels (one tensor of query predictions per episode)."""
        return np.array([float(c.mean()) for c in self.correct(predictions)])


@dataclass(frozen=True)
class Task:
    """One few-shot task as a strategy sees it. ``pool`` is the shared image tensor (N, 3, 32, 32)."""

    pool: torch.Tensor
    support_index: torch.Tensor
    support_labels: torch.Tensor
    query_index: torch.Tensor
    ways: int
    seed: int

    @property
    def support_images(self) -> torch.Tensor:
        return self.pool[self.support_index]

    @property
    def query_images(self) -> torch.Tensor:
        return self.pool[self.query_index]

    @property
    def shots(self) -> int:
        return len(self.support_index) // self.ways
