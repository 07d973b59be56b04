"""The local executor: every unit in this process, one at a time.

Evaluation units run in plan order (strategy, then shots); each source unit runs just before the first
evaluation that needs it, and its model is dropped after the last one, so one source model is in memory
at a time for the default ordering. The order is a memory optimisation only: records do not depend on
it (tests/test_harness/test_reliability.py runs the whole smoke suite in reverse and compares).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from harness.errors import UsageError
from harness.executors.base import Executor, Session
from harness.units import EvalUnit, Plan, SourceResult
from harness.work import UnitContext, run_unit

CONTROL = (KeyboardInterrupt, UsageError)  # never turned into a failed row


class LocalExecutor(Executor):
    def order(self, evaluations: Sequence[EvalUnit]) -> list[EvalUnit]:
        """The order evaluation units run in. Override (e.g. reversed, for the order-independence test)."""
        return list(evaluations)

    def execute(self, plan: Plan, session: Session) -> None:
        ctx = UnitContext(session.spec, session.data, session.progress)
        results: dict[str, SourceResult] = {}
        failed: set[str] = set()
        remaining = Counter(k for e in plan.evaluations for k in e.source_keys)
        for unit in self.order(plan.evaluations):
            if unit.id in session.finished:
                continue
            session.check_stop()
            for key in unit.source_keys:
                if key in results or key in failed:
                    continue
                source = plan.sources[key]
                try:
                    results[key] = session.obtain_source(source, lambda s=source: run_unit(s, ctx))
                except CONTROL:
                    raise
                except Exception as e:  # noqa: BLE001 - one unit's failure must not end the run
                    failed.add(key)
                    session.failed(source, e, plan.dependents(key))
                session.check_stop()
            if unit.id in session.finished:
                continue
            try:
                session.eval_done(unit, run_unit(unit, ctx, [results[k] for k in unit.source_keys]))
            except CONTROL:
                raise
            except Exception as e:  # noqa: BLE001
                session.failed(unit, e, [unit])
            for key in unit.source_keys:
                remaining[key] -= 1
                if remaining[key] == 0:
                    results.pop(key, None)
