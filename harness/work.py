"""``run_unit(unit, context, sources) -> SourceResult | Record``: one unit of work, in any process.

A :class:`UnitContext` holds what every unit of a run needs and no unit changes: the run's settings
(:class:`RunSpec`), the dataset's pools and the fixed episode sets. Executors build one per process (the local
executor once; a Ray worker from the arrays in the object store).

The process holding a context never runs strategy code: each source phase and each sealed batch of episodes
runs in a fresh process (:mod:`harness.sealed`) that receives the base pool, or one batch's support images,
support labels and query images, and returns a model or logits; the query labels stay here and score them.
An adapter that starts from frozen per-image features (:meth:`harness.phases.Adapter.frozen_features`: the
probes' embeddings, fine-tuning's frozen blocks) gets them computed once per model for every image of the
unit, in one more process that receives those images and the model only, instead of once per batch.

Timing is honest: device work is synchronised at both ends; a source phase's throughput leaves out its
first (warm-up) step; each sealed batch first adapts its first episode alone, untimed, then the whole batch
timed; the frozen features are timed after an untimed warm-up on a few images and count as episode time;
process start-up and transfers are counted apart (``seal_seconds``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.datasets.base import FewShotData
from harness.episodes import EpisodeSet, SealedBatch, content_keys
from harness.faults import checkpoint
from harness.flops import flops_per_image
from harness.measure import Stopwatch, autocast, configure, device_name, synchronize
from harness.phases import SourceData
from harness.predictions import QueryPredictions, digest, summarise
from harness.protocol import Protocol
from harness.provenance import relative_file
from harness.results import predictions_path, record_path
from harness.schema import Record
from harness.sealed import run_sealed
from harness.stats import accuracy_interval, image_pool
from harness.units import EvalUnit, SourceResult, SourceUnit

#: (description, total, unit) -> a progress bar: call it with the amount done, close() it at the end
ProgressFactory = Callable[[str, int, str], Any]


@dataclass(frozen=True)
class RunSpec:
    """What every unit of a run needs (picklable): the protocol and where and how the units run."""

    protocol: Protocol
    device: str  # "cpu", "cuda", "cuda:1"
    secret: str = dataclasses.field(default="", repr=False)  # RUN_DIR/secret: episode seeds, never to a strategy
    threads: int = 0  # torch threads of the sealed processes (0: this process's count)
    trials_dir: str = ""  # where finished tuning trials are kept for a resume (RUN_DIR/tuning); "": not kept


class _NoBar:
    def __call__(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _no_bar(description: str, total: int, unit: str) -> _NoBar:
    return _NoBar()


class UnitContext:
    def __init__(self, spec: RunSpec, data: FewShotData, progress: ProgressFactory = _no_bar):
        self.spec, self.data, self.progress = spec, data, progress
        configure(spec.protocol.deterministic)
        self.device = torch.device(spec.device)
        self.images = data.novel.nchw()  # uint8: sealed batches are cut from it
        self.base = BasePool(data.base.nchw(), data.base.labels, len(data.base.classes), data.mean, data.std)
        self._episodes: dict[int, EpisodeSet] = {}
        self._content: np.ndarray | None = None
        validation = data.validation if spec.protocol.tune else None
        self.validation_images = None if validation is None else validation.nchw()
        self._validation: dict[int, EpisodeSet] = {}

    def validation_set(self, shots: int) -> EpisodeSet:
        """``--tune``'s validation episodes: drawn like the scored ones from the validation pool, seeds from a secret
        of their own."""
        if shots not in self._validation:
            s, p, pool = self.spec, self.spec.protocol, self.data.validation
            if pool is None:
                raise ValueError("--tune needs a validation pool (harness/datasets/base.py hold_out_validation)")
            secret = hashlib.sha256(f"{s.secret}|validation".encode()).hexdigest()[:32] if s.secret else ""
            self._validation[shots] = EpisodeSet.draw(pool.labels, range(len(pool.classes)), p.ways, shots, p.queries,
                                                      p.tune_episodes, p.seed, f"{self.data.fingerprint}|validation",
                                                      content_keys(pool.images), secret)
        return self._validation[shots]

    def episode_set(self, shots: int) -> EpisodeSet:
        if shots not in self._episodes:
            s, p = self.spec, self.spec.protocol
            if self._content is None:  # the order images are presented in (harness/episodes.py says why)
                self._content = content_keys(self.data.novel.images)
            self._episodes[shots] = EpisodeSet.draw(self.data.novel.labels, range(len(self.data.novel.classes)),
                                                    p.ways, shots, p.queries, p.episodes, p.seed,
                                                    self.data.fingerprint, self._content, s.secret)
        return self._episodes[shots]

    @contextmanager
    def bar(self, description: str, total: int, unit: str, fault_point: str) -> Iterator[Callable[[int], None]]:
        """A progress callback for a phase (with its fault-injection point), closed at the end."""
        bar = self.progress(description, total, unit)

        def advance(n: int) -> None:
            bar(n)
            checkpoint(fault_point)

        try:
            yield advance
        finally:
            bar.close()


def run_unit(unit: SourceUnit | EvalUnit, context: UnitContext, sources: list[SourceResult] | None = None):
    """Run one unit: a SourceUnit returns a :class:`SourceResult`, an EvalUnit a :class:`Record`."""
    if isinstance(unit, SourceUnit):
        return train_source(unit, context)
    return evaluate(unit, context, sources or [])


@dataclass(frozen=True)
class BasePool:
    """The base classes' images (uint8) and labels: all a source phase's process receives."""

    images: np.ndarray
    labels: np.ndarray
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class _Counter:
    """Counts the images a phase reports and notes when its first step ended (the warm-up)."""

    def __init__(self, device: torch.device, progress: Callable[[int], None]):
        self.device, self.progress = device, progress
        self.processed, self.first_count, self.first_time = 0, 0, 0.0

    def __call__(self, n: int) -> None:
        if self.processed == 0:
            synchronize(self.device)
            self.first_time, self.first_count = time.perf_counter(), n
        self.processed += n
        self.progress(n)


def _threads(spec: RunSpec) -> int:
    return spec.threads or torch.get_num_threads()


def _unsecret(spec: RunSpec) -> RunSpec:
    """The settings a sealed process gets: without the run's secret (or where the run directory is)."""
    return dataclasses.replace(spec, secret="", trials_dir="")


