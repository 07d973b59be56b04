"""The run: validate everything, then source phase (cached) and episode phase for each strategy.

Every strategy is scored by the harness on the same :class:`EpisodeSet` per shot setting; strategies
get :class:`Task` objects (no query labels) and return logits, which are checked before scoring.
"""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import RESULTS_SCHEMA_VERSION, __version__, registry
from harness.cache import SourceCache, atomic_write_json, cache_key
from harness.config import apply_overrides, parse_set, read_toml
from harness.data import Cifar10, load_cifar10
from harness.episodes import EpisodeSet, Task, validate_protocol
from harness.errors import UsageError, unknown
from harness.faults import checkpoint
from harness.measure import Stopwatch, device_name, resolve_device
from harness.presets import get_preset
from harness.results import ci95, read_json, record_path, write_record
from harness.splits import get_split
from harness.strategy import SourceData, Strategy

PROTOCOL_KEYS = ("preset", "split", "ways", "queries", "episodes", "seed")


@dataclass
class RunOptions:
    names: list[str]
    all: bool = False
    preset: str = "quick"
    split: str = "cifar10-5-5"
    ways: int = 5
    shots: list[int] = field(default_factory=lambda: [1, 5])
    queries: int = 15
    episodes: int | None = None  # None: the preset's
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    cache_dir: Path | None = None
    out: Path | None = None
    sets: list[str] = field(default_factory=list)
    config_file: str | None = None
    quiet: bool = False
    fail_fast: bool = False
    threads: int | None = None
    data_label: str | None = None
    download: bool = True
    command: str = ""


@dataclass
class Planned:
    strategy: Strategy | None
    name: str
    family: str
    skip_reason: str | None = None


def _plan(opts: RunOptions) -> list[Planned]:
    """Resolve names and hyperparameters; nothing is trained or written here."""
    entries = registry.load_all()
    if opts.all and opts.names:
        raise UsageError("give strategy names or --all, not both")
    if not opts.all and not opts.names:
        raise UsageError("no strategy given; name some (see `python -m harness list`) or pass --all")
    names = sorted(entries) if opts.all else list(dict.fromkeys(opts.names))
    for n in names:
        registry.get(n)  # did-you-mean for unknown names
    overrides: dict[str, dict[str, Any]] = {}
    if opts.config_file:
        for n, table in read_toml(opts.config_file).items():
            if n not in entries:
                raise unknown(f"strategy table in {opts.config_file}:", n, entries)
            overrides[n] = table
    for n, table in parse_set(opts.sets).items():
        if n not in entries:
            raise unknown("strategy in --set", n, entries)
        if n not in names:
            raise UsageError(f"--set names {n!r}, which is not in this run; add it to the strategies to run")
        overrides.setdefault(n, {}).update(table)
    planned = []
    for n in names:
        entry = entries[n]
        if not entry.available():
            if not opts.all:
                entry.load()  # raises the install hint
            hint = f"needs {entry.requires}: pip install -e \".[{entry.requires}]\""
            planned.append(Planned(None, n, entry.family, hint))
            continue
        strategy = apply_overrides(entry.load()(), overrides.get(n, {}), n)
        strategy.check()
        planned.append(Planned(strategy, n, type(strategy).family))
    return planned


def _check_out(opts: RunOptions, protocol: dict[str, Any]) -> Path:
    out = opts.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a directory")
    if (out / "config.json").is_file():
        old = read_json(out / "config.json")
        if old.get("schema_version") != RESULTS_SCHEMA_VERSION:
            raise UsageError(f"{out} was written by an incompatible harness (results schema "
                             f"{old.get('schema_version')}); pass a new --out")
        differ = [k for k in PROTOCOL_KEYS if old.get("protocol", {}).get(k) != protocol[k]]
        if differ:
            raise UsageError(f"{out} holds a run with different {', '.join(differ)}; pass a new --out to start "
                             f"a fresh run, or the same settings to resume it")
    elif out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not a run directory; pass a new or empty directory")
    ancestor = out
    while not ancestor.exists():  # nothing is created yet: check where the directory would be made
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to --out {out} ({ancestor} is not a writable directory); "
                         f"pass a writable directory")
    return out


