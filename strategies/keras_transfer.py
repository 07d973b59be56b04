"""The transfer baselines in TensorFlow/Keras, the same algorithms as their PyTorch twins, on the Keras Conv-4
pretrained by :class:`strategies.keras_backbone.KerasSupervisedPretraining`; only the framework differs.

``keras-frozen-features`` (twin: ``frozen-features``, strategies/probe.py): multinomial logistic regression
on L2-normalised frozen features, scikit-learn's penalty ``||W||^2 / (2 C n)`` on the weights only, solved
in float64 to max |gradient| < ``tolerance`` (strategies/keras_logistic.py: Newton, TensorFlow). On identical
features it reaches the PyTorch probe's optimum (tests/test_strategies/test_keras_transfer.py).

``keras-partial-finetune`` (twin: ``partial-finetune``, strategies/finetune.py): LP-FT: the head starts from
the converged probe on the frozen tail's L2-normalised features; the last ``unfrozen_blocks`` blocks
(BatchNorm affine weights included) and the head are trained with Adam (the update of torch.optim.Adam, L2
weight decay added to the gradient; lr 1e-4, head 1e-3, 50 full-batch steps), features L2-normalised before
the head. BatchNorm runs in inference mode (moving statistics), so queries never influence each other.

Frozen computations run once per image; each episode resets the trainable weights and the Adam state, then
runs a compiled ``tf.function`` training loop. :class:`EpisodeTrainer` is shared with the bring-your-own-model
rows (strategies/keras_pretrained.py). Each adapter's FLOPs are counted on its PyTorch twin on a PyTorch copy
of the model (``episode_flops``): FlopCounterMode does not see TensorFlow.
"""

# ruff: noqa: I001 - strategies.keras_backbone is imported first: it prepares TensorFlow's import and GPUs
from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass

import strategies.keras_backbone  # noqa: F401
import keras
import numpy as np
import tensorflow as tf
import torch
from torch import nn

from harness.episodes import TaskBatch
from harness.phases import Adapter, Pretrainer, Progress, no_progress
from strategies.finetune import FinetuneSettings, PartialFinetune
from strategies.keras_backbone import configure_threads, nhwc, tensorflow_device, to_keras, to_torch
from strategies.probe import LinearProbe, ProbeSettings
from strategies.keras_logistic import apply_probe, fit_probe, l2_normalise


