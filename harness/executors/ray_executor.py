"""The Ray executor: every unit of work a Ray task, across the GPUs and machines of a Ray cluster.

The decoded dataset goes into Ray's object store once; a worker process builds its UnitContext from it on
its first unit and keeps it for the run's later units. An evaluation task takes its source models as
ObjectRef arguments (Ray starts it once they exist). Each task reserves --cpus-per-unit cores (its torch
threads unless --threads) and --gpus-per-unit GPUs (a fraction shares one; default 1 on a GPU device).
The driver keeps the session's role: it takes each source key's cache lock without blocking (a key another
run holds is claimed once that run stored it: no deadlock, no key trained twice), loads a cached model and
puts it in the object store, or keeps the lock while the key trains and stores what comes back; records are
written as tasks finish. A unit's own exception comes back as a value and becomes failed rows (never
retried); a worker process that dies mid-unit is retried by Ray (MAX_RETRIES). Ctrl-C, --fail-fast or an
error: what has finished is saved, outstanding tasks are cancelled.

One module of about 330 lines on purpose: the driver's loop (locks, claims, submissions, retries, failures,
Ctrl-C) is one state machine whose parts only make sense together; the worker side is the first 100 lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import socket
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import ray

from harness.errors import UsageError
from harness.executors.base import Executor, Session
from harness.executors.local import CONTROL
from harness.session import one_line
from harness.units import EvalUnit, Plan, SourceUnit

MAX_RETRIES = 3  # runs of a unit whose worker process died (killed, out of memory), after the first
POLL_SECONDS = 0.2  # the driver checks for Ctrl-C at least this often
FORWARDED_ENV = ("HARNESS_FAULT",)  # the driver's fault injection (harness/faults.py) reaches the workers
HINT = ("start a cluster with `ray start --head` and pass its HOST:6379 (or `auto` on one of its machines), "
        "or leave --ray-address and $RAY_ADDRESS unset to start a local Ray runtime for the run")


class RemoteTraceback(Exception):
    """The worker's traceback, chained to a unit's exception so RUN_DIR/run.log shows where it was raised."""


@dataclass
class _Failure:
    """A unit's own exception and the worker's traceback: returned, not raised, so that Ray never retries it."""

    error: BaseException
    trace: str


def _failure(e: BaseException) -> _Failure:
    trace = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 - an exception that does not travel: its one line does
        e = RuntimeError(one_line(e))
    return _Failure(e, trace)


_CONTEXT: dict[tuple, Any] = {}  # this worker process's UnitContext: one run's data at a time


def _context(spec: Any, data_box: list, threads: int) -> Any:
    key = (data_box[0].hex(), spec, threads)
    if key not in _CONTEXT:
        import torch

        from harness.work import UnitContext

        _CONTEXT.clear()
        torch.set_num_threads(threads)
        if spec.device.startswith("cuda"):  # Ray makes the unit's GPU the only one visible: cuda:0
            spec = dataclasses.replace(spec, device="cuda")
        data = ray.get(data_box[0])  # read-only views of the object store; the small label arrays are copied
        pools = {n: dataclasses.replace(p, labels=np.array(p.labels)) for n in ("base", "novel", "validation")
                 if (p := getattr(data, n)) is not None}
        _CONTEXT[key] = UnitContext(spec, dataclasses.replace(data, **pools))
    return _CONTEXT[key]


@ray.remote
def _task(unit: SourceUnit | EvalUnit, spec: Any, data_box: list, threads: int, *sources: Any) -> Any:
    """One unit in a worker process (an evaluation unit's source models resolved by Ray)."""
    from harness.work import run_unit

    if any(isinstance(s, _Failure) for s in sources):
        return None  # the driver wrote this unit's failed row when its source failed
    try:
        return run_unit(unit, _context(spec, data_box, threads), list(sources))
    except Exception as e:  # noqa: BLE001 - the unit's own failure: failed rows, not a retry
        return _failure(e)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an unreachable address (Ray itself retries one for minutes)."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not (sep and host and port.isdigit()):
        raise UsageError(f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT, auto or local; {HINT}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); {HINT}") from None


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (default $RAY_ADDRESS), or start a local Ray runtime; quietly (no
    worker output, no dashboard). False when Ray was already initialised in this process (by the caller)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address == "local":
        options["include_dashboard"] = False
    elif address != "auto":
        check_reachable(address)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"cannot connect to the Ray cluster at {address} ({one_line(e)}); {HINT}") from None
    return True


