"""The Keras Conv-4 and the PyTorch Conv-4 draw their initial weights from the same distribution: PyTorch's
default (kaiming_uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for conv and linear weights, the
same bound for their biases; BatchNorm at scale 1, shift 0). Keras' own default (Glorot-uniform kernels, zero
biases) fails these checks."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:  # never import it here: strategies.keras_backbone orders imports
    pytest.skip("tensorflow is not installed", allow_module_level=True)


def _torch_layers(num_classes: int):
    import torch

    from harness.backbone import build_backbone

    torch.manual_seed(0)
    model = build_backbone("conv4", num_classes=num_classes)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in [*convs, *linears]]


def _keras_layers(num_classes: int):
    from strategies.keras_backbone import conv4, keras

    keras.utils.set_random_seed(0)
    model = conv4(num_classes)
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)]
    return [(np.asarray(layer.kernel), np.asarray(layer.bias)) for layer in layers]


def test_keras_conv4_starts_from_pytorch_default_init():
    torch_layers, keras_layers = _torch_layers(5), _keras_layers(5)
    assert len(torch_layers) == len(keras_layers) == 5  # four convolutions and the head
    biases: dict[str, list[np.ndarray]] = {"torch": [], "keras": []}
    for i, ((tw, tb), (kw, kb)) in enumerate(zip(torch_layers, keras_layers, strict=True)):
        fan_in = int(np.prod(tw.shape[1:]))
        assert kw.size == tw.size and kb.size == tb.size, i
        bound = 1 / math.sqrt(fan_in)
        expected_std = bound / math.sqrt(3)  # of U(-bound, bound)
        # weights, per layer (at least 1,280 values each): the same standard deviation, the same bound
        assert abs(np.std(tw) / expected_std - 1) < 0.1, (i, "torch weight", np.std(tw), expected_std)
        assert abs(np.std(kw) / np.std(tw) - 1) < 0.1, (i, "keras vs torch weight", np.std(kw), np.std(tw))
        assert bound * 0.9 < np.abs(kw).max() <= bound * (1 + 1e-6), (i, np.abs(kw).max(), bound)
        assert abs(np.mean(kw)) < 4 * expected_std / math.sqrt(kw.size), (i, np.mean(kw))
        for k, b in (("torch", tb), ("keras", kb)):
            assert np.abs(b).max() <= bound * (1 + 1e-6), (i, k, "bias bound")
            biases[k].append(b / bound)  # U(-1, 1) in units of the layer's bound
    # biases pooled over the layers (261 values: a head has only 5): U(-1, 1), std 1/sqrt(3), as PyTorch's
    for k, values in biases.items():
        pooled = np.concatenate(values)
        assert abs(np.std(pooled) * math.sqrt(3) - 1) < 0.12, (k, np.std(pooled))
