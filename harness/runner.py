"""The thin driver of ``run``: validate everything, load the data, ``plan`` the units of work, hand them
to an executor, and let the session write what comes back.

    run = prepare(config, log)   # every check; nothing trained or written on bad input
    run.execute()                # header, then units through the executor; records as they finish

Every strategy is scored on the same :class:`harness.episodes.EpisodeSet` per shot setting; strategies
get sealed :class:`harness.episodes.TaskBatch` objects and return logits, which the episodes score.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import __version__
from harness.budgets import Budgets, cached_flops, parse_budgets
from harness.cache import SourceCache
from harness.datasets import get_dataset
from harness.datasets.base import FewShotData, default_cache_dir, hold_out_validation
from harness.datasets.domains import load_data, settle_queries
from harness.errors import UsageError, unknown
from harness.executors.base import Executor
from harness.io import atomic_write_json
from harness.measure import PRECISIONS, configure, determinism_settings, device_name, resolve_device
from harness.overall import Overall
from harness.phases import Strategy
from harness.presets import Preset, get_preset
from harness.protocol import Protocol, check_pools
from harness.provenance import code_version
from harness.registry import EXECUTORS
from harness.resolve import (
    Skipped,
    check_base_pool,
    check_out,
    default_out,
    resolve_strategies,
    source_key,
    without_base_pool,
)
from harness.results import read_header
from harness.resume import completed_units
from harness.runconfig import RunConfig
from harness.schema import SCHEMA_VERSION, Environment, Record, RunHeader
from harness.sealed import preload, run_secret
from harness.session import RunSession
from harness.tuning import check_trials
from harness.units import Plan, plan_units, replicate_seeds
from harness.work import RunSpec


@dataclass
class Run:
    config: RunConfig
    strategies: list[Strategy]
    skipped: list[Skipped]
    data: FewShotData
    preset: Preset
    device: torch.device
    out: Path
    cache: SourceCache
    plan: Plan
    protocol: Protocol
    log: Callable[[str], None]
    executor: Executor | None = None
    command: list[str] = field(default_factory=list)
    session: RunSession | None = None

    @property
    def spec(self) -> RunSpec:
        return RunSpec(self.protocol, str(self.device))

    def header(self) -> RunHeader:
        strategies = {s.name: {**s.params(), "source": {"phase": s.source.phase_name, **s.source.params()}}
                      for s in self.strategies}
        strategies.update({s.name: None for s in self.skipped})
        shots = list(self.protocol.shots)
        if (self.out / "config.json").is_file():  # resuming: keep what earlier invocations ran
            old = read_header(self.out)
            strategies = {**old.strategies, **strategies}
            shots = sorted(set(old.shots) | set(shots))
        scales = list(self.protocol.budget_scales)
        matched = next((u.matched_flops / u.scale for u in self.plan.evaluations if u.matched_flops), None) \
            if self.config.match_compute else None
        return RunHeader(harness_version=__version__, protocol=self.protocol.header(), shots=shots,
                         dataset_description=self.data.description, novel_classes=len(self.data.novel.classes),
                         preset_budgets=dict(self.preset.source_images), budget_scales=scales,
                         matched_flops=matched, strategies=strategies,
                         run=self.config.to_json(), domains=self.data.domains)

    def environment(self) -> Environment:
        import torchvision

        return Environment(harness_version=__version__, code_version=code_version(), python=platform.python_version(),
                           torch=torch.__version__, torchvision=torchvision.__version__, numpy=np.__version__,
                           platform=platform.platform(), device=device_name(self.device),
                           device_type=self.device.type, threads=torch.get_num_threads(),
                           precision=self.config.precision, determinism=determinism_settings(),
                           dataset=self.config.data_label or self.data.label or self.data.name,
                           data_source=self.data.source, data_layout=self.data.layout,
                           data_fingerprint=self.data.fingerprint, command=self.command)

    def resume_command(self) -> str:
        import shlex

        return shlex.join(["python", "-m", "harness", "run", "--resume", str(self.out)])

    def execute(self, progress: Any) -> list[Record]:
        """Write the header, then hand the units not finished already to the executor; the records of this run."""
        try:
            (self.out / "records").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot write to --out {self.out} ({e.strerror}); pass a writable directory") from None
        for folder in ("records", "predictions"):
            for stale in (self.out / folder).glob(".*.tmp"):  # left by a run killed while writing
                stale.unlink()
        atomic_write_json(self.out / "config.json", self.header().to_json())
        atomic_write_json(self.out / "environment.json", self.environment().to_json())
        spec = dataclasses.replace(self.spec, secret=run_secret(self.out), trials_dir=str(self.out / "tuning"))
        done = completed_units(self.out, self.plan, self.protocol)
        if done:
            names = sorted({u.strategy.name for u in self.plan.evaluations if u.id in done})
            self.log(f"already complete in {self.out}, skipped: {', '.join(names)}")
        todo = self.plan.without(set(done))
        self.session = RunSession(self.out, spec, self.data, self.cache, self.device, self.log, progress,
                                  self.config.fail_fast, Overall(todo, cached=self.cache.has))
        for s in self.skipped:
            self.session.skip(s)
        self.executor.execute(todo, self.session)
        return list(done.values()) + self.session.records


def prepare(config: RunConfig, tables: dict[str, dict], log: Callable[[str], None],
            command: list[str] | None = None) -> Run:
    """Validate everything and load the data; writes nothing but caches (decoded images, and each phase's
    measured FLOPs per image, for its FLOP budget)."""
    preset = get_preset(config.preset)
    executor = EXECUTORS.load(config.executor)(config)
    executor.check()  # e.g. its framework installed, its cluster reachable
    if config.precision not in PRECISIONS:
        raise unknown("precision", config.precision, PRECISIONS)
    device = resolve_device(config.device)
    configure(config.deterministic)
    strategies, skipped = resolve_strategies(config, tables)
    check_trials(config.tune, config.tune_episodes)
    get_dataset(config.dataset)  # a bad name or TOML file fails here, before anything is loaded
    if config.threads:
        torch.set_num_threads(config.threads)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    data = load_data(config.dataset, config.source_dataset, config.data_dir, cache_dir, config.strict_leaks)
    data = settle_queries(config, data)  # config.queries: a number from here on
    if config.tune:  # the validation pool (held out of the base pool when the dataset has none): before any key
        data = hold_out_validation(data)
    protocol = Protocol.of(config, data, device.type)
    check_pools(protocol, data)
    strategies, skipped = without_base_pool(strategies, skipped, data, config.all)
    check_base_pool(strategies, data, protocol)
    preload(strategies)  # one fork server for the whole run's sealed processes
    out = Path(config.out) if config.out else default_out()
    check_out(out, protocol)
    threads = executor.unit_threads()
    flops_of = cached_flops(data, device, protocol.ways, protocol.queries, protocol.seed, cache_dir,
                            lambda phase: source_key(phase, 0, data, protocol, 0, threads))
    budgets = Budgets(parse_budgets(config.budget, preset), list(protocol.budget_scales), config.match_compute,
                      flops_of, config.backbone or "conv4")
    seeds = replicate_seeds(protocol.seed, protocol.replicates)
    units = plan_units(strategies, list(protocol.shots), budgets.scales, seeds, budgets,
                       lambda s, seed, images: source_key(s.source, seed, data, protocol, images, threads))
    return Run(config, strategies, skipped, data, preset, device, out, SourceCache(cache_dir, warn=log), units,
               protocol, log, executor, command or ["python", "-m", "harness", *sys.argv[1:]])


__all__ = ["SCHEMA_VERSION", "Run", "prepare"]
