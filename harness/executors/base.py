"""The executor interface: ``execute(plan, session)`` runs every unit, respecting that an evaluation
unit needs its source units' results, and reports each outcome to the session (the driver):

- ``session.obtain_source(unit, train)``: a source result from the cache, or trained by ``train()`` and
  stored (under the cache lock);
- ``session.eval_done(unit, record)`` / ``session.failed(unit, error)``: write the record(s);
- ``session.check_stop()``: raises between units after Ctrl-C (records so far are kept) or --fail-fast.

Executors never write records or cache entries themselves, so resume, failure isolation, Ctrl-C and
fail-fast behave the same under every executor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from harness.units import Plan


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
    def execute(self, plan: Plan, session: Any) -> None:
        """Run every unit of ``plan``; report outcomes to ``session``."""