class RayExecutor(Executor):
    """Units of work as Ray tasks across a cluster's GPUs and machines; the driver writes records and caches."""

    gpus: float | None = None  # per unit, once checked
    started = False  # this executor started (or joined) Ray, and shuts it down at the end

    def check(self) -> None:
        from harness.measure import resolve_device

        c = self.config
        if not c.cpus_per_unit > 0:
            raise UsageError(f"--cpus-per-unit must be positive, got {c.cpus_per_unit:g}")
        gpus = c.gpus_per_unit
        if gpus is not None and (gpus < 0 or (gpus > 1 and gpus != int(gpus))):
            raise UsageError(f"--gpus-per-unit must be a fraction up to 1 or a whole number, got {gpus:g}")
        device = resolve_device(c.device)
        self.gpus = float(gpus if gpus is not None else 1 if device.type == "cuda" else 0)
        if device.type == "cuda" and self.gpus == 0:
            raise UsageError("--gpus-per-unit 0 with a GPU device: the units would see no GPU; pass a share "
                             "such as --gpus-per-unit 0.25, or --device cpu")
        self.started = connect(c.ray_address)
        try:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
            for name, want, flag in (("GPU", self.gpus, "--gpus-per-unit"),
                                     ("CPU", c.cpus_per_unit, "--cpus-per-unit")):
                most = max((r.get(name, 0.0) for r in nodes), default=0.0)
                if want > most:
                    raise UsageError(f"{flag} {want:g}: no machine of the Ray cluster has {want:g} {name}s (the "
                                     f"most on one: {most:g}); lower {flag} or add machines that have them")
        except BaseException:
            self.shutdown()
            raise

    def unit_threads(self) -> int:
        return self.config.threads or max(1, math.floor(self.config.cpus_per_unit))

    def shutdown(self) -> None:
        if self.started:
            ray.shutdown()
            self.started = False

    def execute(self, plan: Plan, session: Session) -> None:
        if self.gpus is None:
            self.check()
        try:
            _Driver(self, plan, session).run()
        finally:
            self.shutdown()


