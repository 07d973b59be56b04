"""Cluster sizing: a finished run's estimated wall time on N workers (``python -m harness plan RUN_DIR
--workers 1,2,4,8``), so a cluster can be sized before it is rented.

Unit times come from the run's records (status ``ok``; failed and skipped rows have none):

- an evaluation unit takes its record's ``episode_seconds`` (the timed episodes: the untimed warm-up
  episode and loading the model are left out);
- a source unit takes the ``source_seconds`` of the records that used it (rows with equal
  ``source_keys`` share one unit; with replicates a record's time is split equally between its keys). A
  source model that came from the cache cost nothing in that run, but the time recorded when it was
  trained is counted: the estimate is for a run with an empty cache. ``--warm-cache`` counts those as 0.

The schedule is a list scheduler on N identical workers: one unit per worker at a time, no start-up,
data-transfer or queueing costs, every worker as fast as the machine that measured the times. Whenever a
worker is free it takes, among the units whose source units have finished, the one with the longest
path to the end of the run (its own time plus the longest chain of units waiting for it: a source unit
comes with its longest evaluation), ties to the longer unit, then the plan order. Without dependencies
that is longest-processing-time-first. A worker is one slot that runs one unit: with the Ray executor,
GPUs / --gpus-per-unit of them (e.g. 8 GPUs at --gpus-per-unit 0.5: 16 workers).

This module imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from harness.schema import Record, RunHeader


@dataclass(frozen=True)
class TimedUnit:
    id: str
    seconds: float
    needs: tuple[str, ...] = ()  # ids of the units that must finish first
    cached: bool = False  # a source model the run loaded from the cache


@dataclass
class Schedule:
    workers: int
    makespan: float
    starts: dict[str, float] = field(default_factory=dict)
    worker_of: dict[str, int] = field(default_factory=dict)


def run_budgets(header: RunHeader) -> dict[str, float] | None:
    """The FLOP budget of each budget group a run gave its phases, in supervised-image equivalents (its preset's,
    ``--budget`` overrides applied, every group the pretrain group's with --match-compute), from its header."""
    budgets: dict[str, float] = dict(header.preset_budgets or {})
    run = header.run or {}
    for item in run.get("budget") or []:
        group, _, value = str(item).partition("=")
        try:
            budgets[group.strip()] = int(value.replace("_", "").replace(",", ""))
        except ValueError:
            continue
    if run.get("match_compute") and "pretrain" in budgets:
        budgets = dict.fromkeys(budgets, budgets["pretrain"])
    return budgets or None


def scaling(record: Record, preset: object | None, budgets: dict[str, float] | None = None) -> tuple[float, float]:
    """(source, episode) time factors taking ``record`` to the budgets and episode count of ``preset`` (None:
    1, 1): times are taken as proportional to the source FLOPs and to the episodes (constant throughput).
    Budgets are FLOP budgets in supervised-image equivalents, so a record with a FLOP budget (``matched_flops``)
    scales by the preset's group budget over the one its run gave (``budgets``, :func:`run_budgets`; with the
    preset's --match-compute, the pretrain group's); a record without (older runs, whose budgets were images)
    by the preset's images over its budget images."""
    if preset is None:
        return 1.0, 1.0
    group = record.budget_group or ""
    episodes = preset.episodes / max(1, record.episodes or 1)
    if record.matched_flops and budgets and budgets.get(group):
        target = preset.source_images.get("pretrain" if getattr(preset, "match_compute", False) else group, 0)
        return (target / budgets[group] if target else 1.0), episodes
    budget = preset.source_images.get(group, 0) * (record.budget_scale or 1.0)
    done = record.source_budget_images or 0
    return (budget / done if budget and done else 1.0), episodes


def tuning_seconds(record: Record, tune: int | None = None, tune_episodes: int = 100) -> float:
    """An evaluation unit's tuning time (``--tune``): a tuned record's ``tuning_seconds``; with ``tune``, N
    configurations of V (``tune_episodes``) validation episodes at the seconds per validation episode the record
    measured, or, for an untuned record, at its seconds per scored episode (a row with nothing to tune runs one)."""
    recorded = record.tuning
    if tune is None:
        return float(record.tuning_seconds or 0.0) if recorded else 0.0
    if recorded and record.tuning_seconds:
        per_episode = record.tuning_seconds / max(1, len(recorded["tried"]) * recorded["episodes"])
        tune = 1 if len(recorded["tried"]) == 1 else tune
    else:
        replicates = max(1, len(record.source_keys or [None]))
        per_episode = (record.episode_seconds or 0.0) / max(1, (record.episodes or 1) * replicates)
    return per_episode * tune * tune_episodes


def units_of(records: list[Record], warm_cache: bool = False, preset: object | None = None,
             budgets: dict[str, float] | None = None, tune: int | None = None,
             tune_episodes: int = 100) -> list[TimedUnit]:
    """Source units (by cache key) then evaluation units of the ``ok`` records, in record order; with ``preset``
    (a :class:`harness.presets.Preset`) their times scaled to its budgets and episodes (:func:`scaling`; ``budgets``:
    the run's group budgets, :func:`run_budgets`)."""
    sources: dict[str, TimedUnit] = {}
    evaluations: list[TimedUnit] = []
    for r in records:
        if r.status != "ok":
            continue
        keys = r.source_keys or []
        source_factor, episode_factor = scaling(r, preset, budgets)
        for key in keys:
            seconds = (r.source_seconds or 0.0) / len(keys) * source_factor
            cached = bool(r.source_cached)
            if key in sources:  # trained in the run if any of its rows says so
                seconds, cached = max(seconds, sources[key].seconds), cached and sources[key].cached
            sources[key] = TimedUnit(f"source:{key}", seconds, (), cached)
        name = f"eval:{r.strategy}:{r.shots}:{r.budget_scale:g}"
        seconds = (r.episode_seconds or 0.0) * episode_factor + tuning_seconds(r, tune, tune_episodes)
        evaluations.append(TimedUnit(name, seconds, tuple(f"source:{k}" for k in keys)))
    if warm_cache:
        sources = {k: dataclasses.replace(u, seconds=0.0) if u.cached else u for k, u in sources.items()}
    return [*sources.values(), *evaluations]


def path_lengths(units: list[TimedUnit]) -> dict[str, float]:
    """Each unit's time plus the longest chain of units that depend on it."""
    dependents: dict[str, list[str]] = defaultdict(list)
    for u in units:
        for need in u.needs:
            dependents[need].append(u.id)
    by_id = {u.id: u for u in units}
    lengths: dict[str, float] = {}
    for u in reversed(_topological(units)):
        lengths[u.id] = u.seconds + max((lengths[d] for d in dependents[u.id] if d in by_id), default=0.0)
    return lengths


def _topological(units: list[TimedUnit]) -> list[TimedUnit]:
    by_id, seen, order = {u.id: u for u in units}, set(), []

    def visit(u: TimedUnit, stack: frozenset) -> None:
        if u.id in stack:
            raise ValueError(f"dependency cycle through {u.id}")
        if u.id not in seen:
            for need in u.needs:
                if need in by_id:
                    visit(by_id[need], stack | {u.id})
            seen.add(u.id)
            order.append(u)

    for u in units:
        visit(u, frozenset())
    return order


def schedule(units: list[TimedUnit], workers: int) -> Schedule:
    """The list schedule (see the module docstring) of ``units`` on ``workers`` identical workers; needs
    on units not in the list count as met."""
    if workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    by_id = {u.id: u for u in units}
    order = {u.id: i for i, u in enumerate(units)}
    length = path_lengths(units)
    dependents: dict[str, list[str]] = defaultdict(list)
    missing = {u.id: 0 for u in units}
    for u in units:
        for need in u.needs:
            if need in by_id:
                dependents[need].append(u.id)
                missing[u.id] += 1
    ready = [(-length[u.id], -u.seconds, order[u.id], u.id) for u in units if missing[u.id] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int, str]] = []
    idle = list(range(workers))
    result, now = Schedule(workers, 0.0), 0.0
    while ready or running:
        while ready and idle:
            *_, uid = heapq.heappop(ready)
            result.starts[uid], result.worker_of[uid] = now, idle.pop(0)
            heapq.heappush(running, (now + by_id[uid].seconds, order[uid], uid))
        now, _, uid = heapq.heappop(running)
        idle.append(result.worker_of[uid])
        idle.sort()
        for d in dependents[uid]:
            missing[d] -= 1
            if missing[d] == 0:
                heapq.heappush(ready, (-length[d], -by_id[d].seconds, order[d], d))
    result.makespan = now
    return result


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def worker_counts(text: str) -> list[int]:
    """``4`` or ``1,2,4,8`` (argparse type)."""
    counts = []
    for part in text.replace(",", " ").split():
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"worker counts are positive integers, got {part!r}")
        counts.append(int(part))
    return counts


