"""The two halves of a strategy (CloserLookAgain's train x adapt split; easyfsl's support-set API).

- A :class:`Pretrainer` (source phase: supervised, self-supervised, adversarial pretraining or
  meta-training) is a dataclass of hyperparameters whose :meth:`Pretrainer.train` turns the base pool
  into a model. The harness caches that model under a key of the phase's class, fields, code, data,
  seed, budget, device and precision, so rows whose source phases are equal share one entry. Family,
  budget group and whether labels are read belong here.
- An :class:`Adapter` (episode phase: probe, fine-tuning, inner loop, prototypes) is a dataclass of
  hyperparameters whose :meth:`Adapter.adapt` takes the cached model and a :class:`TaskBatch` of
  episodes and returns query logits per episode. It never modifies the model. :class:`EpisodeAdapter`
  is the helper for adapters written one episode at a time.
- A :class:`Strategy` is one leaderboard row: a named (pretrainer, adapter) pair; the rows are a table
  (strategies/__init__.py, harness/suite.py).

Hyperparameters are plain dataclass fields with defaults (scikit-learn style); descriptions and the
settings shown in the leaderboard are generated from the field values.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.episodes import Task, TaskBatch
from harness.errors import UsageError
from harness.registry import BACKBONES, first_line

Progress = Callable[[int], None]


def no_progress(n: int) -> None:
    pass


def counted(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), its FLOPs as ``torch.utils.flop_counter.FlopCounterMode`` counts them): the one FLOP counter of the
    harness (harness/flops.py measures phases with it, :meth:`Strategy.warm_up` episode phases)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, int(counter.get_total_flops())


def fields_of(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in exclude}


@dataclass(frozen=True)
class SourceData:
    """The base pool handed to a source phase. ``labels`` is None for phases that must not see them."""

    images: torch.Tensor  # (N, 3, H, W) uint8 on the run's device
    labels: torch.Tensor | None  # (N,) int64 in 0..num_classes-1
    num_classes: int
    device: torch.device
    seed: int  # the training seed
    progress: Progress = no_progress  # call with the number of images just processed
    #: the run's protocol (harness/protocol.py): ways and queries of the evaluation's episodes (a per-shots phase's
    #: shots are its own field), and the data's channel statistics; given by keyword, never defaulted
    ways: int = field(kw_only=True)
    queries: int = field(kw_only=True)
    mean: tuple[float, ...] = field(kw_only=True)
    std: tuple[float, ...] = field(kw_only=True)
    #: measurements the phase wants in the results (e.g. peak memory of one meta-step), JSON-able values
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        from harness.augment import to_float

        return to_float(images, self.mean, self.std)


@dataclass
class Pretrainer(ABC):
    """Hyperparameters of a source phase; subclasses add their own fields (with defaults)."""

    #: transfer / meta-learning / self-supervised / adversarial / external / no-transfer: declared where the class is
    #: registered (``PRETRAINERS.register_lazy(..., family=...)``); this class attribute is read only for a pretrainer
    #: registered without one
    family: ClassVar[str] = "transfer"
    #: which preset budget applies ("pretrain", "meta", "ssl", "adversarial"); budgets count images processed
    budget_group: ClassVar[str] = "pretrain"
    #: False for self-supervised phases: the harness then passes labels=None
    uses_labels: ClassVar[bool] = True
    #: True for phases trained per shot setting (episodic meta-training with the evaluation's ways and
    #: shots): they have a field ``shots`` (None: each evaluation's; strategies/meta_common.py PerShots), which the
    #: planner sets to each evaluation's shots, so one model per shots value is trained and cached
    per_shots: ClassVar[bool] = False
    #: True when the model depends on the evaluation's ways (an episodic ways-way head)
    uses_ways: ClassVar[bool] = False
    #: False for phases that can only use one backbone, their ``backbone`` field's default (e.g. the Keras Conv-4)
    any_backbone: ClassVar[bool] = True
    #: the ``--precision`` values the phase honours (fp32, bf16 autocast)
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16")
    #: False for phases that train nothing (a model file pretrained elsewhere, loaded): no FLOPs per image
    trains: ClassVar[bool] = True

    backbone: str = "conv4"  # a registered backbone (`python -m harness list backbones`)

    @property
    def phase_name(self) -> str:
        return type(self).__name__

    def check(self) -> None:
        """Reject impossible hyperparameters before any training (raise UsageError). Extend, call super()."""
        BACKBONES.get(self.backbone)  # did-you-mean for an unknown backbone

    def describe(self) -> str:
        """One line for the leaderboard: what the phase does, from its field values. Override."""
        return f"{first_line(type(self)).rstrip('.')} ({self.backbone})"

    def settings(self) -> dict[str, Any]:
        """Source-phase settings a reader must see next to the accuracy (e.g. the PGD attack). Override."""
        return {}

    def flop_twin(self) -> Pretrainer:
        """The PyTorch phase whose FLOPs stand for this one's (itself; another framework's phase names a
        PyTorch phase of the same architecture and schedule). Override."""
        return self

    def runs_on(self, device: torch.device) -> str:
        """The device the phase really computes on, named (a framework may differ from torch's). Override."""
        from harness.measure import device_name

        return device_name(device)

    def versions(self) -> dict[str, str]:
        """Versions of the frameworks besides torch that the phase trains or loads with (TensorFlow,
        torchvision), for its cache key. Override."""
        return {}

    def apply_run(self, config: Any) -> Pretrainer:
        """This phase with the run-wide settings it honours applied (``config``: the run's
        :class:`harness.runconfig.RunConfig`, e.g. ``--trust-model-code``); the harness calls it after the
        overrides, before :meth:`check`. Override: return a copy (``dataclasses.replace``)."""
        return self

    @abstractmethod
    def train(self, data: SourceData, budget_images: int) -> nn.Module:
        """Train on the base pool for ``budget_images`` images processed; return the model."""

    def episode_images(self, shots: int, queries: int) -> int:
        """Images of each class an episodic source phase draws per base episode (0: not episodic); the
        harness checks the base pool has that many before training. Override."""
        return 0

    def build_backbone(self, num_classes: int, data: SourceData, **kwargs: Any) -> nn.Module:
        from harness.backbone import build_backbone

        return build_backbone(self.backbone, num_classes=num_classes, image_size=data.image_size, **kwargs)

    def spec(self, model: nn.Module) -> dict[str, Any]:
        """What :meth:`rebuild` needs to make an empty model of the trained one's architecture (stored
        with the cache entry, so loading never depends on the current run's ways or hyperparameters)."""
        spec = getattr(model, "spec", None)
        if spec is None:
            raise TypeError(f"{self.phase_name}.train returned a model without .spec; build it with "
                            f"build_backbone() or override spec() and rebuild()")
        return dict(spec)

    def rebuild(self, spec: dict[str, Any]) -> nn.Module:
        from harness.backbone import build_backbone

        return build_backbone(**spec)

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Adapter(ABC):
    """Hyperparameters of an episode phase; subclasses add their own fields (with defaults)."""

    #: False for adapters computing in another framework without a PyTorch twin: their FLOPs are not counted
    counts_flops: ClassVar[bool] = True
    #: what the adapter's outputs are: the report scores their softmax as given (NLL, Brier, ECE; no temperature)
    scores_as: ClassVar[str] = "logits"

    def check(self, source: Pretrainer) -> None:
        """Reject impossible hyperparameters (raise UsageError). Override."""

    def describe(self, source: Pretrainer) -> str:
        """One line for the leaderboard, from the field values. Override."""
        return first_line(type(self)).rstrip(".")

    def settings(self, source: Pretrainer) -> dict[str, Any]:
        """Protocol settings a reader must see next to the accuracy (BN mode, inner steps...). Override."""
        return {}

    def runs_on(self, device: torch.device) -> str:
        """The device the adaptation really computes on, named. Override."""
        from harness.measure import device_name

        return device_name(device)

    def episode_flops(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer) -> int | None:
        """The FLOPs of adapting ``model`` to ``tasks`` where FlopCounterMode cannot count them, else None (the
        default: the harness counts this adapter's PyTorch operations while it runs). FlopCounterMode sees
        PyTorch only: an adapter computing in another framework returns, e.g., the counted FLOPs of a PyTorch
        adapter of the same algorithm on a PyTorch copy of the model, or its own graph's. Override."""
        return None

    def frozen_features(self, model: nn.Module, images: torch.Tensor, source: Pretrainer) -> torch.Tensor | None:
        """Per-image features that :meth:`adapt` starts from and that no episode changes (e.g. the frozen
        layers' output in eval mode), one row per image of ``images``, each a function of its image alone; None
        (the default) when the adapter starts from the pixels. The harness computes them once for every image of
        a unit, in a process that sees those images and the model and nothing else (no label, no episode), and
        hands each sealed batch its rows as ``tasks.features``; the independence check's episodes compute their
        own from their own images, so features that depend on other images fail the row. Override."""
        return None

    def features(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer) -> torch.Tensor | None:
        """``tasks.features`` when the harness handed them over, else :meth:`frozen_features` of the batch's
        images (adapt() calls this; a direct caller need not compute anything first)."""
        if tasks.features is not None:
            return tasks.features
        return self.frozen_features(model, tasks.images, source)

    @abstractmethod
    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer,
              progress: Progress = no_progress) -> list[torch.Tensor | dict[str, torch.Tensor]]:
        """Adapt (copies of) ``model`` to each episode's support set; return one output per episode:
        (queries, ways) logits, or a dict with "logits" and further named logits (e.g. "robust": on
        attacked queries). Each episode's output must not depend on the other episodes of the batch;
        call ``progress(n)`` after n episodes. Never modify ``model``."""

    def params(self) -> dict[str, Any]:
        return fields_of(self)