class _Driver:
    """One execution: the tasks in flight, the source models by key, the locks held."""

    def __init__(self, executor: RayExecutor, plan: Plan, session: Session):
        c = executor.config
        self.plan, self.session = plan, session
        self.evals = [e for e in plan.evaluations if e.id not in session.finished]
        self.keys = list(dict.fromkeys(k for e in self.evals for k in e.source_keys))
        self.users = Counter(k for e in self.evals for k in e.source_keys)
        self.threads = executor.unit_threads()
        self.options: dict[str, Any] = {"num_cpus": c.cpus_per_unit, "num_gpus": executor.gpus,
                                        "max_retries": MAX_RETRIES, "retry_exceptions": False}
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        if env:
            self.options["runtime_env"] = {"env_vars": env}
        self.sources: dict[str, Any] = {}  # key -> ObjectRef of its SourceResult (a task's, or put), None: failed
        self.training: dict[str, Any] = {}  # key -> its training task, until the driver has stored the model
        self.locks: dict[str, IO] = {}
        self.waiting: list[str] = []  # keys whose lock another run holds
        self.pending: dict[Any, SourceUnit | EvalUnit] = {}  # task ref -> unit
        self.unsubmitted = list(self.evals)

    def run(self) -> None:
        if not self.evals:
            return
        self.bar = self.session.progress("units", len(self.keys) + len(self.evals), "unit")
        self.common = (self.session.spec, [ray.put(self.session.data)], self.threads)
        try:
            for key in self.keys:
                self.claim(key)
            self.submit()
            while self.pending or self.waiting:
                stopping = self.session.stop_requested
                for ref in self.ready(0 if stopping else POLL_SECONDS):
                    self.finish(ref)
                if stopping:
                    self.session.check_stop()  # raises Interrupted, after saving what had finished
                for key in list(self.waiting):
                    self.claim(key)
                self.submit()
        finally:
            for ref in self.pending:
                with contextlib.suppress(Exception):  # finished meanwhile
                    ray.cancel(ref, recursive=True)
            for lock in self.locks.values():
                lock.close()
            self.bar.close()

    def claim(self, key: str) -> None:
        """Load ``key`` from the cache, or start training it under its lock; wait while another run holds it."""
        lock = self.session.claim(key)
        if lock is None:
            if key not in self.waiting:
                self.waiting.append(key)
            return
        self.waiting = [k for k in self.waiting if k != key]
        try:
            hit = self.session.lookup(key)
        except Exception as e:  # noqa: BLE001
            lock.close()
            self.fail_source(self.plan.sources[key], e)
            return
        if hit is not None:
            lock.close()
            self.sources[key] = ray.put(hit)
            self.bar(1)
            return
        self.locks[key] = lock
        ref = _task.options(**self.options).remote(self.plan.sources[key], *self.common)
        self.sources[key] = self.training[key] = ref
        self.pending[ref] = self.plan.sources[key]

    def submit(self) -> None:
        """Start the evaluation units whose source models are all loaded or training."""
        for unit in list(self.unsubmitted):
            if all(k in self.sources for k in unit.source_keys):
                self.unsubmitted.remove(unit)
                refs = [self.sources.get(k) for k in unit.source_keys]
                if unit.id in self.session.finished or None in refs:
                    self.bar(1)  # its failed row was written with its source's
                    continue
                self.pending[_task.options(**self.options).remote(unit, *self.common, *refs)] = unit

    def ready(self, timeout: float) -> list:
        refs = list(self.pending)
        if not refs:
            time.sleep(timeout)
            return []
        done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if done:
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return sorted(done, key=lambda r: isinstance(self.pending[r], EvalUnit))  # sources first

    def value(self, ref: Any) -> Any:
        result = ray.get(ref)
        if isinstance(result, _Failure):
            result.error.__cause__ = RemoteTraceback(f'\n"""\n{result.trace}"""')
            raise result.error
        return result

    def finish(self, ref: Any) -> None:
        unit = self.pending.pop(ref, None)
        if isinstance(unit, SourceUnit):
            self.finish_source(unit, ref)
        elif isinstance(unit, EvalUnit):
            self.finish_eval(unit, ref)

    def finish_source(self, unit: SourceUnit, ref: Any) -> None:
        self.training.pop(unit.key, None)
        try:
            self.session.store(self.value(ref))  # atomic writes, under the lock this driver holds
            self.bar(1)
        except CONTROL:
            raise
        except Exception as e:  # noqa: BLE001 - the unit's exception, or its worker lost MAX_RETRIES times
            if not self.session.stop_requested:  # (after Ctrl-C, an interrupted unit is simply not done)
                self.fail_source(unit, e)
        finally:
            self.locks.pop(unit.key).close()

    def fail_source(self, unit: SourceUnit, error: BaseException) -> None:
        self.sources[unit.key] = None  # its dependents are not submitted
        self.bar(1)
        self.session.failed(unit, error, self.plan.dependents(unit.key))  # raises FailFast with --fail-fast

    def finish_eval(self, unit: EvalUnit, ref: Any) -> None:
        for key in unit.source_keys:  # its sources' outcomes first
            if key in self.training:
                self.finish(self.training[key])
        if unit.id not in self.session.finished:  # else its failed row was written with its source's
            try:
                self.session.eval_done(unit, self.value(ref))
            except CONTROL:
                raise
            except Exception as e:  # noqa: BLE001
                if not self.session.stop_requested:
                    self.session.failed(unit, e, [unit])
        self.bar(1)
        for key in unit.source_keys:
            self.users[key] -= 1
            if self.users[key] == 0:
                self.sources.pop(key, None)  # its model leaves the object store
