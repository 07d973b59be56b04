"""Registries for everything that varies: strategies (rows), pretrainers, adapters, datasets, backbones,
executors and report formats. One class, timm / lm-evaluation-harness style:

    @ADAPTERS.register                     # name from the class: LinearProbe -> "linear-probe"
    @dataclass
    class LinearProbe(Adapter): ...

    BACKBONES.register_lazy("resnet12", "strategies.backbones.resnet12:ResNet12", description="...")

- a duplicate name is an error; an unknown one gets a did-you-mean and the valid names;
- ``register_lazy`` names a ``"module:attr"`` target that is imported only when used, with metadata
  (family, description, ``requires``) that listing reads without importing anything heavy;
- third-party packages add entries through an entry-point group (``harness.strategies``, ...);
- built-in entries come from one light module per registry (``builtins``), imported on first use.

This module imports no torch: ``python -m harness list`` and ``report`` stay fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from harness.errors import UsageError, unknown

T = TypeVar("T")


def kebab(name: str) -> str:
    """``LinearProbe`` -> ``linear-probe``; ``SslRotation`` -> ``ssl-rotation``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def import_target(target: str) -> Any:
    module, _, attr = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        value = getattr(value, part)
    return value


@dataclass
class Entry(Generic[T]):
    """One registered name: the object, or a ``"module:attr"`` string until it is first loaded."""

    name: str
    target: T | str
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "entry"

    @property
    def requires(self) -> str | None:
        return self.meta.get("requires")

    @property
    def description(self) -> str:
        return self.meta.get("description") or ("" if isinstance(self.target, str) else first_line(self.target))

    @property
    def family(self) -> str:
        return self.meta.get("family", "")

    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def install_hint(self) -> str:
        return f"pip install -e \".[{self.requires}]\""

    def load(self) -> T:
        if isinstance(self.target, str):
            if not self.available():
                raise UsageError(f"{self.kind} {self.name!r} needs {self.requires}, which is not installed; "
                                 f"install it with: {self.install_hint()}")
            target = self.target
            loaded = import_target(target)
            if self.target == target:  # unless importing it registered the real object in its place
                self.target = loaded
        return self.target  # type: ignore[return-value]


class Registry(Generic[T]):
    """Names -> objects of one kind (``kind`` is used in messages: "unknown strategy 'x'")."""

    def __init__(self, kind: str, *, builtins: str | None = None, entry_point_group: str | None = None,
                 namer: Callable[[Any], str] | None = None):
        self.kind = kind
        self.builtins = builtins
        self.entry_point_group = entry_point_group
        self.namer = namer or (lambda obj: kebab(obj.__name__))
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    # -- adding ---------------------------------------------------------------------------------------
    def _add(self, entry: Entry[T]) -> Entry[T]:
        existing = self._entries.get(entry.name)
        if existing is not None:
            own = existing.meta.get("placeholder") or (
                isinstance(existing.target, str) and existing.target.endswith(":" + getattr(entry.target,
                                                                                             "__qualname__", "?")))
            if isinstance(existing.target, str) and not isinstance(entry.target, str) and own:
                # a lazy entry's (or entry point's) module registering its own object on import
                existing.target, existing.meta = entry.target, {**existing.meta, **entry.meta, "placeholder": False}
                return existing
            raise ValueError(f"{self.kind} {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def register(self, obj: T | None = None, *, name: str | None = None, **meta: Any):
        """Decorator (bare or with arguments); the name defaults to the kebab-case class name."""

        def wrap(o: T) -> T:
            self._add(Entry(name or self.namer(o), o, meta, self.kind))
            return o

        return wrap(obj) if obj is not None else wrap

    def add(self, name: str, obj: T, **meta: Any) -> T:
        self._add(Entry(name, obj, meta, self.kind))
        return obj

    def register_lazy(self, name: str, target: str, **meta: Any) -> None:
        """Register ``"module:attr"``, imported only when the entry is loaded."""
        self._add(Entry(name, target, meta, self.kind))

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # -- reading --------------------------------------------------------------------------------------
    def entries(self) -> dict[str, Entry[T]]:
        """Every entry, after importing the built-ins' light module and the installed entry points, once."""
        if not self._loaded:
            self._loaded = True
            if self.builtins:
                importlib.import_module(self.builtins)
            if self.entry_point_group:
                for ep in entry_points(group=self.entry_point_group):
                    if ep.name not in self._entries:
                        self._add(Entry(ep.name, ep.value, {"description": f"third-party ({ep.value})",
                                                            "placeholder": True}, self.kind))
        return self._entries

    def get(self, name: str) -> Entry[T]:
        entries = self.entries()
        if name not in entries:
            raise unknown(self.kind, name, entries)
        return entries[name]

    def load(self, name: str) -> T:
        return self.get(name).load()

    def names(self) -> list[str]:
        return sorted(self.entries())

    def __contains__(self, name: object) -> bool:
        return name in self.entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


# ------------------------------------------------------------------------------------------ the registries

#: leaderboard rows: (pretrainer, adapter) pairs; see harness/suite.py and strategies/__init__.py
STRATEGIES: Registry[Any] = Registry("strategy", builtins="strategies", entry_point_group="harness.strategies")
#: source phases (pretraining, meta-training)
PRETRAINERS: Registry[Any] = Registry("pretrainer", builtins="strategies")
#: episode phases (probe, fine-tuning, inner loops, prototypes)
ADAPTERS: Registry[Any] = Registry("adapter", builtins="strategies")
DATASETS: Registry[Any] = Registry("dataset", builtins="harness.datasets", entry_point_group="harness.datasets")
BACKBONES: Registry[Any] = Registry("backbone", builtins="strategies.backbones",
                                    entry_point_group="harness.backbones")
EXECUTORS: Registry[Any] = Registry("executor", builtins="harness.executors", entry_point_group="harness.executors")
REPORT_FORMATS: Registry[Any] = Registry("report format", builtins="harness.report",
                                         entry_point_group="harness.report_formats")