def _enter(spec: RunSpec, threads: int) -> torch.device:
    """A sealed process's set-up: the run's determinism flags and thread count."""
    configure(spec.protocol.deterministic)
    torch.set_num_threads(threads)
    return torch.device(spec.device)


def train_source(unit: SourceUnit, ctx: UnitContext) -> SourceResult:
    """The source phase, in a sealed process that receives the base pool only."""
    with ctx.bar(unit.label, unit.budget_images, "img", "source-step") as progress:
        return run_sealed(train_job, (unit, _unsecret(ctx.spec), _threads(ctx.spec), ctx.base), progress,
                          [unit.strategy])


def train_job(job: tuple[SourceUnit, RunSpec, int, BasePool], progress: Callable[[int], None]) -> SourceResult:
    unit, spec, threads, base = job
    device = _enter(spec, threads)
    phase = unit.strategy.source
    labels = torch.from_numpy(base.labels).to(device) if phase.uses_labels else None
    counter = _Counter(device, progress)
    data = SourceData(torch.from_numpy(base.images).to(device), labels, base.classes, device,
                      unit.seed, counter, ways=spec.protocol.ways, queries=spec.protocol.queries,
                      mean=base.mean, std=base.std, metrics={})
    with autocast(device, spec.protocol.precision):
        per_image, method = unit.flops_per_image or flops_per_image(phase, data)
    with Stopwatch(device) as watch, autocast(device, spec.protocol.precision):
        model = phase.train(data, unit.budget_images)
        synchronize(device)  # the queued device work belongs to the steady-state time
        end = time.perf_counter()
    steady = counter.processed - counter.first_count
    per_second = steady / max(end - counter.first_time, 1e-9) if steady > 0 else \
        counter.processed / max(watch.seconds, 1e-9)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    measurements = {"phase": phase.phase_name, "params": phase.params(), "budget_images": unit.budget_images,
                    "images_processed": counter.processed, "seconds": watch.seconds,
                    "images_per_second": per_second, "peak_memory_mb": watch.peak_memory_mb,
                    "device": phase.runs_on(device), "precision": spec.protocol.precision, "seed": unit.seed,
                    "flops": per_image * counter.processed, "flops_method": method, "metrics": data.metrics}
    return SourceResult(unit.key, phase.spec(model), state, measurements)


