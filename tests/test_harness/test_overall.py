"""The overall progress line: units done / total, elapsed, and time left from the rates measured so far."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from harness.overall import Overall, clock
from harness.schema import Record
from harness.units import EvalUnit, Plan, SourceUnit


def unit(name: str, keys: tuple[str, ...]) -> EvalUnit:
    return EvalUnit(strategy=SimpleNamespace(name=name), shots=1, source_keys=keys)


def record(**fields) -> Record:
    return dataclasses.replace(Record(strategy="x", family="f", shots=1, episodes=10), **{"status": "ok", **fields})


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_clock_format():
    assert [clock(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_time_left_from_measured_rates_and_wall_time_per_strategy():
    sources = {k: SourceUnit(key=k, strategy=None, budget_images=n, seed=0)
               for k, n in [("a", 1000), ("b", 3000), ("c", 500)]}
    units = [unit("one", ("a",)), unit("two", ("a",)), unit("three", ("b",)), unit("four", ("c",))]
    now = Clock()
    overall = Overall(Plan(sources, units), cached=lambda key: key == "c", now=now)
    assert overall.line() == "[0/4 units, 0s elapsed, time left: after the first source phase]"
    now.t = 12.0  # 10 s for source "a" (1000 images: 0.01 s/image) + 2 s of episodes
    line = overall.update(units[0], record(source_seconds=10.0, source_budget_images=1000, episode_seconds=2.0))
    # left: source b (3000 images x 0.01 s) + 3 units x 2 s of episodes; c is cached
    assert line == "[1/4 units, 12s elapsed, about 36s left]"
    now.t = 15.0
    overall.update(units[1], record(source_seconds=10.0, source_budget_images=1000, source_cached=True,
                                    episode_seconds=4.0))  # shares "a": no new source time counted
    assert overall.left() == 30.0 + 2 * 3.0
    now.t = 50.0
    overall.update(units[2], record(source_seconds=30.0, source_budget_images=3000, episode_seconds=3.0))
    now.t = 52.0
    assert overall.update(units[3], record(status="failed")) == "[4/4 units, 52s elapsed, done]"
    assert overall.summary() == [("three", 35.0), ("one", 12.0), ("two", 3.0), ("four", 2.0)]
