"""One run configuration: the :class:`RunConfig` dataclass is the single place where run settings, their
defaults, types and help live. The ``run`` subcommand's options are generated from its fields, and a
config file's ``[run]`` table accepts the same names::

    [run]
    preset = "smoke"
    shots = [1, 5]
    data_dir = "data/cifar"      # relative paths: relative to the TOML file

Precedence, lowest first: the field defaults < the preset (its episode count) < the ``[run]`` table of
``--config FILE`` < the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError, did_you_mean
from harness.overrides import _coerce, read_toml


def option(default: Any, help: str, *, flags: tuple[str, ...] = (), metavar: str | None = None,
           positive: bool = False, cli_only: bool = False, positional: bool = False, path: bool = False) -> Any:
    """A RunConfig field: its default and how the command line and TOML present it."""
    meta = {"help": help, "flags": flags, "metavar": metavar, "positive": positive, "cli_only": cli_only,
            "positional": positional, "path": path}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Everything ``python -m harness run`` takes (strategy hyperparameters come through ``set`` and the
    config file's strategy tables)."""

    strategies: list[str] = option([], "strategy names (see `list`)", positional=True)
    all: bool = option(False, "run every registered strategy")
    preset: str = option("quick", "smoke | quick (default) | quick-matched | paper: budgets and episode count")
    dataset: str = option("cifar10-5-5", "a registered dataset (see `list datasets`) or a dataset TOML file",
                          flags=("--dataset", "--split"), metavar="NAME|FILE.toml")
    source_dataset: str | None = option(None, "the dataset whose base pool every source phase trains on (a registered "
                                              "source, see `list datasets`, or a dataset TOML file with base classes); "
                                              "default: the TOML file's source, else the dataset itself",
                                        metavar="NAME|FILE.toml")
    strict_leaks: bool = option(False, "stop when target images equal source images or a class is in both "
                                       "(default: a warning in the report)")
    backbone: str | None = option(None, "backbone of every source phase (see `list backbones`; default: conv4)")
    ways: int = option(5, "classes per episode", positive=True)
    shots: list[int] = option([1, 5], "support images per class; several settings: 1 5 or 1,5", positive=True)
    queries: int | str = option(15, "query images per class, or auto: min(15, smallest novel class - "
                                       "largest shots) (default: 15; auto for TOML datasets)", positive=True,
                                       metavar="Q|auto")
    episodes: int | None = option(None, "episodes per shot setting (default: the preset's)", positive=True)
    tune: int | None = option(None, "tune every ranked row's adapter: N configurations (the defaults plus N-1 "
                                    "drawn from its search space, see `list strategies --tunable`) on validation "
                                    "episodes; the best by mean validation accuracy is scored (default: untuned)",
                              metavar="N")
    tune_episodes: int = option(100, "--tune: validation episodes per configuration", positive=True, metavar="V")
    seed: int = option(0, "seed of the episodes; the first training seed (replicates derive theirs from it)")
    replicates: int = option(1, "train every source phase with this many training seeds, evaluated on the same "
                                "episodes (default: the preset's: 1, paper 5)", positive=True)
    budget: list[str] = option([], "set one budget group's FLOP budget in supervised-image equivalents, e.g. "
                                   "--budget meta=50000 (repeatable)", metavar="GROUP=N")
    budget_scale: list[float] = option([1.0], "multiply every budget; several values (0.25,0.5,1) run each strategy "
                                              "at each: accuracy-vs-compute curves", metavar="X")
    match_compute: bool = option(False, "give every source phase the pretrain group's FLOP budget (budgets are FLOPs "
                                        "in supervised-image equivalents)")
    precision: str = option("fp32", "fp32 | bf16: bf16 autocast in the source phases (the same on every device)")
    deterministic: bool = option(True, "deterministic algorithms, no TF32 (--no-deterministic: faster on a GPU)")
    device: str = option("auto", "auto | cpu | cuda")
    executor: str = option("local", "how units of work run (see `list executors`)")
    ray_address: str | None = option(None, "--executor ray: the Ray cluster (HOST:6379, auto, ray://HOST:10001); "
                                           "default $RAY_ADDRESS, else a local Ray runtime started for the run",
                                     metavar="ADDRESS")
    gpus_per_unit: float | None = option(None, "--executor ray: GPUs each unit of work reserves; a fraction "
                                               "shares a GPU (0.25: four units per GPU); default 1 when the run's "
                                               "device is a GPU, else 0", metavar="G")
    cpus_per_unit: float = option(1.0, "--executor ray: CPU cores each unit of work reserves (its torch threads, "
                                       "unless --threads)", metavar="C")
    data_dir: str | None = option(None, "dataset folder (else $HARNESS_DATA, else the cache, where torchvision "
                                        "downloads on a machine with internet)", path=True, metavar="DIR")
    cache_dir: str | None = option(None, "data and source-model cache (default $HARNESS_CACHE or "
                                         "~/.cache/transfer-harness)", path=True, metavar="DIR")
    out: str | None = option(None, "run directory (default runs/<time>-<id>); an existing one is resumed",
                             path=True, metavar="RUN_DIR")
    resume: str | None = option(None, "resume the run in RUN_DIR with the settings it recorded", cli_only=True,
                                metavar="RUN_DIR")
    set: list[str] = option([], "override a hyperparameter, e.g. --set frozen-features.C=2.0 (repeatable)",
                            cli_only=True, metavar="STRATEGY.PARAM=VALUE")
    config: str | None = option(None, "TOML file: a [run] table of these settings and a [strategy] table of "
                                      "hyperparameters per strategy", cli_only=True, metavar="FILE")
    report: str | None = option(None, "leaderboard file (default RUN_DIR/leaderboard.md)", path=True, metavar="FILE")
    data_label: str | None = option(None, "dataset name printed in the report (default: from the data)")
    threads: int | None = option(None, "torch CPU threads", positive=True)
    fail_fast: bool = option(False, "stop at the first failed strategy")
    trust_model_code: bool = option(False, "load model files (keras-pretrained, torch-pretrained) that need code to "
                                           "load: Keras Lambda layers, pickled torch objects; this runs their code")
    quiet: bool = option(False, "no progress bars")

    #: where each value came from ("default", "preset", "config", "command line", "run directory")
    origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False,
                                    metadata={"internal": True})

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in settings()}