def load_model(strategy: Any, result: SourceResult, device: torch.device) -> torch.nn.Module:
    model = strategy.source.rebuild(result.spec)
    model.load_state_dict(result.state)
    return model.to(device).eval()


def base_record(strategy: Any, shots: int, spec: RunSpec, device: torch.device, scale: float = 1.0,
                matched_flops: float | None = None) -> Record:
    """The fields of a record that do not depend on running it (also those of failed and skipped rows)."""
    p = spec.protocol
    record = Record(strategy=strategy.name, family=strategy.family, shots=shots, ways=p.ways,
                    queries=p.queries, episodes=p.episodes, dataset=p.dataset, seed=p.seed,
                    budget_scale=scale, matched_flops=matched_flops, device=device_name(device),
                    torch_version=torch.__version__)
    if hasattr(strategy, "source"):  # a Strategy (a skipped row may only have its name and family)
        record.budget_group = type(strategy.source).budget_group
        record.backbone = strategy.source.backbone
        record.source_phase = strategy.source.phase_name
        record.source_description = strategy.source.describe()
        record.source_params = strategy.source.params()
        record.episode_phase = strategy.episode_phase()
        record.params = strategy.params()
        record.settings = strategy.settings()
        record.twin_of, record.check_of = strategy.twin_of(), strategy.check_of()
        record.code = {k: v for k, v in (("source", relative_file(type(strategy.source))),
                                         ("adapter", relative_file(type(strategy.adapter)))) if v}
    return record


@dataclass(frozen=True)
class AdaptJob:
    """One sealed batch for an adapter process: the strategy, the source model, the batch, how to run it."""

    strategy: Any
    source: SourceResult
    batch: SealedBatch
    spec: RunSpec
    threads: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    count_flops: bool = False  # adapt once, FLOPs counted (the first independence-check episode), untimed
    timed: bool = True  # False: an independence-check episode, adapted once, untimed


def _cpu(output: Any) -> Any:
    if isinstance(output, dict):
        return {k: _cpu(v) for k, v in output.items()}
    return output.detach().cpu() if isinstance(output, torch.Tensor) else output


def first_episode(batch: SealedBatch) -> SealedBatch:
    """A batch's first episode as a batch of its own: only its images (and their features), in the same
    content order."""
    used = np.unique(np.concatenate([batch.support[0], batch.query[0]]))
    position = np.full(len(batch.images), -1, dtype=np.int64)
    position[used] = np.arange(len(used))
    features = None if batch.features is None else batch.features[torch.from_numpy(used)]
    return SealedBatch(batch.images[used], position[batch.support[:1]], batch.support_labels[:1],
                       position[batch.query[:1]], batch.seeds[:1], batch.ways, features)


def adapt_job(job: AdaptJob, progress: Callable[[int], None]) -> tuple[list, float, float, float | None]:
    """In a sealed process: (outputs, seconds, peak memory MB, FLOPs or None). A check episode (``timed`` off)
    is adapted once, untimed; a batch first adapts its first episode alone, untimed (the process's start-up
    costs: lazy initialisation, first kernels), then the whole batch, timed. A batch of one episode (each
    round of a pool too small for two image-disjoint episodes) skips the warm-up, which would double its
    work: its time includes those start-up costs."""
    device = _enter(job.spec, job.threads)
    model = load_model(job.strategy, job.source, device)
    tasks = job.batch.tasks(device, job.mean, job.std)
    if job.count_flops:
        outputs, flops = job.strategy.warm_up(model, tasks)
        return [_cpu(o) for o in outputs], 0.0, 0.0, None if flops is None else float(flops)
    if not job.timed:
        return [_cpu(o) for o in job.strategy.run_episodes(model, tasks)], 0.0, 0.0, None
    if len(job.batch.seeds) > 1:  # a batch of one episode (a small pool's round) is timed without the warm-up
        job.strategy.run_episodes(model, first_episode(job.batch).tasks(device, job.mean, job.std))
    with Stopwatch(device) as watch:
        outputs = job.strategy.run_episodes(model, tasks, progress)
    return [_cpu(o) for o in outputs], watch.seconds, watch.peak_memory_mb, None


