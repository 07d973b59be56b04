"""``run_unit(unit, context, sources) -> SourceResult | Record``: one unit of work, in any process.

A :class:`UnitContext` holds what every unit of a run needs and no unit changes: the run's settings
(:class:`RunSpec`), the dataset's pools on the device and the fixed episode sets. Executors build one per
process (the local executor once; a Ray worker from the arrays in the object store).

Timing is honest: device work is synchronised at both ends; a source phase's throughput leaves out its
first (warm-up) step; the episode phase runs one untimed warm-up episode before the timed ones.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.datasets.base import FewShotData
from harness.episodes import EpisodeSet, content_keys
from harness.faults import checkpoint
from harness.flops import flops_per_image
from harness.measure import Stopwatch, autocast, configure, device_name, synchronize
from harness.phases import SourceData
from harness.provenance import relative_file
from harness.schema import Record
from harness.stats import accuracy_interval, image_pool
from harness.units import EvalUnit, SourceResult, SourceUnit

#: (description, total, unit) -> a progress bar: call it with the amount done, close() it at the end
ProgressFactory = Callable[[str, int, str], Any]


@dataclass(frozen=True)
class RunSpec:
    """The run settings every unit needs (picklable)."""

    dataset: str
    ways: int
    queries: int
    episodes: int
    seed: int
    device: str  # "cpu", "cuda", "cuda:1"
    precision: str = "fp32"
    deterministic: bool = True
    quiet: bool = True


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
        configure(spec.deterministic)
        self.device = torch.device(spec.device)
        self.base_images = torch.from_numpy(data.base.nchw())
        self.base_labels = torch.from_numpy(data.base.labels)
        from harness.augment import to_float

        self.pool = to_float(torch.from_numpy(data.novel.nchw()).to(self.device), data.mean, data.std).contiguous()
        self._episodes: dict[int, EpisodeSet] = {}
        self._content: np.ndarray | None = None

    def episode_set(self, shots: int) -> EpisodeSet:
        if shots not in self._episodes:
            s = self.spec
            if self._content is None:  # the order images are presented in (harness/episodes.py says why)
                self._content = content_keys(self.data.novel.images)
            self._episodes[shots] = EpisodeSet.draw(self.data.novel.labels, range(len(self.data.novel.classes)),
                                                    s.ways, shots, s.queries, s.episodes, s.seed,
                                                    self.data.fingerprint, self._content)
        return self._episodes[shots]

    @contextmanager
    def bar(self, description: str, total: int, unit: str, fault_point: str) -> Iterator[Callable[[int], None]]:
        """A progress callback for a phase (with its fault-injection point), closed at the end."""
        bar = self.progress(description, total, unit)

        def report(n: int) -> None:
            bar(n)
            checkpoint(fault_point)

        try:
            yield report
        finally:
            bar.close()


def run_unit(unit: SourceUnit | EvalUnit, context: UnitContext, sources: list[SourceResult] | None = None):
    """Run one unit: a SourceUnit returns a :class:`SourceResult`, an EvalUnit a :class:`Record`."""
    if isinstance(unit, SourceUnit):
        return train_source(unit, context)
    return evaluate(unit, context, sources or [])


class _Counter:
    """Counts the images a phase reports and notes when its first step ended (the warm-up)."""

    def __init__(self, device: torch.device, report: Callable[[int], None]):
        self.device, self.report = device, report
        self.processed, self.first_count, self.first_time = 0, 0, 0.0

    def __call__(self, n: int) -> None:
        if self.processed == 0:
            synchronize(self.device)
            self.first_time, self.first_count = time.perf_counter(), n
        self.processed += n
        self.report(n)


def train_source(unit: SourceUnit, ctx: UnitContext) -> SourceResult:
    phase = unit.strategy.source
    spec = ctx.spec
    labels = ctx.base_labels.to(ctx.device) if phase.uses_labels else None
    with ctx.bar(unit.label, unit.budget_images, "img", "source-step") as progress:
        counter = _Counter(ctx.device, progress)
        data = SourceData(ctx.base_images.to(ctx.device), labels, len(ctx.data.base.classes), ctx.device,
                          unit.seed, counter, ways=spec.ways, shots=unit.shots, queries=spec.queries,
                          mean=ctx.data.mean, std=ctx.data.std, metrics={})
        with autocast(ctx.device, spec.precision):
            per_image, method = unit.flops_per_image or flops_per_image(phase, data)
        with Stopwatch(ctx.device) as watch, autocast(ctx.device, spec.precision):
            model = phase.train(data, unit.budget_images)
            synchronize(ctx.device)  # the queued device work belongs to the steady-state time
            end = time.perf_counter()
    steady = counter.processed - counter.first_count
    per_second = steady / max(end - counter.first_time, 1e-9) if steady > 0 else \
        counter.processed / max(watch.seconds, 1e-9)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    measurements = {"phase": phase.phase_name, "params": phase.params(), "budget_images": unit.budget_images,
                    "images_processed": counter.processed, "seconds": watch.seconds,
                    "images_per_second": per_second, "peak_memory_mb": watch.peak_memory_mb,
                    "device": phase.runs_on(ctx.device), "precision": spec.precision, "seed": unit.seed,
                    "flops": per_image * counter.processed, "flops_method": method, "metrics": data.metrics}
    return SourceResult(unit.key, phase.spec(model), state, measurements)


def load_model(unit: EvalUnit, result: SourceResult, device: torch.device) -> torch.nn.Module:
    model = unit.strategy.source.rebuild(result.spec)
    model.load_state_dict(result.state)
    return model.to(device).eval()


def base_record(strategy: Any, shots: int, spec: RunSpec, device: torch.device, scale: float = 1.0,
                matched_flops: float | None = None) -> Record:
    """The fields of a record that do not depend on running it (also those of failed and skipped rows)."""
    record = Record(strategy=strategy.name, family=strategy.family, shots=shots, ways=spec.ways,
                    queries=spec.queries, episodes=spec.episodes, dataset=spec.dataset, seed=spec.seed,
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
        record.code = {k: v for k, v in (("source", relative_file(type(strategy.source))),
                                         ("adapter", relative_file(type(strategy.adapter)))) if v}
    return record


def check_independent(name: str, single: list, outputs: list, index: int, agreement: float = 0.9) -> None:
    """The adapter contract: an episode's output never depends on the other episodes of its batch (a batch
    of de-duplicated images would otherwise let an adapter link labels across episodes). Episode ``index``
    (drawn with ``secrets``: no strategy can know which), adapted alone, must predict what it predicts within
    the batch."""
    if len(single) != 1 or len(outputs) <= index:
        return  # the scoring reports the wrong count
    a, b = (o["logits"] if isinstance(o, dict) else o for o in (single[0], outputs[index]))
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape):
        return  # the scoring reports the wrong shape
    same = float((a.argmax(1) == b.argmax(1)).float().mean())
    if same < agreement:
        raise ValueError(f"{name} breaks the adapter contract: an episode adapted alone predicts {100 * same:.0f}% of "
                         f"its queries as it does inside the batch, so its output depends on the other episodes; "
                         f"adapt each episode from its own support set and queries only")


def evaluate(unit: EvalUnit, ctx: UnitContext, sources: list[SourceResult]) -> Record:
    """Every replicate's model on the same episodes; one record with per-replicate and averaged results."""
    strategy = unit.strategy
    episode_set = ctx.episode_set(unit.shots)
    tasks = episode_set.batch(ctx.pool, ctx.data.mean, ctx.data.std)
    per_episode, extras, seconds, peak = [], {}, 0.0, 0.0
    # the warm-up episode, alone in a sealed batch of its own images: its FLOPs are one episode's
    warm = episode_set.alone(episode_set.warm_up_index(), ctx.pool, ctx.data.mean, ctx.data.std)
    with ctx.bar(unit.label, len(tasks) * len(sources), "ep", "episode") as progress:
        for i, source in enumerate(sources):
            model = load_model(unit, source, ctx.device)
            if i == 0:  # one untimed warm-up episode (start-up costs, lazy initialisation), its FLOPs counted
                _, episode_flops = strategy.warm_up(model, warm)
            with Stopwatch(ctx.device) as watch:
                outputs = strategy.run_episodes(model, tasks, progress)
            if i == 0:  # untimed: an episode no strategy can predict, adapted alone, must predict the same
                k = secrets.randbelow(len(tasks))
                alone = strategy.run_episodes(model, episode_set.alone(k, ctx.pool, ctx.data.mean, ctx.data.std))
                check_independent(strategy.name, alone, outputs, k)
            seconds, peak = seconds + watch.seconds, max(peak, watch.peak_memory_mb)
            scores = episode_set.score(outputs, strategy.name)
            per_episode.append(scores["episode_accuracies"])
            for name, values in scores["extra_accuracies"].items():
                extras.setdefault(name, []).append(values)
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
    n = len(tasks) * len(sources)
    return dataclasses.replace(
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
        episode_seconds=seconds, ms_per_episode=1000 * seconds / n,
        episode_flops=None if episode_flops is None else float(episode_flops),
        query_images_per_second=n * tasks.queries_per_episode / max(seconds, 1e-9), episode_peak_memory_mb=peak,
        device=strategy.adapter.runs_on(ctx.device))
