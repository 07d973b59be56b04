"""Bring your own pretrained model: what the ``keras-pretrained`` and ``torch-pretrained`` rows share (no
TensorFlow here).

Their source phase trains nothing: it checks and loads a model file the user pretrained elsewhere (0 images
processed), so the rows answer "how does my pretrained model do against these strategies on the same
episodes?". Its pretraining data may hold the novel classes, so the rows are family ``external``: the report
lists them in their own section, never ranked against strategies that saw only the base classes.

A model file is code as much as data (a Keras Lambda layer is arbitrary Python; a pickled torch object runs
code when loaded): files are loaded in Keras's safe mode and with ``torch.load(weights_only=True)``, and a
file that needs code to load is refused unless the run passes ``--trust-model-code`` (or the row's
``source.trust_model_code``), which lifts only that refusal. :meth:`ExternalModel.check` resolves the path
and fills in the file's sha256, so the source cache key and the records cover the file's content; a
``sha256`` given by the user pins it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import UsageError
from harness.phases import Pretrainer, Unsupported

#: the input conventions a model may expect, from the harness's dataset-normalised images
Inputs = Literal["dataset", "unit", "pixels", "caffe", "imagenet", "tf"]
INPUTS = {"dataset": "the harness's normalisation (dataset mean/std)", "unit": "RGB in [0, 1]",
          "pixels": "RGB in [0, 255]", "caffe": "BGR in [0, 255] minus the ImageNet means (Keras VGG16/ResNet50)",
          "imagenet": "RGB in [0, 1] normalised by the ImageNet mean/std (torchvision)", "tf": "RGB in [-1, 1]"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_inputs(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], inputs: str,
                 size: int) -> torch.Tensor:
    """Dataset-normalised NCHW images -> what the model expects (``inputs``), resized to ``size`` (bilinear)
    when it differs from theirs."""
    x = images.float()
    if inputs != "dataset":
        x = x * x.new_tensor(std)[:, None, None] + x.new_tensor(mean)[:, None, None]  # RGB in [0, 1]
        if inputs == "pixels":
            x = x * 255
        elif inputs == "caffe":
            x = x.flip(1) * 255 - x.new_tensor(CAFFE_MEAN)[:, None, None]
        elif inputs == "imagenet":
            x = (x - x.new_tensor(IMAGENET_MEAN)[:, None, None]) / x.new_tensor(IMAGENET_STD)[:, None, None]
        elif inputs == "tf":
            x = x * 2 - 1
    if size and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def glorot(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A new head's weights (ways, dim), Glorot uniform (Keras Dense's default) from the episode's seed alone:
    both frameworks' rows draw the same numbers."""
    limit = np.sqrt(6 / sum(shape))
    return np.random.default_rng(seed).uniform(-limit, limit, shape).astype(np.float32)


def refusal(path: Path, what: str, row: str) -> UsageError:
    return UsageError(f"model file {path} needs code to load ({what}), which could run anything; refused. If you "
                      f"trust it, pass --trust-model-code (it lifts only this refusal) or "
                      f"--set {row}.source.trust_model_code=true")


def index_of(name: str, names: list[str], what: str, path: Path) -> int:
    """A layer given by name or index (negative: from the end) -> its index in ``names``."""
    from harness.errors import did_you_mean

    try:
        i = int(name)
    except ValueError:
        if name not in names:
            raise UsageError(f"model file {path} has no {what} {name!r}{did_you_mean(name, names)}; "
                             f"{what}s: {', '.join(names)}") from None
        return names.index(name)
    if not -len(names) <= i < len(names):
        raise UsageError(f"model file {path}: {what} index {i} is out of range ({len(names)} {what}s)")
    return i % len(names)