def run_model(model: Callable | None, inputs: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """``model`` in inference mode over ``inputs`` in chunks (None: the inputs themselves)."""
    if model is None:
        return inputs
    return np.concatenate([np.asarray(model(inputs[i:i + batch_size], training=False))
                           for i in range(0, len(inputs), batch_size)])


class EpisodeTrainer:
    """Trains ``body`` (the unfrozen layers, a Keras model, or None) and a linear head on one episode's support
    inputs and returns the query logits. Each call starts from the body's weights at construction and the
    head it is given, with a fresh Adam state: torch.optim.Adam's update, L2 weight decay added to the
    gradient, ``steps`` full-batch steps of mean cross-entropy. The body runs in inference mode (BatchNorm on
    its moving statistics, affine weights trained); its output is pooled by ``pool`` and, with ``normalise``,
    L2-normalised before the head."""

    def __init__(self, body: keras.Model | None, ways: int, dim: int, steps: int, lr: float, head_lr: float,
                 weight_decay: float, normalise: bool = True, pool: Callable[[tf.Tensor], tf.Tensor] | None = None,
                 jit_compile: bool = False, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.body, self.steps, self.weight_decay, self.normalise = body, steps, weight_decay, normalise
        self.pool, self.betas, self.eps = pool, betas, eps
        self.kernel = tf.Variable(tf.zeros((dim, ways)), name="head_kernel")
        self.bias = tf.Variable(tf.zeros((ways,)), name="head_bias")
        body_variables = list(body.trainable_variables) if body is not None else []
        self.initial = [tf.constant(v) for v in body_variables]
        self.variables = [self.kernel, self.bias, *body_variables]
        self.lrs = [head_lr, head_lr] + [lr] * len(body_variables)
        self.moments = [(tf.Variable(tf.zeros_like(v), trainable=False), tf.Variable(tf.zeros_like(v), trainable=False))
                        for v in self.variables]
        self.fit = tf.function(self._fit, jit_compile=jit_compile)

    def restore(self) -> None:
        """Put the body's weights back as they were at construction."""
        for v, v0 in zip(self.variables[2:], self.initial, strict=True):
            v.assign(v0)

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        feats = x if self.body is None else self.body(x, training=False)
        feats = self.pool(feats) if self.pool is not None else feats
        if self.normalise:
            feats = l2_normalise(feats)
        return tf.linalg.matmul(feats, self.kernel) + self.bias

    def _fit(self, support: tf.Tensor, labels: tf.Tensor, query: tf.Tensor, weight: tf.Tensor,
             bias: tf.Tensor) -> tf.Tensor:
        """``weight`` (ways, dim) and ``bias`` (ways,): the head to start from."""
        self.kernel.assign(tf.transpose(weight))
        self.bias.assign(bias)
        for v, v0 in zip(self.variables[2:], self.initial, strict=True):
            v.assign(v0)
        for m, s in self.moments:
            m.assign(tf.zeros_like(m))
            s.assign(tf.zeros_like(s))
        b1, b2 = self.betas
        labels = tf.cast(labels, tf.int32)
        for step in tf.range(1, self.steps + 1):
            t = tf.cast(step, tf.float32)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, self.logits(support)))
            grads = tape.gradient(loss, self.variables)
            for v, g, (m, s), lr in zip(self.variables, grads, self.moments, self.lrs, strict=True):
                g = g + self.weight_decay * v
                m.assign(b1 * m + (1 - b1) * g)
                s.assign(b2 * s + (1 - b2) * g * g)
                v.assign_sub(lr * (m / (1 - b1**t)) / (tf.sqrt(s / (1 - b2**t)) + self.eps))
        return self.logits(query)


def twin_flops(twin: Adapter, model: nn.Module, tasks: TaskBatch, source: Pretrainer) -> int:
    """The FLOPs of the PyTorch twin adapting a PyTorch copy of the Keras Conv-4 to ``tasks``, counted."""
    from harness.flops import counted

    return counted(lambda: twin.adapt(to_torch(model).to(tasks.images.device), tasks, source))[1]


class KerasTwin:
    """What a Keras adapter running a PyTorch adapter's algorithm adds: ``twin`` names the PyTorch row,
    ``twin_adapter`` its adapter class; both inherit the hyperparameter dataclass ``shared``. TensorFlow's device
    is the one named; the FLOPs are counted on the twin (FlopCounterMode sees PyTorch only)."""

    twin: str
    twin_adapter: type
    shared: type

    @property
    def twin_of(self) -> str:
        """The PyTorch row of the same algorithm: the record's ``twin_of`` (harness/phases.py ``Strategy``)."""
        return self.twin

    def runs_on(self, device: torch.device) -> str:
        return tensorflow_device()

    def episode_flops(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer) -> int:
        twin = self.twin_adapter(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self.shared)})
        return twin_flops(twin, model, tasks, source)


def logits_out(logits: tf.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(logits, dtype=np.float32)).to(device)


@dataclass
class KerasProbe(KerasTwin, ProbeSettings, Adapter):
    """Linear probe in TensorFlow: logistic regression on L2-normalised frozen features of a Keras Conv-4."""

    twin = "frozen-features"  # the PyTorch row of the same algorithm (shown in the settings and the report)
    twin_adapter, shared = LinearProbe, ProbeSettings

    def describe(self, source: Pretrainer) -> str:
        return f"Keras linear probe (C={self.C:g}), Newton (TensorFlow) to max |gradient| < {self.tolerance:g}"

    def settings(self, source: Pretrainer) -> dict:
        return {"PyTorch twin": self.twin}

    def frozen_features(self, model: nn.Module, images: torch.Tensor, source: Pretrainer) -> torch.Tensor:
        configure_threads()
        backbone = to_keras(model)
        backbone.trainable = False
        return torch.from_numpy(run_model(backbone, nhwc(images)))

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        feats = self.features(model, tasks, source).cpu().numpy()
        return probe_episodes(feats, tasks, self.C, self.max_iter, self.tolerance, self.episode_batch, progress)


