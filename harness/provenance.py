"""What produced a number: the code (git commit, or a hash of the source), the project files a source
phase trains with (their hash enters the cache key), and the files a row's code links point at."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

PROJECT_PACKAGES = ("harness", "strategies")
ROOT = Path(__file__).resolve().parent.parent  # the folder holding the harness and strategies packages


def _project_module(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] in PROJECT_PACKAGES


@functools.cache
def _imports(name: str) -> frozenset[str]:
    """The project modules module ``name``'s source imports anywhere, inside functions too (``import``
    statements that run lazily), found by parsing it (once per process)."""
    path = getattr(sys.modules.get(name) or importlib.import_module(name), "__file__", None)
    if not path or not path.endswith(".py"):
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # ``from harness import augment``
    return frozenset(n for n in found if _project_module(n) and _is_module(n))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError, ValueError):  # ``harness.backbone.Backbone``: a class, not a module
        return False


def module_closure(*names: str) -> list[str]:
    """The project modules reachable from ``names`` through module-level references (imported modules,
    functions, classes) and import statements (also inside functions), sorted: what a class defined there
    can run."""
    seen: set[str] = set()
    stack = [n for n in names if _project_module(n)]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        module = sys.modules.get(name) or importlib.import_module(name)
        # a package's submodules appear among its attributes once anything imported them: left out (an import
        # in the package's own code is found by _imports), so the closure never depends on what ran before
        refs = {value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
                for value in vars(module).values()
                if not (inspect.ismodule(value) and value.__name__.startswith(name + "."))} | _imports(name)
        stack += [ref for ref in refs if isinstance(ref, str) and _project_module(ref) and ref not in seen]
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
