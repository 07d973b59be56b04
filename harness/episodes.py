"""N-way K-shot episodes: sampling, the sealed view strategies get, and scoring.

An evaluation episode is drawn from ``(seed, shots, index)`` alone, so every strategy is scored on the
same episodes (a paired design). Labels are remapped to 0..N-1 in a random class order per episode and
queries are shuffled. Query labels stay with the harness in :class:`EpisodeSet`, which also scores
the strategies' outputs.

Strategies get a :class:`TaskBatch`: the support images, support labels and query images of a batch of
episodes and nothing else. Everything the sampler does is a function of the run seed and the pool's class
sizes, both public (the seed defaults to 0; a strategy knows this code), so any order it produces can be
replayed: the query order it draws, and any permutation of the stored images derived from the seed or the
data fingerprint (itself computable from a known copy's published fingerprint), would reveal the query
labels to a strategy that replays it. So the harness orders by image content instead (``content``: a hash
of each pool image's pixels, :func:`content_keys`): each episode's queries are presented, and the batch's
de-duplicated images stored, in the order of their content hashes. Without the pool's pixels, which no
strategy receives, that order says nothing about an image's class or its place in the pool.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.errors import UsageError


@dataclass(frozen=True)
class Episode:
    """Indices of one episode into the novel pool; ``query_labels`` never leaves the harness."""

    support: np.ndarray  # (ways*shots,) pool indices
    support_labels: np.ndarray  # (ways*shots,) in 0..ways-1
    query: np.ndarray  # (ways*queries,) pool indices, shuffled
    query_labels: np.ndarray  # (ways*queries,)
    classes: np.ndarray  # (ways,) pool class of episode label 0..ways-1
    seed: int  # seed for the strategy's own randomness in this episode


def index_by_class(labels: np.ndarray, classes: Sequence[int]) -> list[np.ndarray]:
    """Pool indices of each class, in the order given."""
    return [np.flatnonzero(labels == c) for c in classes]


def sample_episode(by_class: Sequence[np.ndarray], class_ids: Sequence[int], ways: int, shots: int,
                   queries: int, rng: np.random.Generator) -> Episode:
    """Draw one episode: ``ways`` classes in random order, disjoint support and query images (``seed`` 0: the
    harness gives every episode its seed from the run's secret, :func:`episode_seeds`)."""
    chosen = rng.permutation(len(by_class))[:ways]
    picked = [rng.choice(by_class[c], size=shots + queries, replace=False) for c in chosen]
    return _episode(picked, chosen, class_ids, shots, queries, rng)


def _episode(picked: Sequence[np.ndarray], chosen: np.ndarray, class_ids: Sequence[int], shots: int, queries: int,
             rng: np.random.Generator) -> Episode:
    ways = len(chosen)
    support = [np.stack([p[:shots], np.full(shots, label)], 1) for label, p in enumerate(picked)]
    query = [np.stack([p[shots:], np.full(queries, label)], 1) for label, p in enumerate(picked)]
    s = np.concatenate(support)[rng.permutation(ways * shots)]
    q = np.concatenate(query)[rng.permutation(ways * queries)]
    return Episode(support=s[:, 0], support_labels=s[:, 1], query=q[:, 0], query_labels=q[:, 1],
                   classes=np.asarray(class_ids)[chosen], seed=0)


def sample_round(by_class: Sequence[np.ndarray], class_ids: Sequence[int], ways: int, shots: int, queries: int,
                 limit: int, rng: np.random.Generator, content: np.ndarray) -> list[Episode]:
    """Episodes that share no image (one sealed batch): each class's images are shuffled and dealt out, shots +
    queries per chosen class per episode, until fewer than ``ways`` classes have that many left or ``limit``
    episodes are drawn. An image whose pixels equal one already dealt in the round (the same ``content``:
    :func:`content_keys` of the pool) is passed over, so no two images of a batch are the same picture."""
    decks = [list(rng.permutation(ix)) for ix in by_class]
    seen: set[int] = set()
    need, episodes = shots + queries, []
    while len(episodes) < limit:
        eligible = np.array([c for c, deck in enumerate(decks) if len(deck) >= need])
        if len(eligible) < ways:
            break
        chosen = eligible[rng.permutation(len(eligible))[:ways]]
        picked = []
        for c in chosen:
            taken: list[int] = []
            while len(taken) < need and decks[c]:
                image = int(decks[c].pop())
                key = int(content[image])
                if key not in seen:
                    seen.add(key)
                    taken.append(image)
            picked.append(np.array(taken))
        if min(len(p) for p in picked) < need:  # duplicates used up a class: the round ends here
            break
        episodes.append(_episode(picked, np.asarray(chosen), class_ids, shots, queries, rng))
    return episodes


def episode_seeds(secret: str, shots: int, episodes: int) -> tuple[int, ...]:
    """Each episode's seed for the strategy's own randomness: a hash of the run's secret (``RUN_DIR/secret``,
    never given to a strategy), the shots and the episode index, so nothing can replay them."""
    return tuple(int.from_bytes(hashlib.blake2b(f"{secret}|{shots}|{i}".encode(), digest_size=4).digest(), "little")
                 & 0x7FFFFFFF for i in range(episodes))


def content_keys(images: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each image's pixels (uint8 (N, ...)): the order the harness presents images in."""
    rows = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") for r in rows],
                    dtype=np.uint64)


def validate_protocol(class_sizes: Sequence[int], ways: int, shots: int, queries: int, episodes: int) -> None:
    """Check an episode protocol against the pool before any training."""
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries), ("episodes", episodes)):
        if value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value}; pass --{name} 1 or more")
    if ways > len(class_sizes):
        raise UsageError(f"ways={ways} exceeds the {len(class_sizes)} novel classes of the dataset; "
                         f"pass --ways {len(class_sizes)} or fewer")
    smallest = min(class_sizes)
    if shots + queries > smallest:
        raise UsageError(f"shots + queries = {shots + queries} exceeds the {smallest} images of the "
                         f"smallest novel class; lower --shots or --queries")


