"""Transfer baselines in TensorFlow/Keras under the harness's protocol (Chen et al. 2019, "A Closer Look at
Few-shot Classification", Baseline; Yosinski et al. 2014 for partial fine-tuning), on the Keras Conv-4
pretrained by :class:`strategies.keras_backbone.KerasSupervisedPretraining`.

``keras-frozen-features``: the backbone is frozen (``trainable = False``); a Dense softmax head is fitted on
the support set's L2-normalised features with Adam and ``SparseCategoricalCrossentropy(from_logits=True)``.
``keras-partial-finetune``: the same with the last block trainable. Frozen blocks run in inference mode
(Keras runs a BatchNormalization layer whose ``trainable`` is False with its moving statistics, even in
training); the trainable block is called with ``training=False`` too, so its BatchNorm uses the pretrained
moving statistics while its gamma/beta are trained (inductive, as ``partial-finetune``).

Frozen computations run once per image; each episode resets the trainable weights (head: Glorot uniform
from the episode's seed) and the Adam state, then runs a compiled ``tf.function`` training loop.
"""

# ruff: noqa: I001 - strategies.keras_backbone is imported first: it prepares TensorFlow's import and GPUs
from __future__ import annotations

from dataclasses import dataclass

import strategies.keras_backbone  # noqa: F401
import keras
import numpy as np
import tensorflow as tf
import torch
from torch import nn

from harness.episodes import TaskBatch
from harness.phases import Adapter, Pretrainer, Progress, no_progress
from strategies.keras_backbone import configure_threads, nhwc, tensorflow_device, to_keras


class EpisodeTrainer:
    """Resets ``body`` (may be None) and a Dense head, trains them on a support set, returns query logits."""

    def __init__(self, body: keras.Model | None, ways: int, dim: int, steps: int, lr: float, head_lr: float,
                 weight_decay: float, jit_compile: bool):
        self.body, self.steps, self.weight_decay = body, steps, weight_decay
        self.head = keras.layers.Dense(ways)
        self.head.build((None, dim))
        self.initial = [tf.constant(v) for v in body.trainable_variables] if body is not None else []
        self.groups = [(self.head.trainable_variables, keras.optimizers.Adam(head_lr))]
        if body is not None:
            self.groups.append((body.trainable_variables, keras.optimizers.Adam(lr)))
        for variables, optimizer in self.groups:
            optimizer.build(variables)
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.fit = tf.function(self._fit, jit_compile=jit_compile)

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        return self.head(x if self.body is None else self.body(x, training=False))

    def _fit(self, support: tf.Tensor, labels: tf.Tensor, query: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        self.head.kernel.assign(kernel)
        self.head.bias.assign(tf.zeros_like(self.head.bias))
        body = self.body.trainable_variables if self.body is not None else []
        for v, v0 in zip(body, self.initial, strict=True):
            v.assign(v0)
        for _, optimizer in self.groups:
            for v in optimizer.variables:
                if v is not optimizer._learning_rate:
                    v.assign(tf.zeros_like(v))
        for _ in tf.range(self.steps):
            with tf.GradientTape() as tape:
                loss = self.loss(labels, self.logits(support))
            grads = tape.gradient(loss, [v for variables, _ in self.groups for v in variables])
            start = 0
            for variables, optimizer in self.groups:
                pairs = zip(grads[start:start + len(variables)], variables, strict=True)
                optimizer.apply_gradients([(g + self.weight_decay * v, v) for g, v in pairs])
                start += len(variables)
        return self.logits(query)


def glorot(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Keras' default Dense initialiser, drawn from the episode's seed alone."""
    limit = np.sqrt(6 / sum(shape))
    return np.random.default_rng(seed).uniform(-limit, limit, shape).astype(np.float32)


@dataclass
class KerasProbe(Adapter):
    """Keras Dense softmax head (Adam) on L2-normalised frozen features of a Keras-pretrained Conv-4."""

    unfrozen_blocks = 0

    steps: int = 100
    head_lr: float = 0.1
    weight_decay: float = 0.0
    jit_compile: bool = False  # XLA for the episode's training loop

    def describe(self, source: Pretrainer) -> str:
        return f"Keras Dense head on frozen features, Adam {self.steps} steps (lr {self.head_lr:g})"

    def settings(self, source: Pretrainer) -> dict:
        return {"unfrozen blocks": self.unfrozen_blocks, "steps": self.steps, "BN": "inference (moving statistics)",
                "XLA": self.jit_compile}

    def runs_on(self, device: torch.device) -> str:
        return tensorflow_device()

    def _inputs(self, backbone: keras.Model, images: np.ndarray) -> np.ndarray:
        """What the frozen part computes once per image: 256-d L2-normalised features."""
        feats = np.concatenate([backbone(images[i:i + 500], training=False) for i in range(0, len(images), 500)])
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def _trainer(self, backbone: keras.Model, ways: int) -> EpisodeTrainer:
        return EpisodeTrainer(None, ways, 256, self.steps, 0.0, self.head_lr, self.weight_decay, self.jit_compile)

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer, progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        configure_threads()
        backbone = to_keras(model)
        backbone.trainable = False
        inputs = self._inputs(backbone, nhwc(tasks.images))
        trainer = self._trainer(backbone, tasks.ways)
        support, query = tasks.support.cpu().numpy(), tasks.query.cpu().numpy()
        labels = tasks.support_labels.cpu().numpy()
        logits = []
        for i, seed in enumerate(tasks.seeds):
            out = trainer.fit(inputs[support[i]], labels[i], inputs[query[i]], glorot((256, tasks.ways), seed))
            logits.append(torch.from_numpy(out.numpy()).to(tasks.images.device))
            progress(1)
        return logits


@dataclass
class KerasFinetune(KerasProbe):
    """Keras Dense head plus the last Conv-4 block fine-tuned on the support set (Adam), earlier blocks frozen."""

    unfrozen_blocks = 1

    lr: float = 1e-3
    head_lr: float = 1e-2
    weight_decay: float = 1e-4

    def describe(self, source: Pretrainer) -> str:
        return (f"Keras fine-tune head + last block, Adam {self.steps} steps (lr {self.lr:g}, head "
                f"{self.head_lr:g})")

    def _inputs(self, backbone: keras.Model, images: np.ndarray) -> np.ndarray:
        """The frozen prefix (blocks 0-2) once per image: 4x4x64 maps."""
        prefix = keras.Sequential(backbone.layers[:3])
        return np.concatenate([prefix(images[i:i + 500], training=False) for i in range(0, len(images), 500)])

    def _trainer(self, backbone: keras.Model, ways: int) -> EpisodeTrainer:
        for layer in backbone.layers[3:]:  # block3 (its BatchNorm affine weights included) + flatten
            layer.trainable = True
        body = keras.Sequential(backbone.layers[3:])
        return EpisodeTrainer(body, ways, 256, self.steps, self.lr, self.head_lr, self.weight_decay,
                              self.jit_compile)