def _create_out(out: Path) -> None:
    try:
        (out / "records").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write to --out {out} ({e.strerror}); pass a writable directory") from None
    for stale in (out / "records").glob(".*.tmp"):  # left by a run killed while writing
        stale.unlink()


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _environment(device: torch.device, data: Cifar10, opts: RunOptions) -> dict[str, Any]:
    import torchvision

    label = opts.data_label or {
        "cifar-10-batches-py": "CIFAR-10 (official batches)",
        "imagefolder-jpg": "CIFAR-10 (JPEG copy; pixels differ slightly from the original batches)",
        "imagefolder-png": "CIFAR-10 (PNG ImageFolder)",
    }[data.layout]
    return {
        "harness_version": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": np.__version__, "platform": platform.platform(),
        "device": device_name(device), "device_type": device.type, "threads": torch.get_num_threads(),
        "git_commit": _git_commit(), "dataset": label, "data_source": data.source,
        "data_layout": data.layout, "data_fingerprint": data.fingerprint, "command": opts.command,
    }


def check_logits(logits: torch.Tensor, task: Task, strategy: str, index: int) -> None:
    expected = (len(task.query_index), task.ways)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{strategy} returned logits of shape {shape} in episode {index}, "
                         f"expected (queries, ways) = {expected}")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{strategy} returned non-finite logits in episode {index}")