@dataclass(frozen=True)
class EpisodeSet:
    """The fixed evaluation episodes for one (seed, ways, shots, queries) on one novel pool."""

    episodes: list[Episode]
    ways: int
    shots: int
    queries: int
    seed: int
    data_fingerprint: str
    #: content_keys of the pool: the order queries are presented and images stored in
    content: np.ndarray = field(repr=False, compare=False)
    #: the round each episode was dealt in: the episodes of a round share no image and form one sealed batch
    rounds: tuple[int, ...] = ()

    @classmethod
    def draw(cls, labels: np.ndarray, classes: Sequence[int], ways: int, shots: int, queries: int,
             episodes: int, seed: int, data_fingerprint: str, content: np.ndarray, secret: str = "") -> EpisodeSet:
        """The episodes, dealt in image-disjoint rounds (:func:`sample_round`, round ``r`` from the generator
        seeded with ``(seed, shots, r)``: the same episodes for every run with this seed); episode seeds from
        ``secret`` (:func:`episode_seeds`; empty: from the run seed, replayable, for tests only). ``content``
        (:func:`content_keys` of the pool) puts each episode's queries in the order of their content hashes, and
        no round holds two images with the same pixels."""
        by_class = index_by_class(labels, classes)
        validate_protocol([len(ix) for ix in by_class], ways, shots, queries, episodes)
        drawn: list[Episode] = []
        rounds: list[int] = []
        while len(drawn) < episodes:
            r = len(set(rounds))
            dealt = sample_round(by_class, classes, ways, shots, queries, episodes - len(drawn),
                                 np.random.default_rng([seed, shots, r]), content)
            if not dealt:
                raise UsageError(f"the novel pool cannot serve a {ways}-way {shots}-shot episode with {queries} "
                                 f"queries of distinct pictures (too many duplicate images); lower --queries")
            drawn += dealt
            rounds += [r] * len(dealt)
        seeds = episode_seeds(secret or f"public|{seed}", shots, episodes)
        drawn = [dataclasses.replace(e, seed=s, query=e.query[order], query_labels=e.query_labels[order])
                 for e, s in zip(drawn, seeds, strict=True) for order in [np.argsort(content[e.query], kind="stable")]]
        return cls(drawn, ways, shots, queries, seed, data_fingerprint, content, tuple(rounds))

    def round_indices(self) -> list[np.ndarray]:
        """The episode indices of each round (each one sealed batch, no image in two of its episodes)."""
        rounds = np.asarray(self.rounds if self.rounds else [0] * len(self.episodes))
        return [np.flatnonzero(rounds == r) for r in np.unique(rounds)]

    def fingerprint(self) -> str:
        """sha256 of the data fingerprint and every index and label of every episode: equal fingerprints,
        the same episodes of the same images."""
        h = hashlib.sha256(f"{self.data_fingerprint}|{self.ways}|{self.shots}|{self.queries}|"
                           f"{len(self.episodes)}".encode())
        for e in self.episodes:
            for a in (e.classes, e.support, e.support_labels, e.query, e.query_labels):
                h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(order, support, query)``: the pool indices of the images the episodes use, each once, in
        content-hash order (the module docstring says why), and each episode's support and query images as
        positions in ``order``."""
        support = np.stack([e.support for e in self.episodes])
        query = np.stack([e.query for e in self.episodes])
        used = np.unique(np.concatenate([support.ravel(), query.ravel()]))
        order = used[np.argsort(self.content[used], kind="stable")]
        position = np.full(int(used.max()) + 1, -1, dtype=np.int64)
        position[order] = np.arange(len(order))
        return order, position[support], position[query]

    def subset(self, indices: Sequence[int]) -> EpisodeSet:
        """The episodes ``indices``, in that order."""
        return dataclasses.replace(self, episodes=[self.episodes[i] for i in indices],
                                   rounds=tuple(self.rounds[i] for i in indices) if self.rounds else ())

    def batch(self, pool: Any, mean: Sequence[float], std: Sequence[float]) -> TaskBatch:
        """What strategies see: every episode's support images and labels and its query images, the
        images stored once in content-hash order, never query labels or other pool images. ``pool``: the novel
        pool's images, already normalised with ``mean``/``std`` (the run's data statistics, handed on to the
        strategies)."""
        import torch

        order, support, query = self.layout()
        device = pool.device
        return TaskBatch(images=pool[torch.as_tensor(order, device=device)].contiguous(),
                         support=torch.as_tensor(support, device=device),
                         support_labels=torch.as_tensor(np.stack([e.support_labels for e in self.episodes]),
                                                        device=device),
                         query=torch.as_tensor(query, device=device),
                         seeds=tuple(e.seed for e in self.episodes), ways=self.ways,
                         mean=tuple(mean), std=tuple(std))

    def sealed(self, images: np.ndarray) -> SealedBatch:
        """The episodes as a :class:`SealedBatch` of the pool's uint8 ``images``: what a sealed adapter process
        receives."""
        order, support, query = self.layout()
        return SealedBatch(np.ascontiguousarray(images[order]), support,
                           np.stack([e.support_labels for e in self.episodes]), query,
                           tuple(e.seed for e in self.episodes), self.ways)

    def correct(self, predictions: Sequence[Any]) -> list[np.ndarray]:
        """Per episode, which queries the predicted labels get right."""
        return [np.asarray(p.cpu() if hasattr(p, "cpu") else p) == e.query_labels
                for p, e in zip(predictions, self.episodes, strict=True)]

    def accuracies(self, predictions: Sequence[Any]) -> np.ndarray:
        """Per-episode accuracy of predicted labels (one tensor of query predictions per episode)."""
        return np.array([float(c.mean()) for c in self.correct(predictions)])

    def score(self, outputs: Sequence[Any], strategy: str) -> dict[str, Any]:
        """Check and score a strategy's outputs: per-episode accuracies of "logits", and for each extra
        named output (e.g. "robust": logits on attacked queries) the fraction of queries right on both
        the clean and the extra output, as ``<name>_accuracy`` in ``metrics``."""
        if len(outputs) != len(self.episodes):
            raise ValueError(f"{strategy} returned {len(outputs)} results for {len(self.episodes)} episodes")
        named = [o if isinstance(o, dict) else {"logits": o} for o in outputs]
        for key in named[0]:
            for i, out in enumerate(named):
                check_logits(out.get(key), self.ways * self.queries, self.ways, f"{strategy} ({key})", i)
        clean = self.correct([out["logits"].argmax(1) for out in named])
        extras: dict[str, list[float]] = {}
        for key in (k for k in named[0] if k != "logits"):
            extra = self.correct([out[key].argmax(1) for out in named])
            extras[key] = [float((c & x).mean()) for c, x in zip(clean, extra, strict=True)]
        return {"episode_accuracies": [float(c.mean()) for c in clean], "extra_accuracies": extras}


def check_logits(logits: Any, queries: int, ways: int, strategy: str, index: int) -> None:
    import torch

    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (queries, ways):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{strategy} returned logits of shape {shape} in episode {index}, "
                         f"expected (queries, ways) = {(queries, ways)}")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{strategy} returned non-finite logits in episode {index}")


@dataclass(frozen=True)
class SealedBatch:
    """A batch of episodes as numpy arrays (uint8 images), for the process that adapts it: no query label, no
    pool index, images in content-hash order."""

    images: np.ndarray  # (U, C, H, W) uint8
    support: np.ndarray  # (B, n) positions in images
    support_labels: np.ndarray  # (B, n)
    query: np.ndarray  # (B, q) positions in images
    seeds: tuple[int, ...]
    ways: int
    features: Any = None  # (U, ...) torch tensor: the adapter's frozen features of ``images`` (Adapter.frozen_features)

    def tasks(self, device: Any, mean: Sequence[float], std: Sequence[float]) -> TaskBatch:
        """The :class:`TaskBatch` a strategy gets, normalised on ``device``."""
        import torch

        from harness.augment import to_float

        pool = to_float(torch.from_numpy(self.images).to(device), mean, std).contiguous()
        return TaskBatch(pool, torch.as_tensor(self.support, device=device),
                         torch.as_tensor(self.support_labels, device=device),
                         torch.as_tensor(self.query, device=device), self.seeds, self.ways, tuple(mean), tuple(std),
                         None if self.features is None else self.features.to(device))


@dataclass(frozen=True)
class Task:
    """One episode as a strategy sees it."""

    support_images: Any  # (ways*shots, 3, H, W) normalised float
    support_labels: Any  # (ways*shots,) in 0..ways-1
    query_images: Any  # (ways*queries, 3, H, W), shuffled
    ways: int
    seed: int  # the episode's own seed (for the strategy's randomness)

    @property
    def shots(self) -> int:
        return len(self.support_labels) // self.ways

    def generator(self, device: Any = "cpu") -> Any:
        """A torch generator seeded from this episode alone (its results never depend on the batch)."""
        import torch

        return torch.Generator(device=device).manual_seed(self.seed)


@dataclass(frozen=True, eq=False)
class TaskBatch(Sequence[Task]):
    """Episodes as a batch: ``images`` (U, 3, H, W) holds each image the batch uses once; ``support`` (B, n)
    and ``query`` (B, q) index into it; ``support_labels`` (B, n) in 0..ways-1; ``seeds`` per episode;
    ``mean``/``std`` are the dataset's normalisation (for attacks in pixel space)."""

    images: Any
    support: Any
    support_labels: Any
    query: Any
    seeds: tuple[int, ...]
    ways: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    features: Any = None  # the adapter's frozen features of ``images``, one row each, when the harness computed them

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return TaskBatch(self.images, self.support[i], self.support_labels[i], self.query[i], self.seeds[i],
                             self.ways, self.mean, self.std, self.features)
        return Task(self.images[self.support[i]], self.support_labels[i], self.images[self.query[i]], self.ways,
                    self.seeds[i])

    def __iter__(self) -> Iterator[Task]:
        return (self[i] for i in range(len(self)))

    @property
    def queries_per_episode(self) -> int:
        return self.query.shape[1]

    def chunks(self, size: int) -> Iterator[TaskBatch]:
        """Consecutive sub-batches of at most ``size`` episodes, sharing ``images``."""
        for start in range(0, len(self), max(1, size)):
            yield self[start:start + max(1, size)]
