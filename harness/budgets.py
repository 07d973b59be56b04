"""Source-phase budgets: the preset's, ``--budget GROUP=N`` overrides, ``--budget-scale`` multipliers, and
``--match-compute`` (every source phase gets the FLOPs of the supervised phase's budget).

Budgets are in images processed (forward+backward passes of the backbone). With matched compute the FLOP
budget is ``preset pretrain budget x FLOPs per image of the supervised phase`` (default hyperparameters,
the run's backbone), and each phase converts it to its own images from its measured FLOPs per image
(harness/flops.py). Measurements are cached on disk under the same ingredients as the source models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.datasets.base import FewShotData
from harness.errors import UsageError, unknown
from harness.flops import flops_per_image
from harness.io import atomic_write_json, read_json
from harness.phases import Pretrainer, SourceData, Strategy
from harness.presets import Preset
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

    def __init__(self, groups: dict[str, int], scales: list[float], match_compute: bool, probe: Callable[..., Any],
                 backbone: str = "conv4"):
        self.groups, self.scales, self.match_compute, self.probe = groups, scales, match_compute, probe
        self.backbone = backbone  # the run's backbone: its supervised phase sets the matched FLOP budget
        self.matched_flops: float | None = None

    def reference_flops(self) -> float:
        """The FLOP budget of every phase under --match-compute: the supervised phase's budget in FLOPs, on the
        run's backbone (whatever the order of the strategies or a row's own backbone)."""
        if self.matched_flops is None:
            from strategies.supervised import SupervisedPretraining

            per_image, _ = self.measure(SupervisedPretraining(backbone=self.backbone), None, "the matched budget")
            self.matched_flops = self.groups["pretrain"] * per_image
        return self.matched_flops

    def measure(self, phase: Pretrainer, shots: int | None, what: str) -> tuple[float, str]:
        """The probe's FLOPs per image; a phase that cannot take its one counted step is a one-line error."""
        try:
            return self.probe(phase, shots)
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 - bad hyperparameters, out of memory...: before anything is trained
            detail = " ".join(str(e).split())[:200]
            raise UsageError(f"--match-compute: counting the FLOPs of one {phase.phase_name} step for {what} failed "
                             f"({type(e).__name__}: {detail}); check its --set values") from None

    def __call__(self, strategy: Strategy, shots: int | None, scale: float) -> Budget:
        group = type(strategy.source).budget_group
        if group not in self.groups:
            raise UsageError(f"{strategy.name}: budget group {group!r} is not one of the preset's "
                             f"({', '.join(self.groups)}); give its pretrainer one of those budget_group values")
        if not self.match_compute:
            return Budget(max(1, round(self.groups[group] * scale)))
        target = self.reference_flops() * scale
        per_image, method = self.measure(strategy.source, shots, strategy.name)
        if per_image <= 0:  # a phase that trains nothing (a model pretrained elsewhere, loaded): nothing to match
            return Budget(max(1, round(self.groups[group] * scale)))
        return Budget(max(1, math.ceil(target / per_image)), (per_image, method), target)


def flop_probe(data: FewShotData, device: torch.device, ways: int, queries: int, seed: int, cache_dir: Path,
               key_of: Callable[[Pretrainer, int | None], str]) -> Callable[[Pretrainer, int | None], tuple]:
    """A cached measurement of a phase's FLOPs per image on this data (one training step counted)."""
    measured: dict[str, tuple[float, str]] = {}

    def probe(phase: Pretrainer, shots: int | None) -> tuple[float, str]:
        key = key_of(phase, shots)
        if key in measured:
            return measured[key]
        path = cache_dir / "flops" / f"{key}.json"
        if path.is_file():
            try:
                entry = read_json(path)
                measured[key] = (float(entry["flops_per_image"]), str(entry["method"]))
                return measured[key]
            except (UsageError, KeyError, TypeError, ValueError):
                path.unlink(missing_ok=True)
        labels = torch.from_numpy(data.base.labels).to(device) if phase.uses_labels else None
        source = SourceData(torch.from_numpy(data.base.nchw()).to(device), labels, len(data.base.classes), device,
                            seed, ways=ways, shots=shots, queries=queries, mean=data.mean, std=data.std)
        measured[key] = flops_per_image(phase, source)
        atomic_write_json(path, {"flops_per_image": measured[key][0], "method": measured[key][1]})
        return measured[key]

    return probe
