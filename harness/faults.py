"""Fault injection for the reliability tests: ``HARNESS_FAULT=<point>[:<n>]`` makes the process kill
itself (SIGKILL) or interrupt itself (SIGINT, with ``sigint-`` before the point) the n-th time (default
1st) it passes ``point``. Points: ``source-step`` (a source-phase batch), ``episode`` (an episode batch
reported done), ``record-write`` (a record's temporary file written, not yet renamed). Unset, it costs
one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def checkpoint(point: str) -> None:
    spec = os.environ.get("HARNESS_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    sig = signal.SIGKILL
    if name.startswith("sigint-"):
        name, sig = name[len("sigint-"):], signal.SIGINT
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(nth or 1):
        os.kill(os.getpid(), sig)
