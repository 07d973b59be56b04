"""The thin driver of ``run``: validate everything, load the data, ``plan`` the units of work, hand them
to an executor, and let the session write what comes back.

    run = prepare(config, log)   # every check; nothing trained or written on bad input
    run.execute()                # header, then units through the executor; records as they finish

Every strategy is scored on the same :class:`harness.episodes.EpisodeSet` per shot setting; strategies
get sealed :class:`harness.episodes.TaskBatch` objects and return logits, which the episodes score.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import __version__
from harness.cache import SourceCache, cache_key
from harness.datasets import get_dataset
from harness.datasets.base import FewShotData, default_cache_dir
from harness.episodes import validate_protocol
from harness.errors import UsageError, unknown
from harness.io import atomic_write_json, read_json
from harness.measure import PRECISIONS, configure, determinism_settings, device_name, resolve_device
from harness.overrides import apply_strategy_overrides, parse_set
from harness.phases import Strategy, Unsupported
from harness.presets import Preset, get_preset
from harness.provenance import code_hash, code_version
from harness.registry import BACKBONES, EXECUTORS, STRATEGIES
from harness.results import read_header, record_path
from harness.runconfig import RunConfig
from harness.schema import SCHEMA_VERSION, Environment, Record, RunHeader
from harness.session import Session
from harness.suite import get_row
from harness.units import Plan, plan, replicate_seeds
from harness.work import RunSpec, base_record

#: what a run directory must match to be resumed (else exit 2, naming the recorded and the given values)
PROTOCOL_KEYS = ("preset", "dataset", "ways", "queries", "episodes", "seed", "replicates", "precision",
                 "device_type", "data_fingerprint")


@dataclass
class Skipped:
    """A row that cannot run here (a missing framework, an unsupported backbone): recorded as skipped."""

    name: str
    family: str
    reason: str


def resolve_strategies(config: RunConfig, tables: dict[str, dict]) -> tuple[list[Strategy], list[Skipped]]:
    """Names -> strategies with the config file's and --set overrides applied and checked."""
    entries = STRATEGIES.entries()
    if config.all and config.strategies:
        raise UsageError("give strategy names or --all, not both")
    if not config.all and not config.strategies:
        raise UsageError("no strategy given; name some (see `python -m harness list`) or pass --all")
    names = sorted(entries) if config.all else list(dict.fromkeys(config.strategies))
    for n in names:
        STRATEGIES.get(n)  # did-you-mean for unknown names
    overrides: dict[str, dict[str, Any]] = {}
    for n, table in tables.items():
        if n not in entries:
            raise unknown(f"strategy table in {config.config}:", n, entries)
        overrides[n] = dict(table)
    for n, table in parse_set(config.set).items():
        if n not in entries:
            raise unknown("strategy in --set", n, entries)
        if n not in names:
            raise UsageError(f"--set names {n!r}, which is not in this run; add it to the strategies to run")
        overrides.setdefault(n, {}).update(table)
    if config.backbone is not None:
        BACKBONES.get(config.backbone)
    strategies, skipped = [], []
    for n in names:
        row = get_row(n)
        if not row.available():
            if not config.all:
                from harness.registry import ADAPTERS, PRETRAINERS

                PRETRAINERS.get(row.source).load()  # raises the install hint
                ADAPTERS.get(row.adapter).load()
            skipped.append(Skipped(n, row.family, f"needs {row.requires}: pip install -e \".[{row.requires}]\""))
            continue
        strategy = row.build()
        if config.backbone is not None:
            strategy = dataclasses.replace(strategy, source=dataclasses.replace(strategy.source,
                                                                                backbone=config.backbone))
        strategy = apply_strategy_overrides(strategy, overrides.get(n, {}), n)
        try:
            strategy.check(config.precision)
        except Unsupported as e:
            if not config.all:
                raise
            skipped.append(Skipped(n, strategy.family, str(e)))
            continue
        strategies.append(strategy)
    return strategies, skipped


def check_base_pool(strategies: list[Strategy], data: FewShotData, config: RunConfig) -> None:
    """Episodic source phases draw ways classes and some images per class from the base pool: check
    that it has them before anything is trained."""
    sizes = data.base.class_sizes()
    for strategy in strategies:
        need = max(strategy.source.episode_images(s, config.queries) for s in config.shots)
        if not need:
            continue
        if config.ways > len(sizes):
            raise UsageError(f"{strategy.name}: its episodic source phase draws {config.ways}-way base episodes, but "
                             f"the dataset has {len(sizes)} base classes; pass --ways {len(sizes)} or fewer")
        if need > min(sizes):
            raise UsageError(f"{strategy.name}: its episodic source phase draws {need} images per base class, but the "
                             f"smallest base class has {min(sizes)}; lower --shots or --queries, or leave it out")


