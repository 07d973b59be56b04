"""Hyperparameter tuning with one budget for every row (``run --tune N``).

An adapter declares which of its hyperparameters are tunable, and their ranges, in the dataclass field's
metadata (:func:`tunable`)::

    C: float = tunable(10.0, 1e-2, 1e3, log=True)  # the probe's inverse L2 strength, log-uniform

With ``--tune N`` each ranked row's adapter is evaluated at N configurations, the defaults plus N-1 drawn from
these ranges by a generator seeded with the run seed and the adapter's class (:func:`configurations`: the same
draws for every row of one adapter, every shot setting and every rerun), on V validation episodes drawn from
the dataset's validation pool (never a novel image; harness/datasets/base.py ``hold_out_validation`` for a
dataset without one) and adapted through the same sealed processes as the scored episodes. The configuration
with the best mean validation accuracy (the earliest on a tie, so the defaults win ties) is scored.
``--tune 1`` is the untuned control: the defaults, on the same source models (trained without the held-out
images) and validation episodes as a tuned run, so ``report --compare`` pairs the two on the same episodes.

Source-phase hyperparameters are never tuned (each configuration would retrain a source model), and the
configurations are drawn at random (Bergstra & Bengio 2012, "Random Search for Hyper-Parameter
Optimization", JMLR): no search adapts to earlier results, so the budget, N configurations on the same V
episodes, is the same for every row. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UsageError


@dataclass(frozen=True)
class Space:
    """A hyperparameter's range: uniform or log-uniform on [low, high], rounded for integers."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def draw(self, rng: random.Random) -> float | int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.integer:
            return int(min(max(round(value), self.low), self.high))
        return float(f"{value:.4g}")  # readable in the report, and the same after a JSON round trip

    def describe(self) -> str:
        kind = "integer " if self.integer else ""
        scale = "log-uniform" if self.log else "uniform"
        return f"{kind}{scale} [{self.low:g}, {self.high:g}]"


def tunable(default: Any, low: float, high: float, *, log: bool = False, integer: bool = False) -> Any:
    """A dataclass field with a default and the range ``--tune`` draws it from."""
    if not 0 < low < high if log else not low < high:
        raise ValueError(f"a tunable range needs low < high (and low > 0 on a log scale), got [{low}, {high}]")
    return field(default=default, metadata={"tune": Space(low, high, log, integer)})


def search_space(adapter: Any) -> dict[str, Space]:
    """The adapter's tunable fields and their ranges (empty: nothing to tune)."""
    if not dataclasses.is_dataclass(adapter):
        return {}
    return {f.name: f.metadata["tune"] for f in dataclasses.fields(adapter) if "tune" in f.metadata}


def configurations(adapter: Any, trials: int, seed: int) -> list[dict[str, Any]]:
    """The ``trials`` configurations a row is evaluated at: its current values (the defaults after the run's
    overrides) first, then ``trials - 1`` draws; one configuration when there is nothing to tune."""
    space = search_space(adapter)
    first = {name: getattr(adapter, name) for name in space}
    if not space:
        return [first]
    name = f"{type(adapter).__module__}.{type(adapter).__qualname__}"
    rng = random.Random(hashlib.sha256(f"{seed}|tune|{name}".encode()).digest())
    return [first, *({k: s.draw(rng) for k, s in space.items()} for _ in range(trials - 1))]


def with_params(strategy: Any, params: dict[str, Any]) -> Any:
    """The row with its adapter's fields set to ``params`` (checked like any override)."""
    adapter = dataclasses.replace(strategy.adapter, **params)
    tried = dataclasses.replace(strategy, adapter=adapter)
    tried.adapter.check(tried.source)
    return tried


def best(trials: list[dict[str, Any]]) -> int:
    """The index of the trial with the highest mean validation accuracy; the earliest on a tie."""
    return max(range(len(trials)), key=lambda i: (trials[i]["accuracy"], -i))


def check_trials(value: int | None, episodes: int) -> None:
    """``--tune N`` / ``--tune-episodes V``: one line and exit 2 for values that cannot tune anything."""
    if value is None:
        return
    if value < 1:
        raise UsageError(f"--tune {value}: give a positive number of configurations (1: the defaults only, the "
                         f"untuned control; 8: the defaults plus 7 drawn), or leave --tune out")
    if episodes < 1:
        raise UsageError(f"--tune-episodes must be a positive integer, got {episodes}")


def validate_validation(data: Any, ways: int, shots: int, queries: int, episodes: int) -> None:
    """The validation pool can serve ``--tune``'s episodes: one line and exit 2 otherwise."""
    from harness.episodes import validate_protocol

    try:
        validate_protocol(data.validation.class_sizes(), ways, shots, queries, episodes)
    except UsageError as e:
        raise UsageError(f"--tune: the validation pool ({data.validation_note or 'the validation classes'}) cannot "
                         f"serve its episodes: {e}") from None


def describe_spaces(adapter: Any) -> str:
    """``C: log-uniform [0.01, 1000] (default 10)``; "" when nothing is tunable."""
    return "; ".join(f"{name}: {space.describe()} (default {_value(getattr(adapter, name))})"
                     for name, space in search_space(adapter).items())


def _value(value: Any) -> str:
    return "the source's" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
