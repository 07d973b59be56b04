"""Units of work are values: ``plan_units(...) -> Plan`` (source and evaluation units).

A :class:`SourceUnit` trains one source phase (one per distinct cache key: equal source phases of
several rows are trained once; per shot setting where the phase is per-shots). An :class:`EvalUnit`
scores one strategy at one shot setting on the fixed episodes; it depends on its source unit(s) by
cache key. Units are small picklable dataclasses (hyperparameters and names, no data or models), so any
executor (harness/executors) can run them in any order that respects the dependencies, in any process.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from harness.phases import Strategy


@dataclass(frozen=True)
class SourceResult:
    """A trained (or cached) source model: its architecture spec, its state dict on the CPU and the
    measurements of the phase that trained it."""

    key: str
    spec: dict[str, Any]
    state: dict[str, Any]  # parameter name -> CPU tensor
    measurements: dict[str, Any]
    cached: bool = False


@dataclass(frozen=True)
class SourceUnit:
    key: str  # the cache key (harness/cache.py)
    strategy: Strategy  # the first row that uses it (its source phase is what is trained)
    budget_images: int
    seed: int  # training seed
    users: tuple[str, ...] = ()  # every row that uses it (for progress lines)
    flops_per_image: tuple[float, str] | None = None  # measured already (for its FLOP budget), with how

    @property
    def id(self) -> str:
        return f"source:{self.key}"

    @property
    def label(self) -> str:
        source = self.strategy.source
        return source.phase_name + (f" ({source.shots}-shot)" if type(source).per_shots and source.shots else "")


@dataclass(frozen=True)
class EvalUnit:
    strategy: Strategy
    shots: int
    source_keys: tuple[str, ...]  # the source units it needs
    scale: float = 1.0  # the budget scale of its source phases
    matched_flops: float | None = None  # the FLOP budget of its source phases (x scale)

    @property
    def id(self) -> str:
        return f"eval:{self.strategy.name}:{self.shots}:{self.scale:g}"

    @property
    def label(self) -> str:
        return f"{self.strategy.name} {self.shots}-shot" + ("" if self.scale == 1 else f" x{self.scale:g}")


Unit = SourceUnit | EvalUnit


@dataclass
class Plan:
    """The units of a run; sources keyed by cache key, evaluations in (strategy, shots) order."""

    sources: dict[str, SourceUnit] = field(default_factory=dict)
    evaluations: list[EvalUnit] = field(default_factory=list)

    def dependents(self, key: str) -> list[EvalUnit]:
        return [e for e in self.evaluations if key in e.source_keys]

    def without(self, done: set[str]) -> Plan:
        """The plan minus evaluation units whose ids are in ``done`` and the sources only they needed."""
        evaluations = [e for e in self.evaluations if e.id not in done]
        needed = {k for e in evaluations for k in e.source_keys}
        return Plan({k: u for k, u in self.sources.items() if k in needed}, evaluations)


def replicate_seeds(seed: int, replicates: int) -> list[int]:
    """Training seeds of ``replicates`` source models: the run seed, then seeds derived from it."""
    derived = [int.from_bytes(hashlib.sha256(f"{seed}|replicate|{r}".encode()).digest()[:4], "little") % 2**31
               for r in range(1, replicates)]
    return [seed, *derived]


@dataclass(frozen=True)
class Budget:
    """A source phase's budget in images processed, and the FLOP budget behind it (harness/budgets.py)."""

    images: int
    flops_per_image: tuple[float, str] | None = None
    matched_flops: float | None = None


def for_shots(strategy: Strategy, shots: int) -> Strategy:
    """The row as it runs at ``shots``: a per-shots source phase (``Pretrainer.per_shots``) gets its ``shots`` field
    set to the evaluation's unless given."""
    source = strategy.source
    if not type(source).per_shots or source.shots is not None:
        return strategy
    return dataclasses.replace(strategy, source=dataclasses.replace(source, shots=shots))


def plan_units(strategies: list[Strategy], shots: list[int], scales: list[float], seeds: list[int],
               budget_of: Any, key_of: Any) -> Plan:
    """One evaluation unit per (strategy, shots, budget scale), needing one source model per training seed;
    one source unit per distinct cache key. A per-shots source phase runs with its ``shots`` set (:func:`for_shots`),
    in both units. ``budget_of(strategy, scale)`` gives a :class:`Budget`, ``key_of(strategy, seed, budget_images)``
    the cache key."""
    result = Plan()
    for row in strategies:
        for s in shots:
            strategy = for_shots(row, s)
            for scale in scales:
                budget = budget_of(strategy, scale)
                keys = []
                for seed in seeds:
                    key = key_of(strategy, seed, budget.images)
                    unit = result.sources.get(key)
                    if unit is None:
                        result.sources[key] = SourceUnit(key, strategy, budget.images, seed, (strategy.name,),
                                                         budget.flops_per_image)
                    elif strategy.name not in unit.users:
                        result.sources[key] = dataclasses.replace(unit, users=(*unit.users, strategy.name))
                    keys.append(key)
                result.evaluations.append(EvalUnit(strategy, s, tuple(keys), scale, budget.matched_flops))
    return result