def settings() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(RunConfig) if not f.metadata.get("internal")]


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(RunConfig)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _queries(text: str) -> int | str:
    """``--queries Q`` (a positive integer) or ``--queries auto`` (harness/datasets/domains.py auto_queries)."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e}; give a positive integer or auto") from None


def _int_list(text: str) -> list[int]:
    """``5`` or ``1,5``: ``--shots 1,5`` is read as ``--shots 1 5``."""
    return [_positive_int(part) for part in text.replace(",", " ").split()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the RunConfig fields as options; unset ones stay absent from the namespace (SUPPRESS), so the
    command line only overrides what it names."""
    hints = _hints()
    for f in settings():
        m, kind = f.metadata, hints[f.name]
        flags = m["flags"] or (f"--{f.name.replace('_', '-')}",)
        common: dict[str, Any] = {"help": m["help"], "default": argparse.SUPPRESS}
        if m["positional"]:
            parser.add_argument(f.name, nargs="*", **common)
        elif kind is bool:
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(*flags, action=action, **common)
        elif f.name in ("set", "budget"):
            parser.add_argument(*flags, action="append", metavar=m["metavar"], **common)
        elif typing.get_origin(kind) is list:
            item = typing.get_args(kind)[0]
            parser.add_argument(*flags, nargs="+", type=_int_list if item is int else _float_list,
                                metavar=m["metavar"] or "K", **common)
        else:
            base = typing.get_args(kind)[0] if typing.get_origin(kind) is not None else kind
            conv = _queries if f.name == "queries" else _positive_int if m["positive"] else base
            parser.add_argument(*flags, type=conv, metavar=m["metavar"], dest=f.name, **common)


def _float_list(text: str) -> list[float]:
    """``0.5`` or ``0.25,0.5,1``; every value positive."""
    values = []
    for part in text.replace(",", " ").split():
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {part}")
        values.append(value)
    return values


def _flatten_lists(values: dict[str, Any]) -> dict[str, Any]:
    for key in ("shots", "budget_scale"):
        if isinstance(values.get(key), list) and values[key] and isinstance(values[key][0], list):
            values[key] = [s for part in values[key] for s in part]
    return values


def from_layers(cli: dict[str, Any], recorded: dict[str, Any] | None = None) -> tuple[RunConfig, dict[str, dict]]:
    """The resolved RunConfig and the config file's strategy tables. ``cli``: the explicitly given options
    (argparse namespace without SUPPRESSed entries); ``recorded``: a resumed run directory's settings."""
    cli = _flatten_lists(dict(cli))
    toml_run: dict[str, Any] = {}
    tables: dict[str, dict] = {}
    if cli.get("config"):
        toml_run, tables = read_toml(cli["config"])
    names = {f.name: f for f in settings()}
    for key in list(toml_run):
        if key not in names or names[key].metadata["cli_only"]:
            valid = [n for n, f in names.items() if not f.metadata["cli_only"]]
            raise UsageError(f"config file {cli['config']}: unknown [run] setting {key!r}{did_you_mean(key, valid)}; "
                             f"settings: {', '.join(valid)}")
    hints = _hints()
    base = Path(cli["config"]).resolve().parent if cli.get("config") else Path.cwd()
    layers: list[tuple[str, dict[str, Any]]] = [("run directory", recorded or {}), ("config", {}),
                                                 ("command line", cli)]
    for key, value in toml_run.items():
        if key == "queries" and isinstance(value, str) and value.strip().lower() == "auto":
            layers[1][1][key] = "auto"
            continue
        value = _coerce(value, int if key == "queries" else hints[key], f"config file {cli['config']}: [run] {key}")
        if names[key].metadata["path"] and isinstance(value, str):
            value = str((base / value).expanduser()) if not Path(value).expanduser().is_absolute() else value
        if names[key].metadata["positive"] or key == "budget_scale":
            for v in value if isinstance(value, list) else [value]:
                if v is not None and (v < 1 if names[key].metadata["positive"] else v <= 0):
                    raise UsageError(f"config file {cli['config']}: [run] {key} must be positive, got {v}")
        layers[1][1][key] = value
    values: dict[str, Any] = {}
    origins = {n: "default" for n in names}
    for origin, layer in layers:
        for key, value in layer.items():
            if key in names:
                values[key], origins[key] = value, origin
    config = RunConfig(**values)
    from harness.presets import get_preset

    preset = get_preset(config.preset)
    for key, value in (("episodes", preset.episodes), ("match_compute", preset.match_compute),
                       ("replicates", preset.replicates)):
        if origins[key] == "default":
            setattr(config, key, value)
            origins[key] = "preset"
    config.origins = origins
    return config, tables
