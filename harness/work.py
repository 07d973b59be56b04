"""``run_unit(unit, context, sources) -> SourceResult | Record``: one unit of work, in any process.

A :class:`UnitContext` holds what every unit of a run needs and no unit changes: the run's settings
(:class:`RunSpec`), the dataset's pools on the device and the fixed episode sets. Executors build one per
process (the local executor once; a Ray worker from the arrays in the object store).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.datasets.base import FewShotData
from harness.episodes import EpisodeSet
from harness.faults import checkpoint
from harness.measure import Stopwatch, device_name
from harness.phases import SourceData
from harness.provenance import relative_file
from harness.schema import Record
from harness.stats import ci95
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
        self.device = torch.device(spec.device)
        self.base_images = torch.from_numpy(data.base.nchw())
        self.base_labels = torch.from_numpy(data.base.labels)
        from harness.augment import to_float

        self.pool = to_float(torch.from_numpy(data.novel.nchw()).to(self.device), data.mean, data.std).contiguous()
        self._episodes: dict[int, EpisodeSet] = {}

    def episode_set(self, shots: int) -> EpisodeSet:
        if shots not in self._episodes:
            s = self.spec
            self._episodes[shots] = EpisodeSet.draw(self.data.novel.labels, range(len(self.data.novel.classes)),
                                                    s.ways, shots, s.queries, s.episodes, s.seed,
                                                    self.data.fingerprint)
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


def train_source(unit: SourceUnit, ctx: UnitContext) -> SourceResult:
    phase = unit.strategy.source
    spec = ctx.spec
    labels = ctx.base_labels.to(ctx.device) if phase.uses_labels else None
    with ctx.bar(unit.label, unit.budget_images, "img", "source-step") as progress:
        data = SourceData(ctx.base_images.to(ctx.device), labels, len(ctx.data.base.classes), ctx.device,
                          unit.seed, progress, ways=spec.ways, shots=unit.shots, queries=spec.queries,
                          mean=ctx.data.mean, std=ctx.data.std, metrics={})
        with Stopwatch(ctx.device) as watch:
            model = phase.train(data, unit.budget_images)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    measurements = {"phase": phase.phase_name, "params": phase.params(), "budget_images": unit.budget_images,
                    "seconds": watch.seconds, "images_per_second": unit.budget_images / max(watch.seconds, 1e-9),
                    "peak_memory_mb": watch.peak_memory_mb, "device": device_name(ctx.device),
                    "metrics": data.metrics}
    return SourceResult(unit.key, phase.spec(model), state, measurements)


def load_model(unit: EvalUnit, result: SourceResult, device: torch.device) -> torch.nn.Module:
    model = unit.strategy.source.rebuild(result.spec)
    model.load_state_dict(result.state)
    return model.to(device).eval()


def base_record(strategy: Any, shots: int, spec: RunSpec, device: torch.device) -> Record:
    """The fields of a record that do not depend on running it (also those of failed and skipped rows)."""
    record = Record(strategy=strategy.name, family=strategy.family, shots=shots, ways=spec.ways,
                    queries=spec.queries, episodes=spec.episodes, dataset=spec.dataset, seed=spec.seed,
                    device=device_name(device), torch_version=torch.__version__)
    if hasattr(strategy, "source"):  # a Strategy (a skipped row may only have its name and family)
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


def evaluate(unit: EvalUnit, ctx: UnitContext, sources: list[SourceResult]) -> Record:
    (source,) = sources  # one trained model per evaluation (training-seed replicates: see the trust issue)
    strategy = unit.strategy
    model = load_model(unit, source, ctx.device)
    episode_set = ctx.episode_set(unit.shots)
    tasks = episode_set.batch(ctx.pool, ctx.data.mean, ctx.data.std)
    with ctx.bar(unit.label, len(tasks), "ep", "episode") as progress, Stopwatch(ctx.device) as watch:
        outputs = strategy.run_episodes(model, tasks, progress)
    scores = episode_set.score(outputs, strategy.name)
    accs = np.array(scores["episode_accuracies"])
    metrics: dict[str, float] = {}
    for name, values in scores["extra_accuracies"].items():
        metrics[f"{name}_accuracy"], metrics[f"{name}_ci95"] = float(np.mean(values)), ci95(np.array(values))
    m = source.measurements
    n = len(tasks)
    return dataclasses.replace(
        base_record(strategy, unit.shots, ctx.spec, ctx.device),
        episode_fingerprint=episode_set.fingerprint(), accuracy=float(accs.mean()), ci95=ci95(accs),
        episode_accuracies=[round(float(a), 6) for a in accs], metrics=metrics, source_key=source.key,
        source_budget_images=m["budget_images"], source_seconds=m["seconds"],
        source_images_per_second=m["images_per_second"], source_peak_memory_mb=m["peak_memory_mb"],
        source_device=m["device"], source_cached=source.cached, source_metrics=m.get("metrics", {}),
        episode_seconds=watch.seconds, ms_per_episode=1000 * watch.seconds / n,
        query_images_per_second=n * tasks.queries_per_episode / max(watch.seconds, 1e-9),
        episode_peak_memory_mb=watch.peak_memory_mb)