@dataclass(frozen=True)
class FeaturesJob:
    """The images of a unit's episodes (uint8, content-hash order) for the process that computes the adapter's
    frozen features (:meth:`Adapter.frozen_features`): no label, no episode, no position."""

    strategy: Any
    source: SourceResult
    images: np.ndarray
    spec: RunSpec
    threads: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


#: images the features process computes first, untimed (its start-up costs)
FEATURES_WARM_UP = 64


def features_job(job: FeaturesJob, progress: Callable[[int], None]) -> tuple[torch.Tensor | None, float, float]:
    """In a sealed process: (the frozen features of every image, or None; seconds; peak memory MB)."""
    from harness.augment import to_float

    device = _enter(job.spec, job.threads)
    model = load_model(job.strategy, job.source, device)
    adapter, source = job.strategy.adapter, job.strategy.source
    images = to_float(torch.from_numpy(job.images).to(device), job.mean, job.std).contiguous()
    if adapter.frozen_features(model, images[:FEATURES_WARM_UP], source) is None:
        return None, 0.0, 0.0
    with Stopwatch(device) as watch:
        features = adapter.frozen_features(model, images, source)
    return features.detach().cpu(), watch.seconds, watch.peak_memory_mb


def has_frozen_features(strategy: Any) -> bool:
    """Whether the strategy's adapter overrides :meth:`Adapter.frozen_features`."""
    from harness.phases import Adapter

    return getattr(type(strategy.adapter), "frozen_features", None) is not Adapter.frozen_features


def secret_random(secret: str, *context: Any) -> random.Random:
    """A generator no strategy can replay, the same for every run with this secret: seeded from the run's secret
    and ``context``, so a rerun from the run directory draws the same check episodes and batch orders (without
    a secret: fresh entropy from :mod:`secrets`)."""
    if not secret:
        return secrets.SystemRandom()
    return random.Random(hashlib.sha256("|".join(map(str, (secret, *context))).encode()).digest())


#: episodes of the independence check (each adapted alone in a fresh process before the batches)
INDEPENDENCE_CHECKS = 5


def _logits(output: Any) -> Any:
    return output.get("logits") if isinstance(output, dict) else output


def compare_alone(name: str, alone: dict[int, Any], outputs: list) -> dict[str, Any]:
    """The adapter contract: an episode's output never depends on the other episodes of its batch. Each episode
    of ``alone`` (chosen from the run's secret, adapted alone in a fresh process) must predict every query as it does
    inside its batch; queries whose top two logits are within 1e-3 (relative) in both runs are ties (numerical
    noise can flip only those), left aside. A mismatch fails the row. Both runs, not either: an adapter can tell
    a check episode (a batch of one) from a batch, and answering it with tied logits must not set aside the
    batch's confident answers."""
    compared = ties = agreed = 0
    for k, single in alone.items():
        a, b = _logits(single), _logits(outputs[k])
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and a.ndim == 2):
            continue  # the scoring reports the wrong shape
        tie = torch.ones(len(a), dtype=torch.bool)
        for x in (a.float(), b.float()):  # noise can flip a query only where both runs are close to a tie
            top = x.topk(min(2, x.shape[1]), dim=1).values
            tie &= (top[:, 0] - top[:, 1]) <= 1e-3 * (1 + top[:, 0].abs()) if top.shape[1] == 2 else False
        same = a.argmax(1) == b.argmax(1)
        compared += int((~tie).sum())
        ties += int(tie.sum())
        agreed += int((same & ~tie).sum())
    if agreed < compared:
        raise ValueError(f"{name} breaks the adapter contract: {compared - agreed} of {compared} queries of "
                         f"{len(alone)} secretly chosen episodes, adapted alone in a fresh process, are predicted "
                         f"otherwise than inside their batch, so its output depends on the other episodes; adapt "
                         f"each episode from its own support set and queries only")
    return {"episodes": len(alone), "queries": compared, "ties": ties, "agreed": agreed}


