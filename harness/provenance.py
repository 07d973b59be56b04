"""What produced a number: the code (git commit, or a hash of the source), the project files a source
phase trains with (their hash enters the cache key), and the files a row's code links point at."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

PROJECT_PACKAGES = ("harness", "strategies")
ROOT = Path(__file__).resolve().parent.parent  # the folder holding the harness and strategies packages


def _project_module(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] in PROJECT_PACKAGES


def module_closure(*names: str) -> list[str]:
    """The project modules reachable from ``names`` through module-level references (imported modules,
    functions, classes), sorted: what a class defined there can run."""
    seen: set[str] = set()
    stack = [n for n in names if _project_module(n)]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        module = sys.modules.get(name) or importlib.import_module(name)
        for value in vars(module).values():
            ref = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(ref, str) and _project_module(ref) and ref not in seen:
                stack.append(ref)
    return sorted(seen)


def code_hash(*names: str) -> str:
    """sha256 of the source files of the modules reachable from ``names`` (a comment edit changes it)."""
    h = hashlib.sha256()
    for name in module_closure(*names):
        path = getattr(sys.modules[name], "__file__", None)
        if path:
            h.update(name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def relative_file(obj: object) -> str | None:
    """The file defining ``obj`` relative to the project root, or None outside this project."""
    try:
        path = Path(inspect.getfile(obj)).resolve()  # type: ignore[arg-type]
    except (TypeError, OSError):
        return None
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return None


def source_tree_hash() -> str:
    """sha256 of every .py file of the project's packages (the code version outside a git checkout)."""
    h = hashlib.sha256()
    for package in PROJECT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def code_version() -> str:
    """The project's git commit ("-dirty" with local changes to tracked files) when ROOT is the top of its
    own git checkout, else "source sha256:<hash of the package sources>"."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        if Path(top).resolve() != ROOT:
            raise ValueError("a copy inside another repository")
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, ValueError, subprocess.SubprocessError):
        return f"source sha256:{source_tree_hash()}"
    return commit + ("-dirty" if dirty else "")
