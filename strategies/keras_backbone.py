"""Keras Conv-4 (Vinyals et al. 2016) and its supervised pretraining on the base classes: the TensorFlow
twin of strategies/backbones/conv4.py and strategies/supervised.py (Chen et al. 2019's Baseline pretraining).

Same architecture (4 x [Conv2D 64 3x3 same, BatchNormalization, ReLU, MaxPool 2], 256-d features at
32x32, BatchNorm momentum and epsilon as PyTorch's defaults) and the same budget rule: images processed,
batches drawn by ``strategies.pretraining.minibatches``, the ``lr_at`` warm-up/decay schedule, SGD with
Nesterov momentum and L2 weight decay added to the gradient (the update of ``torch.optim.SGD``), random
crop (reflect padding 4) + horizontal flip as batched tensor ops (``augment``, as the PyTorch phases), and
PyTorch's default initialisation of the convolutions and the head (:func:`torch_default_init`). The step is a
``tf.function``.

Conv-4 only: another backbone for a Keras row is a one-line error (or a skipped row under --all).
The harness caches torch state dicts, so the trained weights travel as torch buffers of a
:class:`KerasWeights` module (plain tensors: ``weights_only=True`` loading works, nothing is pickled);
:func:`to_keras` rebuilds the Keras model from them. Imported only when a Keras strategy runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:  # Triton's library (loaded by torchvision, torch.compile) segfaults when loaded after TensorFlow's
    import triton._C.libtriton  # noqa: F401
except ImportError:
    pass


# The C++ start-up lines TensorFlow writes to fd 2 at import whatever TF_CPP_MIN_LOG_LEVEL says (absl's
# pre-initialisation warning and the oneDNN notice), twice; dropped so that they never precede the harness's
# own output (or a one-line error). Any other line written during the import is passed on.
IMPORT_NOISE = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                "oneDNN custom operations are on")


def import_quietly(*modules: str) -> None:
    """Import ``modules`` with fd 2 captured; write back every captured line but TensorFlow's start-up noise."""
    import importlib
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            for module in modules:
                importlib.import_module(module)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if line.strip() and not any(n in line for n in IMPORT_NOISE)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)


import_quietly("tensorflow", "keras")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from harness.phases import Pretrainer, SourceData  # noqa: E402
from strategies.pretraining import SgdSettings, lr_at, minibatches  # noqa: E402


def configure_gpus() -> None:
    """Let TensorFlow grow GPU memory on demand instead of taking it all from PyTorch (before any op)."""
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


configure_gpus()


def tensorflow_device() -> str:
    """The device TensorFlow computes on (it may be the CPU when torch uses a GPU: tensorflow-cpu)."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        return f"{details.get('device_name', gpus[0].name)} (TensorFlow)"
    from harness.measure import device_name

    return device_name(torch.device("cpu")).rstrip(")") + "; TensorFlow)"


def configure_threads() -> None:
    """Use torch's thread count (the run's --threads); possible only before TensorFlow's first op."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(torch.get_num_threads())
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime already started: keep its settings
        pass


def torch_default_init(fan_in: int) -> dict[str, keras.initializers.Initializer]:
    """PyTorch's default initialisation of a Conv2d / Linear layer as Keras initialisers: weights
    ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (VarianceScaling with scale 1/3,
    fan_in, uniform), and the bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); so the Keras and PyTorch Conv-4 start
    from the same distribution (Keras' own default is Glorot-uniform weights and zero biases)."""
    bound = 1.0 / math.sqrt(fan_in)
    return {"kernel_initializer": keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
            "bias_initializer": keras.initializers.RandomUniform(-bound, bound)}


def conv4(num_classes: int = 0, width: int = 64, image_size: int = 32) -> keras.Sequential:
    """Conv-4 in Keras (channels last); a Dense head when ``num_classes`` > 0. Initialised as PyTorch
    initialises its Conv-4 (:func:`torch_default_init`); BatchNorm starts at scale 1, shift 0 in both."""
    def block(i: int) -> keras.Sequential:
        cin = 3 if i == 0 else width
        return keras.Sequential([keras.layers.Conv2D(width, 3, padding="same", name="conv",
                                                     **torch_default_init(cin * 9)),
                                 keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn"),
                                 keras.layers.ReLU(), keras.layers.MaxPooling2D(2)], name=f"block{i}")

    layers = [keras.Input((image_size, image_size, 3)), *[block(i) for i in range(4)],
              keras.layers.Flatten(name="flatten")]
    if num_classes:
        features = width * (image_size // 16) ** 2
        layers.append(keras.layers.Dense(num_classes, name="head", **torch_default_init(features)))
    return keras.Sequential(layers, name="conv4")


def _key(variable: keras.Variable) -> str:
    return variable.path.split("/", 1)[1].replace("/", "_")  # "conv4/block0/bn/gamma" -> "block0_bn_gamma"


class KerasWeights(nn.Module):
    """The weights of a Keras model as torch buffers, so the harness's cache stores them as a state dict."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.image_size = int(model.input_shape[1])
        for v in model.weights:
            self.register_buffer(_key(v), torch.from_numpy(np.array(v.numpy())))


def to_keras(weights: nn.Module, head: bool = False) -> keras.Sequential:
    """A Keras Conv-4 holding copies of ``weights`` (without the pretraining head unless ``head``)."""
    buffers = dict(weights.named_buffers())
    model = conv4(buffers["head_kernel"].shape[1] if head else 0, image_size=getattr(weights, "image_size", 32))
    for v in model.weights:
        v.assign(buffers[_key(v)].detach().cpu().numpy())
    return model


def to_torch(weights: nn.Module, head: bool = False) -> nn.Module:
    """The PyTorch Conv-4 (strategies/backbones/conv4.py) with the same weights as the Keras one, so the
    PyTorch episode phases run on Keras-pretrained features (the framework-isolating check). Kernels go
    from HWIO to OIHW; the head's rows from the NHWC flattening order to the NCHW one."""
    from harness.backbone import build_backbone

    buffers = {k: v.detach().cpu() for k, v in weights.named_buffers()}
    image_size = getattr(weights, "image_size", 32)
    classes = buffers["head_kernel"].shape[1] if head else 0
    model = build_backbone("conv4", num_classes=classes, image_size=image_size)
    state = {}
    for i in range(4):
        state[f"blocks.{i}.0.weight"] = buffers[f"block{i}_conv_kernel"].permute(3, 2, 0, 1)
        state[f"blocks.{i}.0.bias"] = buffers[f"block{i}_conv_bias"]
        for torch_name, keras_name in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                                       ("running_var", "moving_variance")):
            state[f"blocks.{i}.1.{torch_name}"] = buffers[f"block{i}_bn_{keras_name}"]
        state[f"blocks.{i}.1.num_batches_tracked"] = torch.tensor(0)
    if classes:
        side = image_size // 16
        kernel = buffers["head_kernel"].view(side, side, -1, classes).permute(2, 0, 1, 3).reshape(-1, classes)
        state["head.weight"], state["head.bias"] = kernel.T, buffers["head_bias"]
    model.load_state_dict({k: v.contiguous().clone() for k, v in state.items()})
    return model.eval()