@dataclass(frozen=True)
class Episodes:
    """A set of episodes with its pool's images (uint8) and how its sealed batches are made: one per round of
    image-disjoint episodes, the frozen features (if any) computed once per model over ``used``, every image of
    the set in content-hash order."""

    episode_set: EpisodeSet
    images: np.ndarray
    spec: RunSpec  # without the secret
    threads: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def job(self, strategy: Any, source: SourceResult, indices: Any, count_flops: bool = False,
            features: Any = None, timed: bool = True) -> AdaptJob:
        subset = self.episode_set.subset(indices)
        batch = subset.sealed(self.images)
        if features is not None:  # the rows of this batch's images (the features process's order is `used`)
            batch = dataclasses.replace(batch, features=features[torch.from_numpy(self.rows[subset.layout()[0]])])
        return AdaptJob(strategy, source, batch, self.spec, self.threads, self.mean, self.std, count_flops, timed)

    @functools.cached_property
    def used(self) -> np.ndarray:
        """Every image of the set, once, in content-hash order (the frozen features' order)."""
        return self.episode_set.layout()[0]

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """Each pool image's row in ``used`` (-1: not in the set), computed once per set, not per batch."""
        row = np.full(len(self.images), -1, dtype=np.int64)
        row[self.used] = np.arange(len(self.used))
        return row

    def adapt(self, strategy: Any, source: SourceResult, draw: random.Random,
              progress: Callable[[int], None]) -> tuple[list, float, float]:
        """Every episode adapted, each round one sealed batch in an order from ``draw``: (outputs in episode order,
        seconds, peak memory MB)."""
        seconds, peak, features = 0.0, 0.0, None
        if has_frozen_features(strategy):  # once per model: every image's frozen features, timed with the episodes
            features, seconds, peak = run_sealed(features_job, FeaturesJob(strategy, source, self.images[self.used],
                                                                           self.spec, self.threads, self.mean,
                                                                           self.std), strategies=[strategy])
        outputs: list[Any] = [None] * len(self.episode_set.episodes)
        for indices in self.episode_set.round_indices():
            order = list(indices)
            draw.shuffle(order)  # the batch's episode order: from the secret
            out, sec, mem, _ = run_sealed(adapt_job, self.job(strategy, source, order, features=features), progress,
                                          [strategy])
            if len(out) != len(order):
                raise ValueError(f"{strategy.name} returned {len(out)} results for {len(order)} episodes")
            for k, o in zip(order, out, strict=True):
                outputs[k] = o
            seconds, peak = seconds + sec, max(peak, mem)
        return outputs, seconds, peak

    def flops(self, strategy: Any, source: SourceResult) -> float | None:
        """The counted FLOPs of adapting the first episode alone (untimed, its own features)."""
        out, _, _, flops = run_sealed(adapt_job, self.job(strategy, source, [0], True, timed=False),
                                      strategies=[strategy])
        if len(out) != 1:
            raise ValueError(f"{strategy.name} returned {len(out)} results for 1 episode")
        return flops


