"""The run's overall progress line (evaluation units done / total, elapsed, time left) and the final wall
time per strategy.

Time left is estimated from rates this run has measured: seconds per source image (over the source
phases it trained) times the budget images of the source units still to train, plus the mean episode-phase
time of the units done times the units left (every unit runs the same episodes). Until a source phase has
been trained the estimate is unknown when source units remain (source phases dominate and their cost
differs by pretrainer). Pure bookkeeping: it never touches the run directory.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.schema import Record
from harness.units import EvalUnit, Plan


def clock(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``4m05s`` or ``12s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class Overall:
    plan: Plan  # the units this invocation runs (already completed ones removed)
    cached: Callable[[str], bool] = lambda key: False  # whether a source key is already in the cache
    now: Callable[[], float] = time.monotonic
    start: float = field(default=0.0)
    done: set[str] = field(default_factory=set)
    sources_done: set[str] = field(default_factory=set)
    source_seconds: float = 0.0  # of the source phases trained in this run ...
    source_images: float = 0.0  # ... and their budget images
    episode_seconds: float = 0.0  # of the evaluation units done ...
    timed_units: int = 0  # ... and their number
    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # strategy -> seconds
    last: float = 0.0

    def __post_init__(self) -> None:
        self.start = self.last = self.now()

    @property
    def total(self) -> int:
        return len(self.plan.evaluations)

    def update(self, unit: EvalUnit, record: Record) -> str:
        """Account for ``unit`` (done, ok or failed) and return the overall line."""
        now = self.now()
        self.wall[unit.strategy.name] += now - self.last  # the wall time since the previous unit ended
        self.last = now
        self.done.add(unit.id)
        new = [k for k in unit.source_keys if k not in self.sources_done]
        self.sources_done.update(unit.source_keys)
        if record.status == "ok":
            if not record.source_cached and new and record.source_seconds and record.source_budget_images:
                self.source_seconds += record.source_seconds * len(new) / len(unit.source_keys)
                self.source_images += record.source_budget_images * len(new)
            if record.episode_seconds:  # with --tune, its validation episodes too (every unit tunes alike)
                self.episode_seconds += record.episode_seconds + (record.tuning_seconds or 0.0)
                self.timed_units += 1
        return self.line()

    def left(self) -> float | None:
        """Estimated seconds left, or None when it cannot be estimated yet."""
        remaining = [e for e in self.plan.evaluations if e.id not in self.done]
        keys = {k for e in remaining for k in e.source_keys if k not in self.sources_done and not self.cached(k)}
        seconds = 0.0
        if keys:
            if not self.source_images:
                return None
            seconds += self.source_seconds / self.source_images * sum(self.plan.sources[k].budget_images
                                                                       for k in keys)
        if remaining:
            if not self.timed_units:
                return None
            seconds += self.episode_seconds / self.timed_units * len(remaining)  # every unit runs the same episodes
        return seconds

    def line(self) -> str:
        elapsed = self.now() - self.start
        left = self.left()
        rest = "done" if len(self.done) >= self.total else (
            f"about {clock(left)} left" if left is not None else "time left: after the first source phase")
        return f"[{len(self.done)}/{self.total} units, {clock(elapsed)} elapsed, {rest}]"

    def summary(self) -> list[tuple[str, float]]:
        """Wall time per strategy in this invocation (source phases count for the first row that needs them),
        longest first."""
        return sorted(self.wall.items(), key=lambda kv: -kv[1])