class Run:
    """One invocation of `run`: holds the data on the device, the cache and the output directory."""

    def __init__(self, opts: RunOptions, log: Callable[[str], None]):
        self.opts, self.log = opts, log
        self.preset = get_preset(opts.preset)
        self.split = get_split(opts.split)
        self.device = resolve_device(opts.device)
        self.episodes = opts.episodes if opts.episodes is not None else self.preset.episodes
        for s in opts.shots:
            validate_protocol([10**9] * len(self.split.novel_classes), opts.ways, s, opts.queries, self.episodes)
        self.planned = _plan(opts)
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.protocol = {"preset": opts.preset, "split": opts.split, "ways": opts.ways, "queries": opts.queries,
                         "episodes": self.episodes, "seed": opts.seed}
        cache_dir = opts.cache_dir
        if cache_dir is None:
            from harness.data import default_cache_dir
            cache_dir = default_cache_dir()
        self.data = load_cifar10(opts.data_dir, cache_dir, download=opts.download)
        novel = np.isin(self.data.test_labels, self.split.novel_classes)
        self.novel_labels = self.data.test_labels[novel]
        for s in opts.shots:
            validate_protocol([int((self.novel_labels == c).sum()) for c in self.split.novel_classes],
                              opts.ways, s, opts.queries, self.episodes)
        self.out = _check_out(opts, self.protocol)
        self.cache = SourceCache(cache_dir, warn=log)
        from harness.augment import to_float

        nchw = torch.from_numpy(self.data.test_images[novel]).permute(0, 3, 1, 2)
        self.pool = to_float(nchw.to(self.device)).contiguous()
        base = np.isin(self.data.train_labels, self.split.base_classes)
        remap = {c: i for i, c in enumerate(self.split.base_classes)}
        self.base_images = torch.from_numpy(self.data.train_images[base]).permute(0, 3, 1, 2).contiguous()
        self.base_labels = torch.tensor([remap[int(c)] for c in self.data.train_labels[base]])
        self.episode_sets: dict[int, EpisodeSet] = {}
        self.models: dict[str, tuple[torch.nn.Module, dict, bool]] = {}
        self.stop_requested = False  # set by the first Ctrl-C; checked between units of work
        self.completed: list[str] = []

    def write_header(self) -> None:
        _create_out(self.out)
        config = {"schema_version": RESULTS_SCHEMA_VERSION, "harness_version": __version__,
                  "protocol": self.protocol, "shots": self.opts.shots,
                  "split_description": self.split.describe(),
                  "novel_classes": len(self.split.novel_classes),
                  "preset_budgets": self.preset.source_images,
                  "strategies": {p.name: _params(p.strategy) for p in self.planned}}
        if (self.out / "config.json").is_file():  # resuming: keep what earlier invocations ran
            old = read_json(self.out / "config.json")
            config["strategies"] = {**old.get("strategies", {}), **config["strategies"]}
            config["shots"] = sorted(set(old.get("shots", [])) | set(self.opts.shots))
        atomic_write_json(self.out / "config.json", config)
        atomic_write_json(self.out / "environment.json", _environment(self.device, self.data, self.opts))

    def episode_set(self, shots: int) -> EpisodeSet:
        if shots not in self.episode_sets:
            self.episode_sets[shots] = EpisodeSet.draw(self.novel_labels, self.split.novel_classes,
                                                       self.opts.ways, shots, self.opts.queries,
                                                       self.episodes, self.opts.seed)
        return self.episode_sets[shots]

    def source_model(self, strategy: Strategy, shots: int) -> tuple[torch.nn.Module, dict, bool]:
        """The strategy's source model, from the cache or trained now (per shot setting when the phase
        declares ``per_shots``, e.g. episodic meta-training with the evaluation's ways and shots)."""
        from tqdm.auto import tqdm

        phase = strategy.source
        budget = self.preset.budget(phase.budget_group)
        phase_shots = shots if phase.per_shots else None
        context = {"split": self.split.name, "seed": self.opts.seed, "budget_images": budget,
                   "data": self.data.fingerprint, "ways": self.opts.ways}
        if phase.per_shots:
            context.update(shots=shots, queries=self.opts.queries)
        key = cache_key(phase, context)
        if key in self.models:  # trained or loaded earlier in this run
            model, meta, _ = self.models[key]
            return model, meta, True
        num_classes = len(self.split.base_classes)

        def train() -> tuple[torch.nn.Module, dict]:
            labels = self.base_labels.to(self.device) if phase.uses_labels else None
            bar = tqdm(total=budget, unit="img", desc=f"{phase.phase_name}", disable=self.opts.quiet,
                       leave=False, dynamic_ncols=True)
            data = SourceData(self.base_images.to(self.device), labels, num_classes, self.device,
                              self.opts.seed, _with_checkpoint(bar.update, "source-step"), ways=self.opts.ways,
                              shots=phase_shots,
                              queries=self.opts.queries, metrics={})
            with Stopwatch(self.device) as watch:
                model = phase.train(data, budget)
            bar.close()
            return model, {"phase": phase.phase_name, "params": phase.params(), "key": key,
                           "budget_images": budget, "seconds": watch.seconds,
                           "images_per_second": budget / max(watch.seconds, 1e-9),
                           "peak_memory_mb": watch.peak_memory_mb, "device": device_name(self.device),
                           "metrics": data.metrics, "context": context}

        model, meta, cached = self.cache.get_or_train(phase, key, num_classes, self.device, train)
        model.eval()
        self.models = {key: (model, meta, cached)}  # keep one: runs are ordered by strategy
        return self.models[key]

    def evaluate(self, strategy: Strategy, model: torch.nn.Module, shots: int) -> dict[str, Any]:
        from tqdm.auto import tqdm

        episode_set = self.episode_set(shots)
        tasks = episode_set.tasks(self.pool)
        bar = tqdm(total=len(tasks), unit="ep", desc=f"{strategy.name} {shots}-shot",
                   disable=self.opts.quiet, leave=False, dynamic_ncols=True)
        with Stopwatch(self.device) as watch:
            outputs = strategy.run_episodes(model, tasks, _with_checkpoint(bar.update, "episode"))
        bar.close()
        if len(outputs) != len(tasks):
            raise ValueError(f"{strategy.name} returned {len(outputs)} results for {len(tasks)} episodes")
        # an output is the query logits, or a dict with "logits" and extra named logits (e.g. "robust": on
        # attacked queries), reported as <name>_accuracy / <name>_ci95. A query counts for an extra output
        # only when both its clean and its extra prediction are right, so robust accuracy <= accuracy even
        # though attacks, which never see query labels, push away from the clean prediction.
        named = [o if isinstance(o, dict) else {"logits": o} for o in outputs]
        for key in named[0]:
            for i, (out, task) in enumerate(zip(named, tasks, strict=True)):
                check_logits(out.get(key), task, f"{strategy.name} ({key})", i)
        clean = episode_set.correct([out["logits"].argmax(1) for out in named])
        main_accs = np.array([float(c.mean()) for c in clean])
        metrics: dict[str, float] = {}
        for key in (k for k in named[0] if k != "logits"):
            extra = episode_set.correct([out[key].argmax(1) for out in named])
            accs = np.array([float((c & x).mean()) for c, x in zip(clean, extra, strict=True)])
            metrics[f"{key}_accuracy"], metrics[f"{key}_ci95"] = float(accs.mean()), ci95(accs)
        n = len(tasks)
        return {"accuracy": float(main_accs.mean()), "ci95": ci95(main_accs),
                "episode_accuracies": [round(float(a), 6) for a in main_accs], "metrics": metrics,
                "episode_fingerprint": episode_set.fingerprint(),
                "episode_seconds": watch.seconds, "ms_per_episode": 1000 * watch.seconds / n,
                "query_images_per_second": n * len(tasks[0].query_index) / max(watch.seconds, 1e-9),
                "episode_peak_memory_mb": watch.peak_memory_mb}

    def base_record(self, p: Planned, shots: int) -> dict[str, Any]:
        s = p.strategy
        return {"strategy": p.name, "family": p.family, "status": "ok", "reason": None, "shots": shots,
                "ways": self.opts.ways, "queries": self.opts.queries, "episodes": self.episodes,
                "split": self.split.name, "seed": self.opts.seed,
                "episode_phase": type(s).episode_phase if s else None,
                "params": s.params() if s else None, "settings": s.protocol_settings() if s else None,
                "source_phase": s.source.phase_name if s else None,
                "source_params": s.source.params() if s else None,
                "device": device_name(self.device), "torch_version": torch.__version__}

    def done(self, p: Planned, shots: int) -> bool:
        path = record_path(self.out, p.name, shots)
        if not path.is_file():
            return False
        try:
            old = read_json(path)
        except UsageError:
            return False
        current = self.base_record(p, shots)
        return old.get("status") == "ok" and all(old.get(k) == current[k] for k in
                                                 ("params", "source_params", "shots", "episodes"))

    def execute(self) -> list[dict[str, Any]]:
        self.write_header()
        records: list[dict[str, Any]] = []
        for p in self.planned:
            todo = [s for s in self.opts.shots if not self.done(p, s)]
            for s in self.opts.shots:
                if s not in todo:
                    records.append(read_json(record_path(self.out, p.name, s)))
            if not todo:
                self.log(f"{p.name}: already complete in {self.out}, skipped")
                continue
            if p.skip_reason:
                for s in todo:
                    rec = {**self.base_record(p, s), "status": "skipped", "reason": p.skip_reason}
                    write_record(self.out, rec)
                    records.append(rec)
                continue
            if self.stop_requested:
                raise Interrupted()
            records += self._run_strategy(p, todo)
        return records

    def resume_command(self) -> str:
        command = self.opts.command or "python -m harness run ..."
        return command if "--out" in command.split() else f"{command} --out {self.out}"

    def _run_strategy(self, p: Planned, todo: list[int]) -> list[dict[str, Any]]:
        records = []
        try:
            for s in todo:
                model, meta, cached = self.source_model(p.strategy, s)
                source = {"source_key": meta["key"], "source_budget_images": meta["budget_images"],
                          "source_seconds": meta["seconds"], "source_images_per_second": meta["images_per_second"],
                          "source_peak_memory_mb": meta["peak_memory_mb"], "source_device": meta["device"],
                          "source_cached": cached, "source_metrics": meta.get("metrics", {})}
                rec = {**self.base_record(p, s), **source, **self.evaluate(p.strategy, model, s)}
                write_record(self.out, rec)
                records.append(rec)
                self.completed.append(f"{p.name} {s}-shot")
                self.log(f"{p.name} {s}-shot: {100 * rec['accuracy']:.2f} ± {100 * rec['ci95']:.2f}%  "
                         f"({rec['ms_per_episode']:.1f} ms/episode)")
                if self.stop_requested:
                    raise Interrupted()
        except (KeyboardInterrupt, UsageError, Interrupted):
            raise
        except Exception as e:  # noqa: BLE001 - one strategy's failure must not end the run
            reason = _one_line(e)
            with open(self.out / "run.log", "a") as f:
                f.write(f"--- {p.name} failed ---\n{traceback.format_exc()}\n")
            self.log(f"{p.name}: FAILED: {reason} (traceback in {self.out / 'run.log'})")
            for s in todo:
                if not any(r["shots"] == s for r in records):
                    rec = {**self.base_record(p, s), "status": "failed", "reason": reason}
                    write_record(self.out, rec)
                    records.append(rec)
            if self.opts.fail_fast:
                raise FailFast(reason) from e
        return records


def _with_checkpoint(progress: Callable[[int], Any], point: str) -> Callable[[int], None]:
    def report(n: int) -> None:
        progress(n)
        checkpoint(point)

    return report


class Interrupted(Exception):
    """Raised between units of work after a graceful stop was requested (first Ctrl-C)."""


class FailFast(Exception):
    """Raised after recording a failure when --fail-fast is given."""


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


def _params(strategy: Strategy | None) -> dict[str, Any] | None:
    if strategy is None:
        return None
    return {**strategy.params(), "source": {"phase": strategy.source.phase_name, **strategy.source.params()}}


def command_line() -> str:
    return " ".join(["python -m harness", *sys.argv[1:]])

