"""``torch-pretrained`` and ``torch-pretrained-finetune``: a torchvision architecture (``source.arch``) with
a state dict the user saved elsewhere (e.g. ``torchvision.models.resnet18(weights="DEFAULT").state_dict()``
saved with ``torch.save`` to ``resnet18.pt``): the PyTorch twin of strategies/keras_pretrained.py
(strategies/external.py says what the rows share).

The network is the architecture's top-level layers (``named_children``) in order, its final Linear layer
(the classifier) removed, cut after ``layer`` (a top-level name or index; "": all): spatial maps are pooled
(``pool``) into features. Without a cut the sequence is checked against the architecture's own forward.
The state dict is loaded with ``torch.load(weights_only=True)``; its classifier entries are ignored.

- ``torch-pretrained``: the harness's linear probe (strategies/probe.py) on the frozen features: the
  ``frozen-features`` episode phase on the user's network.
- ``torch-pretrained-finetune``: the first recipe, as ``keras-pretrained-finetune``: top-level
  ``layers[unfreeze_from:]`` trainable, a new linear head (Glorot uniform from the episode's seed: the
  Keras twin's numbers), Adam (lr 1e-3) on cross-entropy for ``steps`` full-batch steps, BatchNorm on its
  running statistics; one episode at a time.
"""

from __future__ import annotations

import functools
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from harness.episodes import TaskBatch
from harness.errors import UsageError, unknown
from harness.phases import Adapter, Pretrainer, Progress, SourceData, no_progress
from strategies.external import ExternalModel, Inputs, TopLayersSettings, glorot, index_of, model_inputs, refusal
from strategies.features import embed


def architectures() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def build_net(arch: str) -> tuple[nn.Module, str]:
    """The architecture, randomly initialised, with its last Linear layer replaced by an identity; and that
    layer's name."""
    import torchvision

    net = torchvision.models.get_model(arch, weights=None)
    head = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    parent, _, leaf = head.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, nn.Identity())
    return net, head


@functools.lru_cache(maxsize=4)
def layer_names(arch: str) -> tuple[str, ...]:
    return tuple(name for name, _ in build_net(arch)[0].named_children())


def _starts_with_linear(module: nn.Module) -> bool:
    leaves = [m for m in module.modules() if not list(m.children())]
    return bool(leaves) and isinstance(leaves[0], nn.Linear)