def wall_time_table(run_dir: str | Path, workers: list[int], warm_cache: bool = False, preset: str | None = None,
                    tune: int | None = None, tune_episodes: int = 100) -> str:
    """The estimate for each worker count, as printed by ``plan``; UsageError on a bad run directory. With
    ``preset``, the run's unit times are scaled to that preset's budgets and episodes first."""
    from tabulate import tabulate

    from harness.errors import UsageError
    from harness.presets import get_preset
    from harness.results import load_run

    target = get_preset(preset) if preset else None
    run = load_run(run_dir)
    records = run.records
    if tune is not None:
        from harness.tuning import check_trials

        check_trials(tune, tune_episodes)
    units = units_of(records, warm_cache, target, run_budgets(run.header), tune, tune_episodes)
    sources = [u for u in units if not u.needs and u.id.startswith("source:")]
    evaluations = [u for u in units if u.id.startswith("eval:")]
    if not evaluations:
        raise UsageError(f"{run_dir} has no finished (ok) record, so no measured unit time; run it first")
    total = sum(u.seconds for u in units)
    critical = max(path_lengths(units).values())
    cached = sum(u.cached for u in sources)
    lines = [f"{run_dir}: {_count(len(sources), 'source unit')} and {_count(len(evaluations), 'evaluation unit')}, "
             f"{duration(total)} of measured unit time" + (f" scaled to the {target.name} preset ({target.episodes:,} "
                                                            f"episodes and its budgets)" if target else "")]
    tuned = sum(tuning_seconds(r, tune, tune_episodes) for r in records if r.status == "ok")
    if tuned:
        lines.append(f"tuning (--tune) included: {duration(tuned)}" + (
            f" for {tune} configurations x {tune_episodes} validation episodes per evaluation unit, at the measured "
            f"seconds per episode" if tune is not None else ", as recorded"))
    if cached:
        lines.append(f"{_count(cached, 'source model')} came from the cache in that run: "
                     + ("counted as free (--warm-cache)" if warm_cache
                        else "their recorded training time is counted (an empty cache; --warm-cache: free)"))
    left = sum(r.status != "ok" for r in records)
    if left:
        lines.append(f"{_count(left, 'failed or skipped row')} without measured times left out")
    rows = []
    for n in sorted(set(workers)):
        s = schedule(units, n)
        busy = total / (n * s.makespan) if s.makespan else 1.0
        rows.append([n, duration(s.makespan), f"{total / s.makespan if s.makespan else 1:.2f}x", f"{busy:.0%}",
                     duration(max(total / n, critical))])
    lines += ["", tabulate(rows, headers=["workers", "estimated wall time", "speedup", "busy", "lower bound"],
                           tablefmt="simple", colalign=("right", "right", "right", "right", "right")), "",
              "assumes: one unit per worker at a time; workers as fast as the machine that measured the run; no",
              "start-up or transfer costs; each source unit before its evaluations, the longest path first"]
    if target:
        lines += ["scaled: source time x (preset FLOP budget / FLOP budget run, by budget group), episode time x "
                  "(preset episodes / episodes run): constant throughput"]
    return "\n".join(lines)
