"""The driver's side of a run: what happens to each unit's outcome, whichever executor ran it.

The session writes every record (atomically, as units finish), trains-or-loads source phases under the
cache lock, turns a unit's exception into failed rows (traceback in ``RUN_DIR/run.log``), stops between
units after Ctrl-C or at the first failure with ``--fail-fast``, and prints one line per result.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from harness.cache import SourceCache
from harness.datasets.base import FewShotData
from harness.overall import Overall
from harness.results import write_record
from harness.schema import Record
from harness.units import EvalUnit, SourceResult, SourceUnit
from harness.work import RunSpec, base_record

if TYPE_CHECKING:
    from harness.resolve import Skipped


class Interrupted(Exception):
    """Raised between units of work after a graceful stop was requested (first Ctrl-C)."""


class FailFast(Exception):
    """Raised after recording a failure when --fail-fast is given."""


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


class RunSession:
    """The driver's session of one run invocation; executors see it through
    :class:`harness.executors.base.Session`."""

    def __init__(self, out: Path, spec: RunSpec, data: FewShotData, cache: SourceCache, device: torch.device,
                 log: Callable[[str], None], progress: Any, fail_fast: bool = False, overall: Overall | None = None):
        self.out, self.spec, self.data, self.cache, self.device = out, spec, data, cache, device
        self.log, self.progress, self.fail_fast = log, progress, fail_fast
        self.stop_requested = False  # set by the first Ctrl-C; checked between units of work
        self.finished: set[str] = set()  # evaluation unit ids with a record written in this invocation
        self.completed: list[str] = []  # their labels, for the interruption message
        self.records: list[Record] = []
        self.trained: list[str] = []  # source keys trained (not loaded) in this invocation
        self.overall = overall  # the overall progress line

    def check_stop(self) -> None:
        if self.stop_requested:
            raise Interrupted()

    # -- sources ------------------------------------------------------------------------------------
    def claim(self, key: str) -> IO | None:
        """The key's cache lock if no other run holds it now (``close()`` frees it), else None."""
        return self.cache.try_lock(key)

    def lookup(self, key: str) -> SourceResult | None:
        return self.cache.load(key)

    def store(self, result: SourceResult) -> None:
        self.cache.store(result)
        self.trained.append(result.key)

    def obtain_source(self, unit: SourceUnit, train: Callable[[], SourceResult]) -> SourceResult:
        """From the cache, or trained now and stored, under the key's lock (a second run waits, then loads)."""
        with self.cache.lock(unit.key):
            hit = self.lookup(unit.key)
            if hit is not None:
                return hit
            result = train()
            self.store(result)
            return result

    # -- records ------------------------------------------------------------------------------------
    def skip(self, row: Skipped) -> None:
        """The skipped rows of a strategy that cannot run here, with the reason, at every shots and scale."""
        p = self.spec.protocol
        for shots in p.shots:
            for scale in p.budget_scales:
                record = dataclasses.replace(base_record(row, shots, self.spec, self.device, scale), status="skipped",
                                             reason=row.reason)
                write_record(self.out, record)
                self.records.append(record)

    def write(self, unit: EvalUnit, record: Record) -> None:
        write_record(self.out, record)
        self.records.append(record)
        self.finished.add(unit.id)
        self.completed.append(unit.label)

    def progress_line(self, unit: EvalUnit, record: Record) -> str:
        return f"  {self.overall.update(unit, record)}" if self.overall is not None else ""

    def eval_done(self, unit: EvalUnit, record: Record) -> None:
        self.write(unit, record)
        self.log(f"{unit.label}: {100 * record.accuracy:.2f} ± {100 * record.ci95:.2f}%  "
                 f"({record.ms_per_episode:.1f} ms/episode){self.progress_line(unit, record)}")

    def failed(self, unit: SourceUnit | EvalUnit, error: BaseException, affected: Sequence[EvalUnit]) -> None:
        """Failed rows for the evaluation units ``affected`` by ``unit``'s error; FailFast with --fail-fast."""
        reason = one_line(error)
        with open(self.out / "run.log", "a") as f:
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            f.write(f"--- {unit.label} failed ---\n{tb}\n")
        self.log(f"{unit.label}: FAILED: {reason} (traceback in {self.out / 'run.log'})")
        for e in affected:
            if e.id not in self.finished:
                record = dataclasses.replace(base_record(e.strategy, e.shots, self.spec, self.device, e.scale,
                                                         e.matched_flops), status="failed", reason=reason)
                self.write(e, record)
                line = self.progress_line(e, record)
                if line:
                    self.log(f"{e.label}: failed{line}")
        if self.fail_fast:
            raise FailFast(reason) from error
