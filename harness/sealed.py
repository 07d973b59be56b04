"""Sealed processes: strategy code runs in a fresh process that holds only what the job hands it.

The driver (and a Ray worker) holds the query labels and scores; it never runs a strategy's code. Every
strategy job (a source phase on the base pool, one batch of episodes, one episode of the independence check)
runs in a new process forked from a *fork server* (:mod:`multiprocessing`'s ``forkserver``): a clean
interpreter started once per driver process that imports torch, the harness and the registered strategies'
modules and never receives a job's data, let alone labels. A child gets the job by pipe (the pickled
strategy, the model's state, the sealed batch), sends progress counts and its result back, and exits; its
memory (class attributes, module globals, caches) dies with it, so nothing is carried from one batch to the
next. Start-up costs one fork plus unpickling the job (milliseconds to a fraction of a second), paid per batch
of about 50-60 episodes, never per episode.

Not sealed (README, Reliability): the file system and other processes' memory. A strategy that writes its
inputs to disk in one batch and reads them in the next can link episodes; so can one that reads a copy of the
dataset. The harness does not sandbox; it makes every channel the documented API offers label-free.
"""

from __future__ import annotations

import multiprocessing
import pickle
import secrets
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

_context: Any = None


#: torch._dynamo: what ``torch.use_deterministic_algorithms`` imports on its first call (about 2 s, 900 modules),
#: so that each sealed process's set-up (harness.measure.configure) is immediate
BASE_MODULES = ("numpy", "torch", "torch._dynamo", "harness.sealed", "harness.work", "harness.flops")
_wanted: set[str] = set()  # what the next fork server imports
_served: frozenset[str] = frozenset()  # what the running one imported


def preload_modules(strategies: Any = ()) -> list[str]:
    """What the fork server imports once: torch, the harness's job code, the strategies' modules and what their
    classes declare in a ``preload`` attribute (e.g. tensorflow for the Keras rows)."""
    import importlib.util

    modules = list(BASE_MODULES)
    for strategy in strategies:
        for part in (strategy.source, strategy.adapter):
            modules.append(type(part).__module__)
            modules += [m for m in getattr(part, "preload", ()) if importlib.util.find_spec(m) is not None]
    return list(dict.fromkeys(modules))


def preload(strategies: Any) -> None:
    """Name every strategy of a run before its first job, so that one fork server imports them all (a server
    started for fewer is restarted, which costs seconds)."""
    _wanted.update(preload_modules(strategies))


def context(strategies: Any = ()) -> Any:
    """The fork-server context, its server (re)started to preload ``strategies``' modules when it lacks one."""
    global _context, _served
    preload(strategies)
    if _context is None or not _wanted <= _served:
        import multiprocessing.forkserver as forkserver

        stop = getattr(forkserver._forkserver, "_stop", None)  # a server running without them: restart it
        if _context is not None and stop is not None:
            stop()
        _served = frozenset(_wanted)
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(sorted(_served))
    return _context


def read_secret(path: Path) -> str:
    """A run's secret from its file; a file that is not one: a one-line error."""
    secret = path.read_text(errors="replace").strip()
    if len(secret) != 32 or any(c not in "0123456789abcdef" for c in secret):
        from harness.errors import UsageError

        raise UsageError(f"{path} is not a run secret (32 lowercase hex digits); restore the run's own file, or "
                         f"delete it to draw a new one (new episode seeds)")
    return secret


def run_secret(out: Path) -> str:
    """The run's secret (``RUN_DIR/secret``, 128 bits from :mod:`secrets`): episode seeds derive from it, so a
    strategy cannot replay them; kept so that ``--resume`` (or a copy of the file) reproduces the run."""
    path = out / "secret"
    if path.is_file():
        return read_secret(path)
    from harness.io import atomic_write_bytes

    secret = secrets.token_hex(16)
    atomic_write_bytes(path, (secret + "\n").encode())
    return secret


class SealedProcessDied(RuntimeError):
    """A sealed process ended without a result (killed, crashed, out of memory, os._exit)."""


def _send(conn: Any, message: tuple) -> None:
    """Plain pickle (a copy of every tensor), never torch's shared-memory reductions: nothing outlives the
    sending process."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _child(conn: Any, job: Callable[..., Any], payload: bytes) -> None:
    def progress(n: int) -> None:
        _send(conn, ("progress", n, ""))

    try:
        result = job(pickle.loads(payload), progress)
    except BaseException as e:  # noqa: BLE001 - every error goes back to the driver as a value
        trace = traceback.format_exc()
        try:
            pickle.dumps(e)
            error: BaseException = e
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled goes back as its text
            error = RuntimeError(f"{type(e).__name__}: {e}")
        message = ("error", error, trace)
    else:
        message = ("result", result, "")
    try:
        _send(conn, message)
        conn.close()
    except OSError:  # the driver has stopped listening (interrupted, killed): nobody wants the result
        pass


def _dumps(payload: Any) -> bytes:
    """The job as bytes: plain pickle, or, for a strategy class that its module cannot give by name (one that a
    Ray worker received by value), cloudpickle's copy by value."""
    try:
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        import sys

        cloudpickle = sys.modules.get("ray.cloudpickle") or sys.modules.get("cloudpickle")
        if cloudpickle is not None:
            try:
                return cloudpickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - reported as the plain pickle's error below
                pass
        raise TypeError(f"cannot send this job to its sealed process ({e}); define strategy classes at module "
                        f"level so that they pickle") from None


def run_sealed(job: Callable[[Any, Callable[[int], None]], Any], payload: Any,
               progress: Callable[[int], None] = lambda n: None, strategies: Any = ()) -> Any:
    """``job(payload, progress)`` in a fresh sealed process; its result, or its exception raised here (with the
    child's traceback as the cause). ``job`` must be a module-level function, ``payload`` picklable."""
    ctx = context(strategies)
    reader, writer = ctx.Pipe(duplex=False)
    data = _dumps(payload)
    process = ctx.Process(target=_child, args=(writer, job, data), daemon=True)
    process.start()
    writer.close()
    try:
        while True:
            try:
                kind, value, trace = pickle.loads(reader.recv_bytes())
            except EOFError:
                process.join()
                raise SealedProcessDied(f"the sealed process running {getattr(job, '__name__', job)} ended with "
                                        f"exit code {process.exitcode} and no result") from None
            if kind == "progress":
                progress(value)
            elif kind == "result":
                return value
            else:
                raise value from RemoteError(trace)
    finally:
        reader.close()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


class RemoteError(Exception):
    """The sealed process's traceback, chained to its exception so RUN_DIR/run.log shows where it was raised."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""
