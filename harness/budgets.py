"""Source-phase budgets: the preset's, ``--budget GROUP=N`` overrides, ``--budget-scale`` multipliers, and
``--match-compute`` (every source phase gets the FLOPs of the pretrain group's budget).

Budgets are FLOP budgets, given in supervised-image equivalents: a group's budget N buys
``N x FLOPs per image of the supervised phase`` (default hyperparameters, the run's backbone), whatever the
phase. Each phase converts its FLOP budget to its own images processed from its measured FLOPs per image
(harness/flops.py: one counted training step), rounded to the nearest whole training step (at least one).
So a second-order MAML image (about three passes per support image) or a PGD example (attack steps
cheaper than a training pass) costs what it really costs, not a count of passes. With --match-compute
every group gets the pretrain group's budget. Phases that train nothing (a model loaded from a file) keep
the group's number as their image count. Measurements are cached on disk under the same ingredients as the
source models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.datasets.base import FewShotData
from harness.errors import UsageError, unknown
from harness.flops import flops_per_step
from harness.io import atomic_write_json, read_json
from harness.phases import Pretrainer, SourceData, Strategy
from harness.presets import Preset
from harness.registry import PRETRAINERS
from harness.units import Budget


def parse_budgets(items: list[str], preset: Preset) -> dict[str, int]:
    """The preset's budgets with ``GROUP=N`` overrides applied; one-line errors for bad items."""
    budgets = dict(preset.source_images)
    for item in items:
        group, eq, value = item.partition("=")
        group = group.strip()
        if not eq:
            raise UsageError(f"--budget {item!r} is malformed; write --budget GROUP=N, e.g. --budget meta=50000")
        if group not in budgets:
            raise unknown("budget group in --budget", group, budgets)
        try:
            n = int(value.replace("_", "").replace(",", ""))
        except ValueError:
            raise UsageError(f"--budget {item!r}: {value!r} is not a whole number of images") from None
        if n < 1:
            raise UsageError(f"--budget {item!r}: the budget must be a positive number of images, got {n}")
        budgets[group] = n
    return budgets


class Budgets:
    """``budgets(strategy, shots, scale) -> Budget`` for the planner."""

    def __init__(self, groups: dict[str, int], scales: list[float], match_compute: bool,
                 flops_of: Callable[[Pretrainer], tuple[float, str, int]], backbone: str = "conv4"):
        self.groups, self.scales, self.match_compute, self.flops_of = groups, scales, match_compute, flops_of
        self.backbone = backbone  # the run's backbone: its supervised phase sets the FLOPs of a budget image
        self.image_flops: float | None = None

    def supervised_image_flops(self) -> float:
        """The FLOPs of one supervised-image equivalent: the supervised phase's FLOPs per image (default
        hyperparameters) on the run's backbone (whatever the order of the strategies or a row's own backbone)."""
        if self.image_flops is None:
            supervised = PRETRAINERS.load("supervised")(backbone=self.backbone)
            per_image, _, _ = self.measure(supervised, "the FLOP budgets")
            self.image_flops = per_image
        return self.image_flops

    def flop_budget(self, group: str) -> float:
        """A group's FLOP budget at scale 1: its budget (the pretrain group's with --match-compute) in
        supervised-image equivalents x the FLOPs of one."""
        return self.groups["pretrain" if self.match_compute else group] * self.supervised_image_flops()

    def reference_flops(self) -> float:
        """The FLOP budget of every phase under --match-compute (the pretrain group's)."""
        return self.flop_budget("pretrain")

    def measure(self, phase: Pretrainer, what: str) -> tuple[float, str, int]:
        """``flops_of(phase)``: (FLOPs per image, how, images per training step); a phase that cannot take its one
        counted step is a one-line error."""
        try:
            return self.flops_of(phase)
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 - bad hyperparameters, out of memory...: before anything is trained
            detail = " ".join(str(e).split())[:200]
            raise UsageError(f"counting the FLOPs of one {phase.phase_name} step for {what} (its FLOP budget) failed "
                             f"({type(e).__name__}: {detail}); check its --set values") from None

    def __call__(self, strategy: Strategy, scale: float) -> Budget:
        group = type(strategy.source).budget_group
        if group not in self.groups:
            raise UsageError(f"{strategy.name}: budget group {group!r} is not one of the preset's "
                             f"({', '.join(self.groups)}); give its pretrainer one of those budget_group values")
        if not type(strategy.source).trains:  # a model pretrained elsewhere, loaded: no FLOPs to budget
            return Budget(max(1, round(self.groups[group] * scale)))
        target = self.flop_budget(group) * scale
        per_image, method, step = self.measure(strategy.source, strategy.name)
        if per_image <= 0:
            return Budget(max(1, round(self.groups[group] * scale)))
        return Budget(images_for(target, per_image, step), (per_image, method), target)


def images_for(flops: float, per_image: float, step_images: int) -> int:
    """Images processed for a FLOP budget: ``flops / per_image`` rounded to the nearest whole training step of
    ``step_images`` images (at least one step)."""
    step_images = max(1, int(step_images))
    return max(1, round(flops / per_image / step_images)) * step_images


@dataclass(frozen=True)
class FlopsJob:
    """What a FLOP count's sealed process receives: the phase and the base pool (no novel image or label)."""

    phase: Pretrainer
    images: np.ndarray
    labels: np.ndarray | None
    classes: int
    device: str
    seed: int
    ways: int
    queries: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def flops_job(job: FlopsJob, progress: Callable[[int], None]) -> tuple[float, str, int]:
    """In a sealed process: the phase's (FLOPs per image, method, step images), one training step counted."""
    device = torch.device(job.device)
    labels = None if job.labels is None else torch.from_numpy(job.labels).to(device)
    source = SourceData(torch.from_numpy(job.images).to(device), labels, job.classes, device, job.seed,
                        ways=job.ways, queries=job.queries, mean=job.mean, std=job.std)
    return flops_per_step(job.phase, source)


def cached_flops(data: FewShotData, device: torch.device, ways: int, queries: int, seed: int, cache_dir: Path,
                 key_of: Callable[[Pretrainer], str]) -> Callable[[Pretrainer], tuple[float, str, int]]:
    """``flops_of(phase)``: a phase's FLOPs per image on this data (one training step counted, in a sealed process),
    how they were measured and the images that step processed; cached on disk under ``key_of(phase)``."""
    measured: dict[str, tuple[float, str, int]] = {}

    def flops_of(phase: Pretrainer) -> tuple[float, str, int]:
        key = key_of(phase)
        if key in measured:
            return measured[key]
        path = cache_dir / "flops" / f"{key}.json"
        if path.is_file():
            try:
                entry = read_json(path)
                measured[key] = (float(entry["flops_per_image"]), str(entry["method"]), int(entry["step_images"]))
                return measured[key]
            except (UsageError, KeyError, TypeError, ValueError):
                path.unlink(missing_ok=True)
        from harness.sealed import run_sealed

        job = FlopsJob(phase, data.base.nchw(), data.base.labels if phase.uses_labels else None,
                       len(data.base.classes), str(device), seed, ways, queries, tuple(data.mean), tuple(data.std))
        measured[key] = run_sealed(flops_job, job)  # strategy code: in a sealed process, like its training
        atomic_write_json(path, {"flops_per_image": measured[key][0], "method": measured[key][1],
                                 "step_images": measured[key][2]})
        return measured[key]

    return flops_of
