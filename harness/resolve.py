"""From a RunConfig to what a run needs, checked: strategies with their overrides (or skipped with the
reason), the base pool's fitness for episodic source phases, the run directory, the protocol a resume
must match, and the cache key of every source model."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.cache import cache_key
from harness.datasets.base import FewShotData
from harness.errors import UsageError, unknown
from harness.overrides import apply_strategy_overrides, parse_set
from harness.phases import Pretrainer, Strategy, Unsupported
from harness.protocol import Protocol
from harness.provenance import code_hash
from harness.registry import ADAPTERS, BACKBONES, PRETRAINERS, STRATEGIES
from harness.results import read_header
from harness.runconfig import RunConfig
from harness.suite import get_row


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
                PRETRAINERS.get(row.source).load()  # raises the install hint
                ADAPTERS.get(row.adapter).load()
            skipped.append(Skipped(n, row.family, f"needs {row.requires}: pip install -e \".[{row.requires}]\""))
            continue
        strategy = row.build()
        if config.backbone is not None:
            strategy = dataclasses.replace(strategy, source=dataclasses.replace(strategy.source,
                                                                                backbone=config.backbone))
        strategy = apply_strategy_overrides(strategy, overrides.get(n, {}), n)
        strategy = dataclasses.replace(strategy, source=strategy.source.apply_run(config))
        try:
            strategy.check(config.precision)
        except Unsupported as e:
            if not config.all:
                raise
            skipped.append(Skipped(n, strategy.family, str(e)))
            continue
        strategies.append(strategy)
    return strategies, skipped


def check_base_pool(strategies: list[Strategy], data: FewShotData, protocol: Protocol) -> None:
    """Episodic source phases draw ways classes and some images per class from the base pool: check
    that it has them before anything is trained."""
    sizes = data.base.class_sizes()
    for strategy in strategies:
        need = max(strategy.source.episode_images(s, protocol.queries) for s in protocol.shots)
        if not need:
            continue
        if protocol.ways > len(sizes):
            raise UsageError(f"{strategy.name}: its episodic source phase draws {protocol.ways}-way base episodes, but "
                             f"the dataset has {len(sizes)} base classes; pass --ways {len(sizes)} or fewer")
        if need > min(sizes):
            raise UsageError(f"{strategy.name}: its episodic source phase draws {need} images per base class, but the "
                             f"smallest base class has {min(sizes)}; lower --shots or --queries, or leave it out")


def without_base_pool(strategies: list[Strategy], skipped: list[Skipped], data: FewShotData,
                      run_all: bool) -> tuple[list[Strategy], list[Skipped]]:
    """A dataset with no base pool (a novel-only TOML file naming no source) runs only the rows whose source
    phase trains nothing (models pretrained elsewhere, the no-transfer baselines); the others are skipped
    with the reason under ``--all``, an error when named."""
    if len(data.base.labels):
        return strategies, skipped
    keep = []
    for s in strategies:
        if not type(s.source).trains:
            keep.append(s)
            continue
        reason = (f"needs a base pool to train its source phase on, and {data.name} names no source; add "
                  f"source = \"cifar10\" (or another dataset) to its [dataset] table or pass --source-dataset NAME")
        if not run_all:
            raise UsageError(f"{s.name} {reason}")
        skipped.append(Skipped(s.name, s.family, reason))
    return keep, skipped


def default_out() -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_out(out: Path, protocol: Protocol) -> None:
    """The run directory is new, empty (but for a copied ``secret``, README Reliability), or a run of the same
    protocol (resumed); else a clear error."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a directory")
    if (out / "secret").is_file():
        from harness.sealed import read_secret

        read_secret(out / "secret")
    if (out / "config.json").is_file():
        header = read_header(out)
        differ = protocol.differences(header.protocol, header.run)
        if differ:
            old = {"backbone": header.run.get("backbone"), **header.protocol}
            detail = ", ".join(f"{k} {old.get(k)!r} there, {getattr(protocol, k)!r} now" for k in differ)
            raise UsageError(f"{out} holds a run with different {', '.join(differ)} ({detail}); pass a new --out to "
                             f"start a fresh run, or the same settings to resume it")
    elif out.is_dir() and any(p.name != "secret" for p in out.iterdir()):  # a copied secret reproduces seeds
        raise UsageError(f"--out {out} exists and is not a run directory; pass a new or empty directory (or one "
                         f"holding only a run's secret file)")
    ancestor = out
    while not ancestor.exists():  # nothing is created yet: check where the directory would be made
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to --out {out} ({ancestor} is not a writable directory); "
                         f"pass a writable directory")


def source_key(phase: Pretrainer, seed: int, data: FewShotData, protocol: Protocol, budget: int,
               threads: int = 0) -> str:
    """The cache key of a source model (harness/cache.py says what it covers); a per-shots phase's shots are among
    its fields (``params``)."""
    backbone = BACKBONES.get(phase.backbone).target if phase.any_backbone else None
    modules = [type(phase).__module__] + ([backbone.split(":")[0] if isinstance(backbone, str)
                                           else backbone.__module__] if backbone is not None else [])
    ingredients: dict[str, Any] = {
        "phase": f"{type(phase).__module__}.{type(phase).__qualname__}", "params": phase.params(),
        "code": code_hash(*modules), "seed": seed, "budget_images": budget,
        "dataset": getattr(data, "source_fingerprint", "") or data.fingerprint,  # the source's (domains.py)
        "device": protocol.device_type, "precision": protocol.precision, "deterministic": protocol.deterministic,
        "denormals": "flushed",  # harness/measure.py configure
        "torch": ".".join(torch.__version__.split(".")[:2]),
    }
    if protocol.device_type == "cpu" and threads:  # a CPU's reductions sum in an order that depends on the thread count
        ingredients["threads"] = threads
    if phase.versions():  # other frameworks the phase trains or loads with (TensorFlow, torchvision)
        ingredients["versions"] = phase.versions()
    if type(phase).uses_ways or type(phase).per_shots:
        ingredients["ways"] = protocol.ways
    if type(phase).per_shots:
        ingredients["queries"] = protocol.queries
    return cache_key(phase.phase_name, ingredients)