def tune(unit: EvalUnit, ctx: UnitContext, source: SourceResult) -> tuple[Any, dict[str, Any], float,
                                                                        float | None]:
    """``--tune``: the row's adapter at each configuration (harness/tuning.py) on the validation episodes, with
    ``source``'s model (the first training seed's); (the row with the best configuration, the record's ``tuning``,
    seconds, FLOPs). A finished configuration is kept in ``RUN_DIR/tuning`` and reused by a resume."""
    from harness.tuning import best, configurations, describe_spaces, search_space, with_params

    spec, strategy = ctx.spec, unit.strategy
    validation = Episodes(ctx.validation_set(unit.shots), ctx.validation_images, _unsecret(spec), _threads(spec),
                          tuple(ctx.data.mean), tuple(ctx.data.std))
    n = len(validation.episode_set.episodes)
    fingerprint = validation.episode_set.fingerprint()
    draw = secret_random(spec.secret, "tuning", strategy.name, unit.shots, unit.scale, unit.matched_flops)
    tried: list[dict[str, Any]] = []
    configs = configurations(strategy.adapter, spec.protocol.tune, spec.protocol.seed)
    with ctx.bar(f"{unit.label} tuning", n * len(configs), "ep", "tuning-episode") as progress:
        for i, params in enumerate(configs):
            candidate = with_params(strategy, params)
            key = hashlib.sha256(json.dumps([candidate.params(), source.key, fingerprint, i], sort_keys=True,
                                            default=str).encode()).hexdigest()[:16]
            trial = _saved_trial(spec, unit, i, key)
            if trial is None:
                outputs, seconds, _ = validation.adapt(candidate, source, draw, progress)
                flops = validation.flops(candidate, source)
                scores = validation.episode_set.score(outputs, strategy.name)
                interval = accuracy_interval(np.asarray(scores["episode_accuracies"], dtype=float))
                trial = {"params": params, "accuracy": round(interval.estimate, 6),
                         "ci95": round(interval.half_width, 6), "seconds": seconds,
                         "flops": None if flops is None else flops * n, "key": key}
                _save_trial(spec, unit, i, trial)
                checkpoint("tuning-trial")
            else:
                progress(n)
                trial = {**trial, "reused": True}
            tried.append(trial)
    chosen = best(tried)
    flops = [t["flops"] for t in tried]
    pool = ctx.data.validation
    tuning = {"trials": spec.protocol.tune, "episodes": n, "pool": ctx.data.validation_note or (
                  f"{len(pool.classes)} validation classes: {', '.join(pool.classes)}" if pool else ""),
              "validation_fingerprint": fingerprint, "replicate_seed": source.measurements.get("seed"),
              "space": {k: s.describe() for k, s in search_space(strategy.adapter).items()},
              "space_text": describe_spaces(strategy.adapter), "untuned": strategy.params(), "tried": tried,
              "chosen": chosen}
    return (with_params(strategy, tried[chosen]["params"]), tuning, sum(t["seconds"] for t in tried),
            None if None in flops else float(sum(flops)))


def _trial_path(spec: RunSpec, unit: EvalUnit, index: int) -> Path:
    stem = record_path(Path(), unit.strategy.name, unit.shots, unit.scale).stem  # the record's name
    return Path(spec.trials_dir) / f"{stem}-trial{index}.json"


def _saved_trial(spec: RunSpec, unit: EvalUnit, index: int, key: str) -> dict[str, Any] | None:
    """A finished configuration of an interrupted run: the same hyperparameters, model and validation episodes."""
    if not spec.trials_dir:
        return None
    path = _trial_path(spec, unit, index)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("key") == key else None


def _save_trial(spec: RunSpec, unit: EvalUnit, index: int, trial: dict[str, Any]) -> None:
    if spec.trials_dir:
        from harness.io import atomic_write_json

        try:
            atomic_write_json(_trial_path(spec, unit, index), trial)
        except OSError:  # a Ray worker on a machine without the run directory: the trial is simply not kept
            pass


