"""``keras-pretrained`` and ``keras-pretrained-finetune``: a Keras model the user pretrained elsewhere
(``.keras`` or ``.h5``, e.g. ``keras.applications.VGG16(weights="imagenet", include_top=False)`` saved
to ``vgg16.h5``), on the harness's episodes (strategies/external.py says what the rows share).

The source phase loads the file in Keras's safe mode, cuts it at ``layer`` (name or index; "": its
output), and checks it runs on the images (resized when its input is larger). Nothing is trained and
nothing is cached but the file's identity: the episode phases load the file again (checking its sha256).

- ``keras-pretrained``: frozen features (spatial maps pooled), L2-normalised, and the harness's linear
  probe, solved in TensorFlow (strategies/keras_logistic.py: the optimum of ``frozen-features``'s probe).
- ``keras-pretrained-finetune``: the usual first recipe: ``layers[unfreeze_from:]`` trainable, the
  earlier ones frozen, and a new Dense head (Glorot uniform from the episode's seed) trained with Adam
  (lr 1e-3) on sparse categorical cross-entropy for ``steps`` full-batch steps. Layers run in inference
  mode (BatchNorm on its moving statistics, as the Keras transfer-learning guide advises), so queries never
  influence each other.
"""

# ruff: noqa: I001 - strategies.keras_backbone is imported first: it prepares TensorFlow's import and GPUs
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import strategies.keras_backbone  # noqa: F401
import keras
import numpy as np
import torch
from torch import nn

from harness.episodes import TaskBatch
from harness.errors import UsageError
from harness.phases import Adapter, Pretrainer, Progress, SourceData, no_progress
from strategies.external import ExternalModel, TopLayersSettings, Inputs, glorot, index_of, model_inputs, refusal
from strategies.keras_backbone import configure_threads, tensorflow_device
from strategies.keras_transfer import EpisodeTrainer, logits_out, probe_episodes, run_model
from strategies.probe import ProbeSettings

_LOADED: dict[tuple, keras.Model] = {}  # the last file loaded, by (path, sha256, trusted)


def load_keras(path: Path, sha256: str, trust: bool, row: str) -> keras.Model:
    """The model in ``path``, loaded in safe mode unless ``trust``; one-line errors for bad files."""
    key = (str(path), sha256, trust)
    if key in _LOADED:
        return _LOADED[key]
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise UsageError(f"model file {path} is not a Keras model file; save the model with model.save() as "
                         f"PATH.keras or PATH.h5")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=not trust)
    except Exception as e:  # any failure of a user's file is one line
        text = " ".join(str(e).split())
        if "safe_mode" in text or "arbitrary code" in text:
            raise refusal(path, "a Lambda layer: arbitrary Python", row) from None
        raise UsageError(f"model file {path} cannot be loaded as a Keras model ({type(e).__name__}: "
                         f"{text[:300]})") from None
    if not isinstance(model, keras.Model):
        raise UsageError(f"model file {path} holds a {type(model).__name__}, not a Keras model")
    _LOADED.clear()
    _LOADED[key] = model
    return model


def features_model(model: keras.Model, layer: str, path: Path) -> tuple[keras.Model, int]:
    """The model cut at ``layer`` (its output when ""), and the index of that layer in ``model.layers``."""
    names = [lay.name for lay in model.layers]
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or model.inputs[0].shape[-1] != 3:
        shapes = ", ".join(str(tuple(i.shape)) for i in model.inputs)
        raise UsageError(f"model file {path} takes inputs of shape {shapes}; the harness feeds RGB images of shape "
                         f"(N, height, width, 3)")
    if layer:
        index = index_of(layer, names, "layer", path)
        output = model.layers[index].output
    else:
        if len(model.outputs) != 1:
            raise UsageError(f"model file {path} has {len(model.outputs)} outputs; pick one with "
                             f"source.layer=NAME (layers: {', '.join(names)})")
        output = model.outputs[0]
        index = next((i for i in range(len(names) - 1, -1, -1) if model.layers[i].output is output), len(names) - 1)
    if len(output.shape) not in (2, 4):
        raise UsageError(f"model file {path}: the output of {names[index]!r} has shape {tuple(output.shape)}; "
                         f"features must be vectors (N, d) or maps (N, h, w, c): pick another source.layer")
    return keras.Model(model.inputs[0], output), index


