"""Strategy hyperparameters from ``--set strategy.param=value`` and TOML files.

Everything derives from the dataclass fields: the valid names, their types and their defaults. Nested
dataclasses (the ``source`` phase) are addressed with dots: ``--set frozen-features.source.lr=0.1``.
In TOML, a table per strategy, with a ``source`` sub-table::

    [frozen-features]
    C = 2.0
    [frozen-features.source]
    lr = 0.1
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from harness.errors import UsageError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _hints(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Convert a string (from --set) or a TOML value to the field's type, or fail clearly."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        if len(options) == 1:
            return _coerce(value, options[0], where)
    if origin is list:
        (item,) = typing.get_args(kind) or (str,)
        items = value if isinstance(value, list) else str(value).replace(",", " ").split()
        return [_coerce(v, item, where) for v in items]
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise UsageError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif kind in (int, float):  # an int is a float too; a float is not an int
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and (kind is float or isinstance(value, int)):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise UsageError(f"{where}: this parameter cannot be set from the command line or a config file")
    name = getattr(kind, "__name__", str(kind))
    raise UsageError(f"{where}: expected a value of type {name}, got {value!r}")


def apply_overrides(obj: Any, overrides: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass ``obj`` with dotted ``overrides`` applied (values checked and typed)."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = _hints(obj)
    changes: dict[str, Any] = {}
    for key in [*flat, *nested]:
        if key not in fields:
            settable = ", ".join(sorted(_settable(obj)))
            raise UsageError(f"{where}: unknown parameter {key!r}{did_you_mean(key, fields)}; "
                             f"parameters: {settable}")
    for key, value in flat.items():
        if isinstance(value, dict):
            nested.setdefault(key, {}).update(value)
            continue
        if dataclasses.is_dataclass(getattr(obj, key)):
            raise UsageError(f"{where}: {key!r} is a group of parameters; set {key}.<name>=value")
        changes[key] = _coerce(value, hints[key], f"{where}.{key}")
    for key, sub in nested.items():
        child = getattr(obj, key)
        if not dataclasses.is_dataclass(child):
            raise UsageError(f"{where}: {key!r} is a single value, not a group of parameters")
        changes[key] = apply_overrides(child, sub, f"{where}.{key}")
    return dataclasses.replace(obj, **changes)


def _settable(obj: Any, prefix: str = "") -> list[str]:
    names = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            names += _settable(value, f"{prefix}{f.name}.")
        else:
            names.append(prefix + f.name)
    return names


def parse_set(items: list[str]) -> dict[str, dict[str, str]]:
    """``["a.b=1", "a.source.c=x"]`` -> ``{"a": {"b": "1", "source.c": "x"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        strategy, dot, param = key.partition(".")
        if not eq or not dot or not strategy or not param:
            raise UsageError(f"--set {item!r} is malformed; write --set STRATEGY.PARAM=VALUE, "
                             f"e.g. --set frozen-features.C=2.0")
        out.setdefault(strategy.strip(), {})[param.strip()] = value.strip()
    return out


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in table.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat


def load_toml(path: str | Path, what: str = "config file", flag: str = "--config") -> dict[str, Any]:
    """A TOML file's contents; one-line errors for a missing or malformed file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"{what} {path} does not exist; pass {flag} with an existing TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{what} {path} is not valid TOML ({' '.join(str(e).split())}); fix the syntax") from None


def read_toml(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a config file: its ``[run]`` table (run settings) and one table per strategy (flattened,
    ``source`` sub-tables as ``source.NAME``), values typed by TOML."""
    data = load_toml(path)
    run = data.pop("run", {})
    if not isinstance(run, dict):
        raise UsageError(f"config file {path}: 'run' must be a [run] table of run settings")
    for name, table in data.items():
        if not isinstance(table, dict):
            raise UsageError(f"config file {path}: top-level key {name!r} must be a [strategy] table or [run]")
    return run, {name: _flatten(table) for name, table in data.items()}


def apply_strategy_overrides(strategy: Any, overrides: dict[str, Any], where: str) -> Any:
    """A copy of a :class:`harness.phases.Strategy` with overrides applied: ``NAME`` sets an adapter
    (episode-phase) field, ``source.NAME`` a pretrainer (source-phase) field."""
    source = {k[len("source."):]: v for k, v in overrides.items() if k.startswith("source.")}
    episode = {k: v for k, v in overrides.items() if not k.startswith("source.")}
    if "source" in episode:
        if not isinstance(episode["source"], dict):
            raise UsageError(f"{where}: 'source' is a group of parameters; set source.<name>=value")
        source.update(_flatten(episode.pop("source")))
    fields = {f.name for f in dataclasses.fields(strategy.adapter)}
    for key in episode:
        if key.partition(".")[0] not in fields:
            settable = sorted(_settable(strategy.adapter)) + sorted(f"source.{n}" for n in _settable(strategy.source))
            raise UsageError(f"{where}: unknown parameter {key!r}{did_you_mean(key, [*fields, 'source'])}; "
                             f"parameters: {', '.join(settable)}")
    return dataclasses.replace(strategy, adapter=apply_overrides(strategy.adapter, episode, where),
                               source=apply_overrides(strategy.source, source, f"{where}.source"))