def probe_episodes(feats: np.ndarray, tasks: TaskBatch, C: float, max_iter: int, tolerance: float,
                   episode_batch: int, progress: Progress) -> list[torch.Tensor]:
    """Probe logits of every episode on per-image features (U, d)."""
    outputs = []
    for chunk in tasks.chunks(episode_batch):
        support, query = chunk.support.cpu().numpy(), chunk.query.cpu().numpy()
        w, b = fit_probe(feats[support], chunk.support_labels.cpu().numpy(), tasks.ways, C, max_iter, tolerance)
        outputs += [logits_out(lg, tasks.images.device) for lg in apply_probe(feats[query], w, b).numpy()]
        progress(len(chunk))
    return outputs


@dataclass
class KerasFinetune(KerasTwin, FinetuneSettings, Adapter):
    """Partial fine-tuning in TensorFlow: a probe-initialised head plus the last Conv-4 block(s), Adam."""

    twin = "partial-finetune"
    twin_adapter, shared = PartialFinetune, FinetuneSettings
    framework = "Keras "

    jit_compile: bool = False  # XLA for the episode's training loop

    def settings(self, source: Pretrainer) -> dict:
        return {**super().settings(source), "XLA": self.jit_compile, "PyTorch twin": self.twin}

    def stop(self, backbone: keras.Model) -> int:
        return len(backbone.layers) - 1 - self.unfrozen_blocks  # the layers: 4 blocks, then the flatten

    def frozen_features(self, model: nn.Module, images: torch.Tensor, source: Pretrainer) -> torch.Tensor | None:
        """The frozen blocks' output (NHWC, inference mode); None when every block trains."""
        configure_threads()
        backbone = to_keras(model)
        stop = self.stop(backbone)
        return torch.from_numpy(run_model(keras.Sequential(backbone.layers[:stop]), nhwc(images))) if stop else None

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        configure_threads()
        backbone = to_keras(model)
        body = keras.Sequential(backbone.layers[self.stop(backbone):])  # the unfrozen blocks and the flatten
        prefix = self.features(model, tasks, source)
        inputs = nhwc(tasks.images) if prefix is None else prefix.cpu().numpy()
        start = run_model(body, inputs) if self.head_init == "probe" else None  # the frozen tail's features
        dim = int(run_model(body, inputs[:1]).shape[-1])
        trainer = EpisodeTrainer(body, tasks.ways, dim, self.steps, self.lr, self.head_lr, self.weight_decay,
                                 jit_compile=self.jit_compile)
        outputs = []
        for chunk in tasks.chunks(self.episode_batch):
            support, query = chunk.support.cpu().numpy(), chunk.query.cpu().numpy()
            labels = chunk.support_labels.cpu().numpy()
            heads = initial_heads(self.head_init, start, support, labels, tasks.ways, self.probe_C, dim, chunk.seeds)
            for i, (w, b) in enumerate(heads):
                outputs.append(logits_out(trainer.fit(inputs[support[i]], labels[i], inputs[query[i]], w, b),
                                          tasks.images.device))
            progress(len(chunk))
        return outputs


def initial_heads(init: str, feats: np.ndarray | None, support: np.ndarray, labels: np.ndarray, ways: int, C: float,
                  dim: int, seeds: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per episode, the head fine-tuning starts from, float32 ((ways, dim), (ways,)): "probe": the converged
    probe on the features (LP-FT; the PyTorch twin's tolerance); "random": nn.Linear's initialisation drawn
    from the episode's seed (as the twin draws it)."""
    if init == "probe":
        w, b = fit_probe(feats[support], labels, ways, C, ProbeSettings.max_iter, ProbeSettings.tolerance)
        return list(zip(w.numpy().astype(np.float32), b.numpy().astype(np.float32), strict=True))
    heads = []
    for seed in seeds:
        torch.manual_seed(seed)
        head = nn.Linear(dim, ways)
        heads.append((head.weight.detach().numpy(), head.bias.detach().numpy()))
    return heads