def _default_out() -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_out(out: Path, protocol: dict[str, Any]) -> None:
    """The run directory is new, empty, or a run of the same protocol (resumed); else a clear error."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a directory")
    if (out / "config.json").is_file():
        old = read_header(out).protocol
        differ = [k for k in PROTOCOL_KEYS if old.get(k) != protocol[k]]
        if differ:
            detail = ", ".join(f"{k} {old.get(k)!r} there, {protocol[k]!r} now" for k in differ)
            raise UsageError(f"{out} holds a run with different {', '.join(differ)} ({detail}); pass a new --out to "
                             f"start a fresh run, or the same settings to resume it")
    elif out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not a run directory; pass a new or empty directory")
    ancestor = out
    while not ancestor.exists():  # nothing is created yet: check where the directory would be made
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to --out {out} ({ancestor} is not a writable directory); "
                         f"pass a writable directory")


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
    command: list[str] = field(default_factory=list)
    session: Session | None = None

    @property
    def spec(self) -> RunSpec:
        c = self.config
        return RunSpec(self.data.name, c.ways, c.queries, c.episodes, c.seed, str(self.device), c.precision,
                       c.deterministic, c.quiet)

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
        return RunHeader(harness_version=__version__, protocol=self.protocol, shots=shots,
                         dataset_description=self.data.description, novel_classes=len(self.data.novel.classes),
                         preset_budgets=dict(self.preset.source_images), strategies=strategies,
                         run=self.config.to_json())

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
        for stale in (self.out / "records").glob(".*.tmp"):  # left by a run killed while writing
            stale.unlink()
        atomic_write_json(self.out / "config.json", self.header().to_json())
        atomic_write_json(self.out / "environment.json", self.environment().to_json())
        session = Session(self.out, self.spec, self.data, self.cache, self.device, self.log, progress,
                          self.config.fail_fast)
        self.session = session
        records: list[Record] = []
        done = self.completed_units()
        for unit in self.plan.evaluations:
            if unit.id in done:
                records.append(Record.from_json(read_json(record_path(self.out, unit.strategy.name, unit.shots))))
        if done:
            names = sorted({u.strategy.name for u in self.plan.evaluations if u.id in done})
            self.log(f"already complete in {self.out}, skipped: {', '.join(names)}")
        for s in self.skipped:
            for shots in self.config.shots:
                record = dataclasses.replace(base_record(s, shots, self.spec, self.device), status="skipped",
                                             reason=s.reason)
                from harness.results import write_record

                write_record(self.out, record)
                records.append(record)
        executor = EXECUTORS.load(self.config.executor)()
        executor.execute(self.plan.without(done), session)
        return records + session.records

    def completed_units(self) -> set[str]:
        """Evaluation units with an ok record of the same hyperparameters and source model."""
        done = set()
        for unit in self.plan.evaluations:
            path = record_path(self.out, unit.strategy.name, unit.shots)
            if not path.is_file():
                continue
            try:
                old = Record.from_json(read_json(path))
            except UsageError:
                continue
            s = unit.strategy
            if old.status == "ok" and old.params == s.params() and old.source_params == s.source.params() \
                    and old.source_keys == list(unit.source_keys) and old.episodes == self.config.episodes:
                done.add(unit.id)
        return done


def protocol_of(config: RunConfig, data: FewShotData, device: torch.device) -> dict[str, Any]:
    c = config
    return {"preset": c.preset, "dataset": data.name, "ways": c.ways, "queries": c.queries, "episodes": c.episodes,
            "seed": c.seed, "replicates": c.replicates, "precision": c.precision, "device_type": device.type,
            "data_fingerprint": data.fingerprint}


def source_key(strategy: Strategy, shots: int | None, seed: int, data: FewShotData, config: RunConfig,
               budget: int, device: torch.device) -> str:
    """The cache key of a strategy's source model (harness/cache.py says what it covers)."""
    phase = strategy.source
    backbone = BACKBONES.get(phase.backbone).target if phase.any_backbone else None
    modules = [type(phase).__module__] + ([backbone.split(":")[0] if isinstance(backbone, str)
                                           else backbone.__module__] if backbone is not None else [])
    ingredients: dict[str, Any] = {
        "phase": f"{type(phase).__module__}.{type(phase).__qualname__}", "params": phase.params(),
        "code": code_hash(*modules), "dataset": data.fingerprint, "seed": seed, "budget_images": budget,
        "device": device.type, "precision": config.precision, "deterministic": config.deterministic,
        "torch": ".".join(torch.__version__.split(".")[:2]),
    }
    if type(phase).uses_ways or type(phase).per_shots:
        ingredients["ways"] = config.ways
    if type(phase).per_shots:
        ingredients.update(shots=shots, queries=config.queries)
    return cache_key(phase.phase_name, ingredients)


def prepare(config: RunConfig, tables: dict[str, dict], log: Callable[[str], None],
            command: list[str] | None = None) -> Run:
    """Validate everything and load the data; writes nothing."""
    preset = get_preset(config.preset)
    EXECUTORS.get(config.executor)
    if config.precision not in PRECISIONS:
        raise unknown("precision", config.precision, PRECISIONS)
    device = resolve_device(config.device)
    configure(config.deterministic)
    strategies, skipped = resolve_strategies(config, tables)
    dataset = get_dataset(config.dataset)
    for s in config.shots:  # the counts themselves, before loading anything
        validate_protocol([10**9] * config.ways, config.ways, s, config.queries, config.episodes)
    if config.threads:
        torch.set_num_threads(config.threads)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    data = dataset.load(config.data_dir, cache_dir)
    for s in config.shots:
        validate_protocol(data.novel.class_sizes(), config.ways, s, config.queries, config.episodes)
    check_base_pool(strategies, data, config)
    out = Path(config.out) if config.out else _default_out()
    check_out(out, protocol_of(config, data, device))

    def key_of(strategy: Strategy, shots: int | None, seed: int) -> str:
        return source_key(strategy, shots, seed, data, config, preset.budget(type(strategy.source).budget_group),
                          device)

    units = plan(strategies, list(config.shots), key_of, lambda s: preset.budget(type(s.source).budget_group),
                 replicate_seeds(config.seed, config.replicates))
    return Run(config, strategies, skipped, data, preset, device, out, SourceCache(cache_dir, warn=log), units, log,
               command or ["python", "-m", "harness", *sys.argv[1:]])


__all__ = ["SCHEMA_VERSION", "Run", "prepare"]
