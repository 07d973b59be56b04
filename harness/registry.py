"""Strategy registry: one decorator, lazy ``module:attr`` entries, and the ``harness.strategies``
entry-point group for third-party packages.

    @register                      # name from the class: FrozenFeatures -> "frozen-features"
    @dataclass
    class FrozenFeatures(Strategy): ...

    register_lazy("keras-frozen-features", "strategies.keras_frozen:KerasFrozenFeatures",
                  family="transfer", description="...", requires="tensorflow")
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from importlib.metadata import entry_points

from harness.errors import UsageError, unknown
from harness.strategy import Strategy

ENTRY_POINT_GROUP = "harness.strategies"


@dataclass
class Entry:
    name: str
    target: str | type[Strategy]  # "module:attr" until loaded
    family: str = ""
    description: str = ""
    requires: str | None = None  # an importable module the strategy needs, e.g. "tensorflow"

    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def load(self) -> type[Strategy]:
        if isinstance(self.target, str):
            if not self.available():
                raise UsageError(f"strategy {self.name!r} needs {self.requires}, which is not installed; "
                                 f"install it with: pip install -e \".[{self.requires}]\"")
            module, _, attr = self.target.partition(":")
            cls = getattr(importlib.import_module(module), attr)
            if not cls.name:
                cls.name = self.name
            self.target = cls
        return self.target


_REGISTRY: dict[str, Entry] = {}
_loaded = False


def kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _describe(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def _add(entry: Entry) -> None:
    existing = _REGISTRY.get(entry.name)
    if existing is not None:
        lazy = isinstance(existing.target, str) and not isinstance(entry.target, str)
        if lazy and existing.target.endswith(f":{entry.target.__name__}"):
            existing.target = entry.target  # a lazy entry's module registering its own class on import
            return
        raise ValueError(f"strategy {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def register(cls: type[Strategy] | None = None, *, name: str | None = None):
    """Class decorator registering a strategy; usable bare or as ``@register(name="...")``."""

    def wrap(c: type[Strategy]) -> type[Strategy]:
        c.name = name or kebab(c.__name__)
        _add(Entry(c.name, c, c.family, _describe(c)))
        return c

    return wrap(cls) if cls is not None else wrap


def register_lazy(name: str, target: str, *, family: str, description: str,
                  requires: str | None = None) -> None:
    """Register a strategy whose module is imported only when it runs (heavy frameworks)."""
    _add(Entry(name, target, family, description, requires))


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def load_all() -> dict[str, Entry]:
    """Import the built-in strategies and the entry points of installed packages, once."""
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module("strategies")
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in _REGISTRY:
                _add(Entry(ep.name, ep.value, description=f"third-party ({ep.value})"))
    return _REGISTRY


def get(name: str) -> Entry:
    entries = load_all()
    if name not in entries:
        raise unknown("strategy", name, entries)
    return entries[name]
