"""Errors that reach the user as one line and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """A bad input from the user: printed as one line, exit status 2, nothing written."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, word: str, choices: Iterable[str]) -> UsageError:
    """An error for an unknown name, with a suggestion and the valid names."""
    choices = sorted(choices)
    return UsageError(
        f"unknown {kind} {word!r}{did_you_mean(word, choices)}; choose from: {', '.join(choices)}"
    )