@dataclass
class EpisodeAdapter(Adapter):
    """An adapter written one episode at a time: implement :meth:`adapt_episode`."""

    @abstractmethod
    def adapt_episode(self, model: nn.Module, task: Task, source: Pretrainer) -> torch.Tensor:
        """(queries, ways) logits for one episode."""

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer,
              progress: Progress = no_progress) -> list[torch.Tensor | dict[str, torch.Tensor]]:
        outputs = []
        for task in tasks:
            torch.manual_seed(task.seed)  # an episode's randomness depends on its own seed only
            outputs.append(self.adapt_episode(model, task, source))
            progress(1)
        return outputs


def family_of(cls: type[Pretrainer]) -> str:
    """A pretrainer class's family: from its registry entry, else its ``family`` attribute."""
    from harness.registry import PRETRAINERS

    target = f"{cls.__module__}:{cls.__qualname__}"
    for entry in PRETRAINERS.entries().values():
        if entry.family and (entry.target is cls or entry.target == target):
            return entry.family
    return cls.family


@dataclass
class Strategy:
    """One leaderboard row: a named pretrainer x adapter pair (after the run's overrides)."""

    name: str
    source: Pretrainer
    adapter: Adapter
    family: str = ""

    def __post_init__(self) -> None:
        self.family = self.family or family_of(type(self.source))

    def check(self, precision: str = "fp32") -> None:
        self.source.check()
        only = next(f.default for f in dataclasses.fields(self.source) if f.name == "backbone")  # its one backbone
        if not type(self.source).any_backbone and self.source.backbone != only:
            raise Unsupported(f"{self.name} runs on the {only} backbone only (got {self.source.backbone!r}); "
                              f"drop --backbone for it or pass --set {self.name}.source.backbone={only}")
        if precision not in type(self.source).precisions:
            raise Unsupported(f"{self.name} trains in {' or '.join(type(self.source).precisions)} only; drop "
                              f"--precision {precision} for it")
        self.adapter.check(self.source)

    def params(self) -> dict[str, Any]:
        return self.adapter.params()

    def settings(self) -> dict[str, Any]:
        augment = {"source augment": self.source.augment} if hasattr(self.source, "augment") else {}
        return {**self.source.settings(), **augment, **self.adapter.settings(self.source)}

    def episode_phase(self) -> str:
        return self.adapter.describe(self.source)

    def twin_of(self) -> str | None:
        """The PyTorch row this row runs the same algorithm as, when its adapter declares one (``twin_of``, e.g. the
        Keras rows of strategies/keras_transfer.py), else None: the record's ``twin_of``."""
        return getattr(self.adapter, "twin_of", None)

    def check_of(self) -> str | None:
        """The Keras row whose pretraining this framework-check row shares, when its adapter declares one
        (``check_of``, strategies/keras_check.py), else None: the record's ``check_of``."""
        return getattr(self.adapter, "check_of", None)

    def run_episodes(self, model: nn.Module, tasks: TaskBatch,
                     progress: Progress = no_progress) -> list[torch.Tensor | dict[str, torch.Tensor]]:
        return self.adapter.adapt(model, tasks, self.source, progress)

    def warm_up(self, model: nn.Module, tasks: TaskBatch) -> tuple[list, int | None]:
        """Run ``tasks`` untimed (start-up costs, lazy initialisation); return their outputs and episode-phase
        FLOPs: the adapter's :meth:`Adapter.episode_flops` when it gives them, else counted with FlopCounterMode
        (:func:`counted`) while it runs; None for adapters whose work the counter cannot see."""
        flops = self.adapter.episode_flops(model, tasks, self.source)
        if flops is None and type(self.adapter).counts_flops:
            return counted(lambda: self.run_episodes(model, tasks))
        return self.run_episodes(model, tasks), flops


class Unsupported(UsageError):
    """A valid strategy that cannot run with this run's settings (e.g. another backbone): an error when the
    strategy is named, a skipped row under --all."""