def normalise(images: tf.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> tf.Tensor:
    """uint8 NHWC -> float32 with the dataset's channel statistics (harness.augment.to_float)."""
    return (tf.cast(images, tf.float32) / 255.0 - mean) / std


def augment(x: tf.Tensor, seed: tf.Tensor, padding: int = 4) -> tf.Tensor:
    """Random crop (reflect padding) and horizontal flip per image, stateless from ``seed`` (2 ints)."""
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    padded = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
    seeds = tf.random.experimental.stateless_split(seed, 3)
    dy = tf.random.stateless_uniform((n,), seeds[0], 0, 2 * padding + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform((n,), seeds[1], 0, 2 * padding + 1, dtype=tf.int32)
    x = tf.gather(padded, dy[:, None] + tf.range(h), axis=1, batch_dims=1)
    x = tf.gather(x, dx[:, None] + tf.range(w), axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform((n,), seeds[2]) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(x, [2]), x)


def nhwc(images: torch.Tensor) -> np.ndarray:
    """Torch NCHW (on any device) -> NumPy NHWC."""
    return images.detach().permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class KerasSupervisedPretraining(SgdSettings, Pretrainer):
    """Supervised pretraining in TensorFlow/Keras: cross-entropy on the base classes, crop+flip; the PyTorch phases'
    SGD settings (strategies/pretraining.py SgdSettings)."""

    any_backbone = False  # the Keras Conv-4 only
    precisions = ("fp32",)

    label_smoothing: float = 0.0
    jit_compile: bool = False  # XLA for the training step

    def versions(self) -> dict[str, str]:
        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def describe(self) -> str:
        return f"supervised Keras Conv-4 pretraining (SGD, lr {self.lr:g}; TensorFlow {tf.__version__})"

    def settings(self) -> dict:
        return {"framework": f"TensorFlow {tf.__version__}", "source XLA": self.jit_compile}

    def check(self) -> None:  # the Keras Conv-4 is not a registered backbone: Strategy.check names the limit
        self.check_sgd(self.phase_name)

    def runs_on(self, device: torch.device) -> str:
        return tensorflow_device()

    def flop_twin(self) -> Pretrainer:
        """The PyTorch supervised Conv-4 phase: the same architecture, batch size and steps."""
        from strategies.supervised import SupervisedPretraining

        return SupervisedPretraining(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                     batch_size=self.batch_size, label_smoothing=self.label_smoothing,
                                     augment=self.augment)

    def spec(self, model: nn.Module) -> dict:
        return {"keras": "conv4", "num_classes": int(model.head_kernel.shape[1]), "image_size": model.image_size}

    def rebuild(self, spec: dict) -> KerasWeights:
        return KerasWeights(conv4(spec["num_classes"], image_size=spec.get("image_size", 32)))

    def train(self, data: SourceData, budget_images: int) -> KerasWeights:
        configure_threads()
        keras.utils.set_random_seed(data.seed)
        model = conv4(data.num_classes, image_size=data.image_size)
        images, labels = tf.constant(nhwc(data.images)), tf.constant(data.labels.cpu().numpy())
        variables = model.trainable_variables
        velocity = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.label_smoothing)

        @tf.function(jit_compile=self.jit_compile)
        def step(idx: tf.Tensor, lr: tf.Tensor, seed: tf.Tensor) -> None:
            x = normalise(tf.gather(images, idx), data.mean, data.std)
            if self.augment != "none":  # fixed when the step is traced
                x = augment(x, seed)
            y = tf.one_hot(tf.gather(labels, idx), data.num_classes)
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            for v, g, b in zip(variables, tape.gradient(loss, variables), velocity, strict=True):
                g = g + self.weight_decay * v  # torch.optim.SGD(nesterov=True, weight_decay=...)
                b.assign(self.momentum * b + g)
                v.assign_sub(lr * (g + self.momentum * b))

        steps = max(1, math.ceil(budget_images / self.batch_size))
        generator = torch.Generator().manual_seed(data.seed)
        for i, idx in enumerate(minibatches(len(data.images), self.batch_size, steps, generator,
                                            torch.device("cpu"))):
            step(tf.constant(idx.numpy()), tf.constant(lr_at(i, steps, self.lr), tf.float32),
                 tf.constant([data.seed, i], tf.int32))
            data.progress(len(idx))
        return KerasWeights(model)