@dataclass
class ExternalModel(Pretrainer):
    """A model pretrained elsewhere, loaded from a file (nothing is trained here)."""

    any_backbone = False  # the file brings its own network
    precisions = ("fp32",)
    trains = False  # loads the file: 0 images processed, no FLOPs
    rows: ClassVar[tuple[str, str]] = ("", "")  # the probe and fine-tuning rows (for messages)
    suffixes: ClassVar[tuple[str, ...]] = ()

    backbone: str = "external"  # the file's network; --backbone does not apply
    model: str = ""  # the model file (required): --set ROW.source.model=PATH
    layer: str = ""  # where features are taken: a layer name or index ("": the model's output)
    pool: Literal["avg", "flatten"] = "avg"  # spatial feature maps -> vectors
    inputs: Inputs = "dataset"  # what the model expects (strategies/external.py INPUTS)
    image_size: int = 0  # resize the images to this side (0: the model's fixed input size, else keep theirs)
    trust_model_code: bool = False  # load files that need code to load (see the module docstring)
    sha256: str = ""  # the file's content hash: filled in when the run starts; set it to pin the file

    def apply_run(self, config: Any) -> ExternalModel:
        trust = self.trust_model_code or bool(getattr(config, "trust_model_code", False))
        return dataclasses.replace(self, trust_model_code=trust)

    def check(self) -> None:
        probe, finetune = self.rows
        if self.backbone != "external":
            raise Unsupported(f"{probe} and {finetune} bring their own network (the model file); --backbone does "
                              f"not apply to them: drop --backbone for them")
        if not self.model:
            raise Unsupported(f"needs your model file ({' or '.join(self.suffixes)}): pass --set "
                              f"{probe}.source.model=PATH (and --set {finetune}.source.model=PATH for {finetune})")
        if self.inputs not in INPUTS:
            raise UsageError(f"{probe}: inputs={self.inputs!r} is not one of {', '.join(INPUTS)}")
        if self.image_size < 0:
            raise UsageError(f"{probe}: image_size must be 0 (automatic) or a positive side, got {self.image_size}")
        path = Path(self.model).expanduser()
        if not path.exists():
            raise UsageError(f"model file {path} does not exist; pass --set {probe}.source.model=PATH with an "
                             f"existing {' or '.join(self.suffixes)} file")
        if not path.is_file():
            raise UsageError(f"model file {path} is not a file; pass a {' or '.join(self.suffixes)} file")
        try:
            sha = file_sha256(path)
        except OSError as e:
            raise UsageError(f"model file {path} cannot be read ({e.strerror}); check its permissions") from None
        if self.sha256 and self.sha256 != sha:
            raise UsageError(f"model file {path} has sha256 {sha}, not the {self.sha256} given in source.sha256; "
                             f"pass the right file, or drop source.sha256")
        self.model, self.sha256 = str(path.resolve()), sha
        self.validate(path)

    def validate(self, path: Path) -> None:
        """Load the file (safely) and run it once: exit 2 with one line when it is incompatible. Override."""

    def file_settings(self) -> dict[str, Any]:
        return {"external pretraining": f"{Path(self.model).name} (sha256 {self.sha256[:12]})" if self.model
                else "no model file", "inputs": self.inputs}


@dataclass
class TopLayersSettings:
    """The first recipe's hyperparameters (layers[unfreeze_from:] trainable + a new head, Adam), shared by the
    Keras and the PyTorch external fine-tuning rows; each sets its framework's words."""

    unfreeze_from: int = -4  # layers[k:] trainable (negative: from the end)
    steps: int = 50
    lr: float = 1e-3  # Adam, head and unfrozen layers
    weight_decay: float = 0.0

    layers_word: ClassVar[str] = "layers"
    head_word: ClassVar[str] = "head"
    loss_word: ClassVar[str] = "cross-entropy"
    bn_word: ClassVar[str] = "inference (running statistics)"

    def describe(self, source: Pretrainer) -> str:
        return (f"{self.layers_word}[{self.unfreeze_from}:] unfrozen + new {self.head_word} (Glorot), Adam "
                f"{self.steps} steps (lr {self.lr:g}), {self.loss_word}")

    def settings(self, source: Pretrainer) -> dict:
        return {"unfreeze from": self.unfreeze_from, "steps": self.steps, "BN": self.bn_word}