def pooled(x, pool: str):
    """Feature maps (N, h, w, c) -> vectors: global average, or flattened; vectors stay."""
    import tensorflow as tf

    if len(x.shape) != 4:
        return x
    return tf.reduce_mean(x, [1, 2]) if pool == "avg" else tf.reshape(x, (tf.shape(x)[0], -1))


class KerasFile(nn.Module):
    """The source model of a keras-pretrained row: the file's identity and how it is used (``spec``), no
    weights (the episode phase loads the file, checking its hash)."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = dict(spec)


@dataclass
class KerasPretrained(ExternalModel):
    """A Keras model pretrained elsewhere, loaded from a .keras or .h5 file (nothing trained)."""

    rows = ("keras-pretrained", "keras-pretrained-finetune")
    suffixes = (".keras", ".h5")

    inputs: Inputs = "caffe"  # what Keras's VGG16/VGG19/ResNet50 expect (their preprocess_input)

    def versions(self) -> dict[str, str]:
        import tensorflow as tf

        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def describe(self) -> str:
        at = f"cut at layer {self.layer!r}" if self.layer else "its output"
        return f"external: Keras model file {Path(self.model).name or '(none)'}, {at} ({self.pool} pooled), no training"

    def settings(self) -> dict:
        return self.file_settings()

    def runs_on(self, device: torch.device) -> str:
        return tensorflow_device()

    def load(self, spec: dict | None = None) -> tuple[keras.Model, keras.Model, int]:
        """(the whole model, the features model, the cut layer's index) of the file, checked."""
        path = Path(spec["keras_file"] if spec else self.model)
        sha = spec["sha256"] if spec else self.sha256
        model = load_keras(path, sha, self.trust_model_code, self.rows[0])
        return (model, *features_model(model, spec["layer"] if spec else self.layer, path))

    def size(self, model: keras.Model, image_size: int) -> int:
        fixed = model.inputs[0].shape[1]
        return self.image_size or (int(fixed) if fixed else image_size)

    def validate(self, path: Path) -> None:
        model, feats, _ = self.load()
        side = self.size(model, 32)
        try:
            out = feats(np.zeros((1, side, side, 3), np.float32), training=False)
        except Exception as e:  # any failure of the user's model is one line
            raise UsageError(f"model file {path} does not run on {side}x{side} RGB images ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]}); set source.image_size") from None
        if not np.isfinite(np.asarray(out)).all():
            raise UsageError(f"model file {path} gives non-finite features on a blank image")

    def train(self, data: SourceData, budget_images: int) -> KerasFile:
        model, _, _ = self.load()
        return KerasFile({"keras_file": self.model, "sha256": self.sha256, "layer": self.layer, "pool": self.pool,
                          "inputs": self.inputs, "image_size": self.size(model, data.image_size)})

    def spec(self, model: nn.Module) -> dict:
        return dict(model.spec)

    def rebuild(self, spec: dict) -> KerasFile:
        return KerasFile(spec)


def episode_inputs(spec: dict, tasks: TaskBatch, batch_size: int = 256) -> np.ndarray:
    """The episodes' images as the model expects them, NHWC float32."""
    return np.concatenate([model_inputs(tasks.images[i:i + batch_size], tasks.mean, tasks.std, spec["inputs"],
                                        spec["image_size"]).permute(0, 2, 3, 1).cpu().numpy()
                           for i in range(0, len(tasks.images), batch_size)])


def checked_spec(model: nn.Module, source: Pretrainer) -> dict:
    from strategies.external import file_sha256

    spec = model.spec
    path = Path(spec["keras_file"])
    if not path.is_file() or file_sha256(path) != spec["sha256"]:
        raise UsageError(f"model file {path} changed or disappeared since the run started (sha256 "
                         f"{spec['sha256'][:12]}); restore it or start a new run")
    return spec


@dataclass
class KerasPretrainedProbe(ProbeSettings, Adapter):
    """Linear probe (TensorFlow) on L2-normalised frozen features of the user's Keras model."""

    counts_flops = False  # TensorFlow's operations are invisible to FlopCounterMode, and there is no twin

    def describe(self, source: Pretrainer) -> str:
        return f"Keras linear probe (C={self.C:g}) on the file's frozen features, Newton to |gradient| < " \
               f"{self.tolerance:g}"

    def runs_on(self, device: torch.device) -> str:
        return tensorflow_device()

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        configure_threads()
        spec = checked_spec(model, source)
        _, feats_model, _ = source.load(spec)
        feats = run_model(lambda x, training: pooled(feats_model(x, training=training), spec["pool"]),
                          episode_inputs(spec, tasks), 64)
        return probe_episodes(feats, tasks, self.C, self.max_iter, self.tolerance, self.episode_batch, progress)


@dataclass
class KerasPretrainedFinetune(TopLayersSettings, Adapter):
    """The first recipe: top layers (``layers[unfreeze_from:]``) unfrozen + a new Dense head, Adam (Keras)."""

    unfreeze_from: int = -4  # layers[k:] trainable (negative: from the end); -4: VGG16's last block

    counts_flops = False  # TensorFlow's operations are invisible to FlopCounterMode
    layers_word = "Keras layers"
    head_word = "Dense head"
    loss_word = "sparse categorical cross-entropy"
    bn_word = "inference (moving statistics)"

    def runs_on(self, device: torch.device) -> str:
        return tensorflow_device()

    def check(self, source: Pretrainer) -> None:
        if isinstance(source, KerasPretrained) and source.model:
            self.split(source)

    def split(self, source: KerasPretrained, spec: dict | None = None) -> tuple[keras.Model | None, keras.Model]:
        """(the frozen prefix, or None when every layer trains; the trainable body up to the cut), checked to
        compute what the features model computes."""
        model, feats, cut = source.load(spec)
        path, layers = Path(spec["keras_file"] if spec else source.model), model.layers
        k = self.unfreeze_from + len(layers) if self.unfreeze_from < 0 else self.unfreeze_from
        if not 0 <= k <= cut:
            raise UsageError(f"unfreeze_from={self.unfreeze_from} is outside the layers 0..{cut} of model file "
                             f"{path} up to its features layer {layers[cut].name!r}")
        while k <= cut and isinstance(layers[k], keras.layers.InputLayer):
            k += 1
        frozen = [lay for lay in layers[:k] if not isinstance(lay, keras.layers.InputLayer)]
        prefix = keras.Model(model.inputs[0], layers[k - 1].output) if frozen else None
        x = inputs = keras.Input(tuple(prefix.output.shape[1:]) if prefix else tuple(model.inputs[0].shape[1:]))
        try:
            for lay in layers[k:cut + 1]:
                x = lay(x)
            body = keras.Model(inputs, x)
            side = source.size(model, 32)
            probe = np.random.default_rng(0).normal(size=(2, side, side, 3)).astype(np.float32)
            same = np.allclose(run_model(body, run_model(prefix, probe)), feats(probe, training=False), atol=1e-4,
                               rtol=1e-3)
        except Exception as e:  # any failure of the user's model is one line
            raise UsageError(f"unfreeze_from={self.unfreeze_from}: layers[{k}:] of model file {path} are not a chain "
                             f"of one-input layers ({type(e).__name__}); pick another index") from None
        if not same:
            raise UsageError(f"unfreeze_from={self.unfreeze_from}: layers[{k}:] of model file {path} are not a chain "
                             f"(a layer takes another's output than its predecessor's); pick another index")
        return prefix, body

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        configure_threads()
        spec = checked_spec(model, source)
        prefix, body = self.split(source, spec)
        inputs = run_model(prefix, episode_inputs(spec, tasks), 64)
        for lay in body.layers:
            lay.trainable = True

        def pool(x):
            return pooled(x, spec["pool"])

        dim = int(pool(body(inputs[:1], training=False)).shape[-1])
        trainer = EpisodeTrainer(body, tasks.ways, dim, self.steps, self.lr, self.lr, self.weight_decay,
                                 normalise=False, pool=pool)
        support, query = tasks.support.cpu().numpy(), tasks.query.cpu().numpy()
        labels = tasks.support_labels.cpu().numpy()
        outputs = []
        try:
            for i, seed in enumerate(tasks.seeds):
                out = trainer.fit(inputs[support[i]], labels[i], inputs[query[i]], glorot((tasks.ways, dim), seed),
                                  np.zeros(tasks.ways, np.float32))
                outputs.append(logits_out(out, tasks.images.device))
                progress(1)
        finally:
            trainer.restore()  # the loaded model's layers are shared: leave them as the file has them
        return outputs
