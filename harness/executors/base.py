"""The executor interface: ``execute(plan, session)`` runs every unit of the plan, respecting that an evaluation
unit needs its source units' results, and reports each outcome to the :class:`Session` (the driver's side,
harness/session.py). Executors never write records or cache entries themselves, so resume, failure isolation,
Ctrl-C and fail-fast behave the same under every executor; a new executor is one file (a subclass of
:class:`Executor`) plus one line registering it (harness/executors/__init__.py or a third-party entry point).
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import IO, Any

from harness.units import EvalUnit, Plan, SourceResult, SourceUnit

if typing.TYPE_CHECKING:
    from harness.datasets.base import FewShotData
    from harness.schema import Record
    from harness.work import ProgressFactory, RunSpec


class Session(typing.Protocol):
    """What an executor may use of the driver: what every unit needs (``spec``, ``data``: a
    :class:`harness.work.UnitContext` is built from them), the progress bars, the source cache (blocking:
    ``obtain_source``; or ``claim`` a key's lock without waiting, then ``lookup`` / ``store`` under it), the
    outcomes (``eval_done``, ``failed``), which evaluation units already have a record (``finished``), and a
    stop between units (``stop_requested``; ``check_stop`` raises after Ctrl-C or with --fail-fast)."""

    spec: RunSpec
    data: FewShotData
    progress: ProgressFactory
    finished: set[str]
    stop_requested: bool

    def check_stop(self) -> None: ...

    def obtain_source(self, unit: SourceUnit, train: Callable[[], SourceResult]) -> SourceResult:
        """From the cache, or ``train()``-ed and stored, under the key's lock (waiting for another run's)."""
        ...

    def claim(self, key: str) -> IO | None:
        """The key's cache lock if free now (``close()`` frees it), else None."""
        ...

    def lookup(self, key: str) -> SourceResult | None: ...

    def store(self, result: SourceResult) -> None: ...

    def eval_done(self, unit: EvalUnit, record: Record) -> None: ...

    def failed(self, unit: SourceUnit | EvalUnit, error: BaseException, affected: Sequence[EvalUnit]) -> None:
        """Failed rows for the evaluation units ``affected`` by ``unit``'s error."""
        ...


class Executor(ABC):
    """Runs a plan; subclasses are registered in ``harness.registry.EXECUTORS``. ``config`` is the run's
    :class:`harness.runconfig.RunConfig` (an executor reads its own settings from it)."""

    def __init__(self, config: Any = None):
        self.config = config

    def check(self) -> None:
        """Reject unusable settings before anything runs (raise UsageError). Override."""

    def unit_threads(self) -> int:
        """The torch CPU threads a unit of work runs with (on a CPU they enter the cache key: another thread
        count sums in another order). Override."""
        import torch

        return (self.config.threads if self.config is not None else None) or torch.get_num_threads()

    @abstractmethod
    def execute(self, plan: Plan, session: Session) -> None:
        """Run every unit of ``plan``; report outcomes to ``session``."""
