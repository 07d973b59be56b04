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
from harness.budgets import Budgets, flop_probe, parse_budgets
from harness.cache import SourceCache
from harness.datasets import get_dataset
from harness.datasets.base import FewShotData, default_cache_dir, hold_out_validation
from harness.datasets.domains import load_data, settle_queries, wants_auto_queries
from harness.episodes import validate_protocol
from harness.errors import UsageError, unknown
from harness.executors.base import Executor
from harness.io import atomic_write_json, read_json
from harness.measure import PRECISIONS, configure, determinism_settings, device_name, resolve_device
from harness.overall import Overall
from harness.phases import Strategy
from harness.predictions import digest
from harness.presets import Preset, get_preset
from harness.provenance import code_version
from harness.registry import EXECUTORS
from harness.resolve import (
    Skipped,
    check_base_pool,
    check_out,
    default_out,
    protocol_of,
    resolve_strategies,
    source_key,
    without_base_pool,
)
from harness.results import read_header, record_path, write_record
from harness.runconfig import RunConfig
from harness.schema import SCHEMA_VERSION, Environment, Record, RunHeader
from harness.sealed import preload, run_secret
from harness.session import Session
from harness.tuning import check_trials, validate_validation
from harness.units import EvalUnit, Plan, plan, replicate_seeds
from harness.work import RunSpec, base_record


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
    log: Callable[[str], None]
    executor: Executor | None = None
    command: list[str] = field(default_factory=list)
    session: Session | None = None

    @property
    def spec(self) -> RunSpec:
        c = self.config
        return RunSpec(self.data.name, c.ways, c.queries, c.episodes, c.seed, str(self.device), c.precision,
                       c.deterministic, c.quiet, tune=c.tune or 0, tune_episodes=c.tune_episodes if c.tune else 0)

    @property
    def protocol(self) -> dict[str, Any]:
        return protocol_of(self.config, self.data, self.device)

    def header(self) -> RunHeader:
        strategies = {s.name: {**s.params(), "source": {"phase": s.source.phase_name, **s.source.params()}}
                      for s in self.strategies}
        strategies.update({s.name: None for s in self.skipped})
        shots = list(self.config.shots)
        if (self.out / "config.json").is_file():  # resuming: keep what earlier invocations ran
            old = read_header(self.out)
            strategies = {**old.strategies, **strategies}
            shots = sorted(set(old.shots) | set(shots))
        scales = list(dict.fromkeys(self.config.budget_scale))
        matched = next((u.matched_flops / u.scale for u in self.plan.evaluations if u.matched_flops), None) \
            if self.config.match_compute else None
        return RunHeader(harness_version=__version__, protocol=self.protocol, shots=shots,
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
        session = Session(self.out, spec, self.data, self.cache, self.device, self.log, progress,
                          self.config.fail_fast)
        self.session = session
        records: list[Record] = []
        done = self.completed_units()
        for unit in self.plan.evaluations:
            if unit.id in done:
                records.append(Record.from_json(read_json(self.path_of(unit))))
        if done:
            names = sorted({u.strategy.name for u in self.plan.evaluations if u.id in done})
            self.log(f"already complete in {self.out}, skipped: {', '.join(names)}")
        for s in self.skipped:
            for shots in self.config.shots:
                for scale in dict.fromkeys(self.config.budget_scale):
                    record = dataclasses.replace(base_record(s, shots, self.spec, self.device, scale),
                                                 status="skipped", reason=s.reason)
                    write_record(self.out, record)
                    records.append(record)
        todo = self.plan.without(done)
        session.overall = Overall(todo, cached=lambda key: self.cache.paths(key)[1].is_file())
        self.executor.execute(todo, session)
        return records + session.records

    def path_of(self, unit: EvalUnit) -> Path:
        return record_path(self.out, unit.strategy.name, unit.shots, unit.scale)

    def completed_units(self) -> set[str]:
        """Evaluation units with an ok record of the same hyperparameters and source model, and its predictions
        file as written (a record from before predictions were kept counts without one)."""
        done = set()
        for unit in self.plan.evaluations:
            path = self.path_of(unit)
            if not path.is_file():
                continue
            try:
                old = Record.from_json(read_json(path))
            except UsageError:
                continue
            s = unit.strategy
            tuning = old.tuning or {}
            params = tuning.get("untuned", old.params)  # a tuned record: the hyperparameters it was tuned from
            same_tuning = (tuning.get("trials"), tuning.get("episodes")) == \
                ((self.config.tune, self.config.tune_episodes) if self.config.tune else (None, None))
            if old.status == "ok" and params == s.params() and same_tuning and old.source_params == s.source.params() \
                    and old.source_keys == list(unit.source_keys) and old.episodes == self.config.episodes \
                    and (old.predictions is None or self._intact(old.predictions, old.predictions_sha256)):
                done.add(unit.id)
        return done

    def _intact(self, relative: str, sha256: str | None) -> bool:
        path = self.out / relative
        return path.is_file() and digest(path.read_bytes()) == sha256


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
    queries = 1 if wants_auto_queries(config) else config.queries  # auto: settled once the pool is known
    for s in config.shots:  # the counts themselves, before loading anything
        validate_protocol([10**9] * config.ways, config.ways, s, queries, config.episodes)
    if config.threads:
        torch.set_num_threads(config.threads)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    data = load_data(config.dataset, config.source_dataset, config.data_dir, cache_dir, config.strict_leaks)
    data = settle_queries(config, data)  # config.queries: a number from here on
    for s in config.shots:
        validate_protocol(data.novel.class_sizes(), config.ways, s, config.queries, config.episodes)
    if config.tune:  # the validation pool (held out of the base pool when the dataset has none): before any key
        data = hold_out_validation(data)
        for s in config.shots:
            validate_validation(data, config.ways, s, config.queries, config.tune_episodes)
    strategies, skipped = without_base_pool(strategies, skipped, data, config)
    check_base_pool(strategies, data, config)
    preload(strategies)  # one fork server for the whole run's sealed processes
    out = Path(config.out) if config.out else default_out()
    check_out(out, protocol_of(config, data, device))
    threads = executor.unit_threads()
    probe = flop_probe(data, device, config.ways, config.queries, config.seed, cache_dir,
                       lambda phase, shots: source_key(phase, shots, 0, data, config, 0, device, threads))
    budgets = Budgets(parse_budgets(config.budget, preset), list(dict.fromkeys(config.budget_scale)),
                      config.match_compute, probe, config.backbone or "conv4")
    seeds = replicate_seeds(config.seed, config.replicates)
    units = plan(strategies, list(config.shots), budgets.scales, seeds, budgets,
                 lambda s, shots, seed, images: source_key(s.source, shots, seed, data, config, images, device,
                                                           threads))
    return Run(config, strategies, skipped, data, preset, device, out, SourceCache(cache_dir, warn=log), units, log,
               executor, command or ["python", "-m", "harness", *sys.argv[1:]])


__all__ = ["SCHEMA_VERSION", "Run", "prepare"]
