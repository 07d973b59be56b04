"""Fault injection for the reliability tests: ``HARNESS_FAULT=<point>[:<n>][:once=<PATH>]`` makes the process
kill itself (SIGKILL) or interrupt itself (SIGINT, with ``sigint-`` before the point) the n-th time (default
1st) it passes ``point``. Points: ``source-step`` (a source-phase batch), ``episode`` (an episode batch
reported done), ``record-write`` (a record's temporary file written, not yet renamed), ``predictions-write``
(the same for its predictions file, written before the record), ``tuning-trial`` (a ``--tune``
configuration kept in ``RUN_DIR/tuning``), ``tuning-episode`` (a batch of validation episodes reported
done). With ``once=PATH`` the fault fires in one process only: the first to create the file PATH (so a unit
that a Ray worker retries after the kill runs to the end). Unset, it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _first_to_claim(path: str) -> bool:
    """True in the one process that creates ``path`` (atomically); False once it exists."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def checkpoint(point: str) -> None:
    spec = os.environ.get("HARNESS_FAULT")
    if not spec:
        return
    spec, _, once = spec.partition(":once=")
    name, _, nth = spec.partition(":")
    sig = signal.SIGKILL
    if name.startswith("sigint-"):
        name, sig = name[len("sigint-"):], signal.SIGINT
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(nth or 1) and (not once or _first_to_claim(once)):
        os.kill(os.getpid(), sig)
