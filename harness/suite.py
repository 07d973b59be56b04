"""Leaderboard rows as a table of (pretrainer, adapter) pairs.

    register_row("ssl-rotation", source="rotation", adapter="linear-probe",
                 description="Linear probe on features learned by rotation prediction (no base labels)")
    register_row("fomaml", source="maml", adapter="sgd-inner-loop", source_params={"first_order": True})

A new adapter over every pretraining is one module (the adapter, registered in ADAPTERS) plus one
``register_row`` line per row. For a plugin, the :func:`register` decorator registers an adapter and a
row of the same name over one pretrainer in one go::

    @register(source="supervised")      # adapter and strategy "nearest-centroid"
    @dataclass
    class NearestCentroid(EpisodeAdapter): ...

Rows are light values (names and parameters): listing them imports nothing heavy; :meth:`Row.build`
imports the pretrainer and adapter classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.registry import ADAPTERS, PRETRAINERS, STRATEGIES, kebab


@dataclass(frozen=True)
class Row:
    """One strategy: a pretrainer and an adapter (registry names) with their default overrides."""

    name: str
    source: str
    adapter: str
    source_params: Mapping[str, Any] = field(default_factory=dict)
    adapter_params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def family(self) -> str:
        entry = PRETRAINERS.get(self.source)
        if entry.family:
            return entry.family
        return "" if isinstance(entry.target, str) else getattr(entry.target, "family", "")

    @property
    def requires(self) -> str | None:
        return PRETRAINERS.get(self.source).requires or ADAPTERS.get(self.adapter).requires

    def available(self) -> bool:
        return PRETRAINERS.get(self.source).available() and ADAPTERS.get(self.adapter).available()

    def build(self) -> Any:
        """The row's :class:`harness.phases.Strategy` with default hyperparameters (imports the classes)."""
        from harness.phases import Strategy

        source = PRETRAINERS.load(self.source)(**self.source_params)
        adapter = ADAPTERS.load(self.adapter)(**self.adapter_params)
        return Strategy(self.name, source, adapter, self.family)


def register_row(name: str, source: str, adapter: str, *, description: str = "",
                 source_params: Mapping[str, Any] | None = None,
                 adapter_params: Mapping[str, Any] | None = None) -> Row:
    row = Row(name, source, adapter, dict(source_params or {}), dict(adapter_params or {}), description)
    STRATEGIES.add(name, row, description=description, requires=None)
    return row


def register(cls: type | None = None, *, source: str, name: str | None = None, description: str = ""):
    """Register an adapter class and a strategy of the same name over the pretrainer ``source``."""

    def wrap(c: type) -> type:
        row_name = name or kebab(c.__name__)
        ADAPTERS.register(c, name=row_name)
        doc = (c.__doc__ or "").strip().splitlines()
        register_row(row_name, source, row_name, description=description or (doc[0] if doc else ""))
        return c

    return wrap(cls) if cls is not None else wrap


def get_row(name: str) -> Row:
    """The row registered as ``name`` (did-you-mean for unknown names); third-party entry points load."""
    entry = STRATEGIES.get(name)
    value = entry.load()
    if isinstance(value, Row):
        return value
    entry = STRATEGIES.get(name)  # importing a plugin module may have registered the row itself
    if isinstance(entry.target, Row):
        return entry.target
    raise TypeError(f"strategy entry point {name!r} must name a harness.suite.Row or a module registering one")
