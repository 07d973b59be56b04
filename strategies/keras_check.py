"""The framework-isolating check of the Keras rows: the PyTorch episode phases (the linear probe,
strategies/probe.py; partial fine-tuning, strategies/finetune.py) on the PyTorch copy of the Keras-pretrained
Conv-4 (``strategies.keras_backbone.to_torch``: the same weights, kernels transposed).

A Keras row and its PyTorch twin differ in two things, the pretraining's framework and the episode phase's.
These rows share the Keras row's pretraining and run the twin's episode phase, so on the same episodes

    Keras row - PyTorch twin = (Keras row - check row) + (check row - PyTorch twin)
                               episode-phase framework   pretraining framework

and the report splits each Keras row's gap that way (harness/report/tables.py ``framework_tables``). The
first part is about 0 when the Keras episode phase computes what the PyTorch one does (tested on synthetic
data in tests/test_strategies/test_keras_twins.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness.episodes import TaskBatch
from harness.phases import Pretrainer, Progress, no_progress
from strategies.finetune import PartialFinetune
from strategies.keras_backbone import KerasWeights, to_torch
from strategies.probe import LinearProbe

CHECK = "episode phase of"  # the settings entry naming the Keras row whose pretraining a check row shares


def torch_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """The PyTorch copy of the Keras-pretrained model (a model that already is one: itself)."""
    return to_torch(model).to(device).eval() if isinstance(model, KerasWeights) else model


class OnTorchCopy:
    """Runs the PyTorch adapter on the PyTorch copy of the Keras-pretrained model; ``keras_row`` names the Keras
    row it checks."""

    keras_row: ClassVar[str] = ""

    @property
    def check_of(self) -> str:
        """The Keras row this row checks: the record's ``check_of`` (harness/phases.py ``Strategy``)."""
        return self.keras_row

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        return super().adapt(torch_copy(model, tasks.images.device), tasks, source, progress)  # type: ignore[misc]

    def frozen_features(self, model: nn.Module, images: torch.Tensor, source: Pretrainer) -> torch.Tensor | None:
        return super().frozen_features(torch_copy(model, images.device), images, source)  # type: ignore[misc]

    def settings(self, source: Pretrainer) -> dict:
        return {**super().settings(source), CHECK: self.keras_row}  # type: ignore[misc]


@dataclass
class TorchProbeOnKeras(OnTorchCopy, LinearProbe):
    """The PyTorch linear probe on the PyTorch copy of the Keras-pretrained Conv-4."""

    keras_row = "keras-frozen-features"

    def describe(self, source: Pretrainer) -> str:
        return f"PyTorch {super().describe(source)}, on the PyTorch copy of the Keras model"


@dataclass
class TorchFinetuneOnKeras(OnTorchCopy, PartialFinetune):
    """PyTorch partial fine-tuning (LP-FT) on the PyTorch copy of the Keras-pretrained Conv-4."""

    keras_row = "keras-partial-finetune"

    def describe(self, source: Pretrainer) -> str:
        return f"PyTorch {super().describe(source)}, on the PyTorch copy of the Keras model"