class TorchvisionFeatures(nn.Module):
    """The user's network as a feature extractor: ``features(x, start, stop)`` runs top-level layers start..stop
    (preprocessing the dataset-normalised images first when start is 0; pooling after the last one)."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = dict(spec)
        self.net, self.head_name = build_net(spec["arch"])
        self.names = list(layer_names(spec["arch"]))[:spec["cut"] + 1]
        self.feature_dim = int(spec.get("feature_dim", 0))

    def features(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        spec, stop = self.spec, len(self.names) if stop is None else stop
        if start == 0:
            x = model_inputs(x, tuple(spec["mean"]), tuple(spec["std"]), spec["inputs"], spec["image_size"])
        for name in self.names[start:stop]:
            child = getattr(self.net, name)
            if x.dim() > 2 and _starts_with_linear(child):
                x = x.flatten(1)
            x = child(x)
        if stop == len(self.names) and x.dim() > 2:
            x = x.mean(tuple(range(2, x.dim()))) if spec["pool"] == "avg" else x.flatten(1)
        return x

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return self.features(x, start)


def load_state(path: Path, trust: bool, row: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, loaded with weights_only=True unless ``trust``; one-line errors."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if not needs:
            raise UsageError(f"model file {path} is not a PyTorch file saved with torch.save (the weights-only "
                             f"loader cannot read it)") from None
        if not trust:
            raise refusal(path, f"pickled Python objects such as {needs.group(1)}, not only tensors", row) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # any other failure of a user's file is one line
        raise UsageError(f"model file {path} cannot be read as a PyTorch file ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("state_dict", "model"):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"model file {path} holds a {type(obj).__name__}, not a state dict (parameter name -> "
                         f"tensor); save model.state_dict() with torch.save")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


@dataclass
class TorchPretrained(ExternalModel):
    """A torchvision architecture with a state dict pretrained elsewhere (nothing trained)."""

    rows = ("torch-pretrained", "torch-pretrained-finetune")
    suffixes = (".pt", ".pth")

    arch: str = "resnet18"  # a torchvision classification architecture (torchvision.models.list_models())
    inputs: Inputs = "imagenet"  # torchvision's ImageNet normalisation

    def versions(self) -> dict[str, str]:
        import torchvision

        return {"torchvision": torchvision.__version__}

    def describe(self) -> str:
        at = f"cut after layer {self.layer!r}" if self.layer else "without its classifier"
        return f"external: torchvision {self.arch} from {Path(self.model).name or '(none)'}, {at}, no training"

    def settings(self) -> dict:
        return self.file_settings()

    def loaded(self, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> TorchvisionFeatures:
        path, names = Path(self.model), list(layer_names(self.arch))
        cut = index_of(self.layer, names, "top-level layer", path) if self.layer else len(names) - 1
        spec = {"arch": self.arch, "cut": cut, "inputs": self.inputs, "image_size": self.image_size or image_size,
                "pool": self.pool, "mean": list(mean), "std": list(std), "sha256": self.sha256}
        model = TorchvisionFeatures(spec)
        state = load_state(path, self.trust_model_code, self.rows[0])
        state = {k: v for k, v in state.items() if not k.startswith(model.head_name + ".")}
        try:
            missing, unexpected = model.net.load_state_dict(state, strict=False)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:300]
            raise UsageError(f"model file {path} does not fit torchvision {self.arch} ({detail}); pass the "
                             f"architecture it was saved from: source.arch") from None
        if missing or unexpected:
            raise UsageError(f"model file {path} does not fit torchvision {self.arch}: {len(missing)} missing keys "
                             f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])}); "
                             f"pass the architecture it was saved from: source.arch")
        return model.eval()

    def validate(self, path: Path) -> None:
        if self.arch not in architectures():
            raise unknown("torchvision architecture (source.arch)", self.arch, architectures())
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # any statistics: the check compares the network with itself
        model = self.loaded(32, mean, std)
        x = torch.randn(2, 3, 32, 32)
        try:
            with torch.no_grad():
                feats = model.features(x)
                whole = None if self.layer else model.net(model_inputs(x, mean, std, self.inputs,
                                                                       model.spec["image_size"]))
        except Exception as e:  # any failure on the user's network is one line
            raise UsageError(f"model file {path}: torchvision {self.arch} does not run on the images "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); set source.image_size") from None
        if whole is not None and (whole.shape != feats.shape or not torch.allclose(whole, feats, atol=1e-4)):
            raise UsageError(f"torchvision {self.arch}'s forward is not the sequence of its top-level layers; cut it "
                             f"with source.layer=NAME (top-level layers: {', '.join(model.names)})")

    def train(self, data: SourceData, budget_images: int) -> TorchvisionFeatures:
        model = self.loaded(data.image_size, data.mean, data.std)
        with torch.no_grad():
            model.spec["feature_dim"] = model.feature_dim = int(model.features(
                torch.zeros(1, 3, data.image_size, data.image_size)).shape[1])
        return model.to(data.device)

    def spec(self, model: nn.Module) -> dict:
        return dict(model.spec)

    def rebuild(self, spec: dict) -> TorchvisionFeatures:
        return TorchvisionFeatures(spec)


@dataclass
class TorchPretrainedFinetune(TopLayersSettings, Adapter):
    """The first recipe in PyTorch: top-level layers[unfreeze_from:] unfrozen + a new linear head, Adam."""

    unfreeze_from: int = -3  # top-level layers[k:] trainable (negative: from the end); -3: ResNet's layer4

    layers_word = "top-level layers"
    head_word = "linear head"

    def start(self, names: list[str], where: str) -> int:
        k = self.unfreeze_from + len(names) if self.unfreeze_from < 0 else self.unfreeze_from
        if not 0 <= k <= len(names):
            raise UsageError(f"unfreeze_from={self.unfreeze_from} is outside the top-level layers 0..{len(names)} of "
                             f"{where} ({', '.join(names)})")
        return k

    def check(self, source: Pretrainer) -> None:
        if isinstance(source, TorchPretrained) and source.model and source.arch in architectures():
            self.start(list(layer_names(source.arch)), f"torchvision {source.arch}")

    def frozen_features(self, model: nn.Module, images: torch.Tensor, source: Pretrainer) -> torch.Tensor | None:
        """The frozen top-level layers' output (eval mode); None when every layer is trained."""
        k = self.start(model.names, f"torchvision {model.spec['arch']}")
        return embed(model, images, stop=k) if k else None

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        k = self.start(model.names, f"torchvision {model.spec['arch']}")
        inputs = tasks.images if not k else self.features(model, tasks, source)
        trainable = {f"net.{n}" for n in model.names[k:]}
        start = {n: p.detach() for n, p in model.named_parameters() if ".".join(n.split(".")[:2]) in trainable}
        was_training = model.training
        model.eval()  # BatchNorm on its running statistics

        def logits_of(p: dict, x: torch.Tensor) -> torch.Tensor:
            body = {n: v for n, v in p.items() if not n.startswith("head.")}
            return functional_call(model, body, (x,), {"start": k}) @ p["head.weight"].T + p["head.bias"]

        outputs = []
        try:
            for i, seed in enumerate(tasks.seeds):
                support, query = inputs[tasks.support[i]], inputs[tasks.query[i]]
                head = torch.from_numpy(glorot((tasks.ways, model.feature_dim), seed)).to(inputs.device)
                params = {**{n: v.clone() for n, v in start.items()}, "head.weight": head,
                          "head.bias": torch.zeros(tasks.ways, device=inputs.device)}
                params = {n: v.requires_grad_() for n, v in params.items()}
                optimizer = torch.optim.Adam(params.values(), lr=self.lr, weight_decay=self.weight_decay,
                                             fused=True)
                with torch.enable_grad():
                    for _ in range(self.steps):
                        optimizer.zero_grad(set_to_none=False)  # gradients kept: no new memory per step
                        F.cross_entropy(logits_of(params, support), tasks.support_labels[i]).backward()
                        optimizer.step()
                with torch.no_grad():
                    outputs.append(logits_of(params, query))
                progress(1)
        finally:
            model.train(was_training)
        return outputs