def evaluate(unit: EvalUnit, ctx: UnitContext, sources: list[SourceResult]) -> Record:
    """Every replicate's model on the same episodes, each round of image-disjoint episodes one sealed batch in
    a fresh process (its episodes in a secret order); one record with per-replicate and averaged results. With
    ``--tune``, first the configuration to score (:func:`tune`)."""
    strategy, tuning, tuning_seconds, tuning_flops = unit.strategy, None, None, None
    if ctx.spec.protocol.tune:
        strategy, tuning, tuning_seconds, tuning_flops = tune(unit, ctx, sources[0])
    episode_set = ctx.episode_set(unit.shots)
    n_episodes = len(episode_set.episodes)
    spec, threads = _unsecret(ctx.spec), _threads(ctx.spec)
    draw = secret_random(ctx.spec.secret, "batches", strategy.name, unit.shots, unit.scale, unit.matched_flops)
    chosen = draw.sample(range(n_episodes), min(INDEPENDENCE_CHECKS, n_episodes))
    rounds = episode_set.round_indices()
    scored = Episodes(episode_set, ctx.images, spec, threads, tuple(ctx.data.mean), tuple(ctx.data.std))

    per_episode, extras, seconds, peak, episode_flops, check, logits = [], {}, 0.0, 0.0, None, None, []
    start = time.perf_counter()
    with ctx.bar(unit.label, n_episodes * len(sources), "ep", "episode") as progress:
        for i, source in enumerate(sources):
            alone: dict[int, Any] = {}
            if i == 0:  # before the batches: the check's episodes alone (their own features), the first one's FLOPs
                for j, k in enumerate(chosen):
                    out, _, _, flops = run_sealed(adapt_job, scored.job(strategy, source, [k], j == 0, timed=False),
                                                  strategies=[strategy])
                    if len(out) != 1:
                        raise ValueError(f"{strategy.name} returned {len(out)} results for 1 episode")
                    alone[k] = out[0]
                    episode_flops = flops if j == 0 else episode_flops
            outputs, sec, mem = scored.adapt(strategy, source, draw, progress)
            seconds, peak = seconds + sec, max(peak, mem)
            scores = episode_set.score(outputs, strategy.name)
            logits.append(torch.stack([_logits(o).detach().to("cpu", torch.float64) for o in outputs]))
            if i == 0:
                check = compare_alone(strategy.name, alone, outputs)
            per_episode.append(scores["episode_accuracies"])
            for name, values in scores["extra_accuracies"].items():
                extras.setdefault(name, []).append(values)
    wall = time.perf_counter() - start
    accuracies = np.mean(per_episode, axis=0)
    replicates = [float(np.mean(r)) for r in per_episode]
    matrix = np.asarray(per_episode, dtype=float)  # replicates x episodes: the crossed design (harness/stats.py)
    interval = accuracy_interval(matrix if len(matrix) > 1 else accuracies)
    novel_images, image_reuse = image_pool([np.concatenate([e.support, e.query]) for e in episode_set.episodes])
    metrics: dict[str, float] = {}
    for name, values in extras.items():  # counted only where the clean prediction is right too
        extra = accuracy_interval(np.asarray(values, dtype=float) if len(values) > 1 else np.mean(values, axis=0))
        metrics[f"clean_and_{name}_accuracy"], metrics[f"clean_and_{name}_ci95"] = extra.estimate, extra.half_width
    ms = [s.measurements for s in sources]
    n = n_episodes * len(sources)
    predictions = QueryPredictions.from_outputs(
        torch.stack(logits), np.stack([e.query_labels for e in episode_set.episodes]),
        np.stack([e.classes for e in episode_set.episodes]), ctx.data.novel.classes, [m["seed"] for m in ms])
    data = predictions.to_bytes()
    record = dataclasses.replace(
        base_record(strategy, unit.shots, ctx.spec, ctx.device, unit.scale, unit.matched_flops),
        episode_fingerprint=episode_set.fingerprint(), accuracy=interval.estimate, ci95=interval.half_width,
        ci_covers=interval.covers, ci_df=round(float(interval.df), 3), ci_seed_df=interval.seed_df,
        episode_accuracies=[round(float(a), 6) for a in accuracies],
        replicate_episode_accuracies=[[round(float(a), 6) for a in row] for row in matrix],
        novel_images=novel_images, image_reuse=round(image_reuse, 4),
        replicate_seeds=[m["seed"] for m in ms], replicate_accuracies=[round(r, 6) for r in replicates],
        metrics=metrics, source_keys=[s.key for s in sources], source_budget_images=ms[0]["budget_images"],
        source_images_processed=ms[0]["images_processed"], source_flops=ms[0].get("flops"),
        source_flops_method=ms[0].get("flops_method"), source_seconds=sum(m["seconds"] for m in ms),
        source_images_per_second=float(np.mean([m["images_per_second"] for m in ms])),
        source_peak_memory_mb=max(m["peak_memory_mb"] for m in ms), source_device=ms[0]["device"],
        source_cached=all(s.cached for s in sources), source_metrics=ms[0].get("metrics", {}),
        episode_seconds=seconds, ms_per_episode=1000 * seconds / n, episode_flops=episode_flops,
        query_images_per_second=n * spec.protocol.ways * spec.protocol.queries / max(seconds, 1e-9),
        episode_peak_memory_mb=peak,
        sealed_batches=len(rounds), independence_check=check, seal_seconds=max(wall - seconds, 0.0),
        tuning=tuning, tuning_seconds=tuning_seconds, tuning_flops=tuning_flops,
        device=strategy.adapter.runs_on(ctx.device), scores_as=getattr(strategy.adapter, "scores_as", "logits"),
        predictions=predictions_path(strategy.name, unit.shots, unit.scale), predictions_sha256=digest(data),
        **summarise(predictions))
    return record.attach(data)
