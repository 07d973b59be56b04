"""Keras strategies: lazy TensorFlow import, behaviour without it, parity with the PyTorch Conv-4, the
torch-state-dict cache round trip, determinism, and a mixed Keras + PyTorch run on the same episodes.
(Both strategies also run the shared contract suite in test_contract.py; test_keras_twins.py checks that
they run their PyTorch twins' algorithms, test_pretrained_rows.py the bring-your-own-model rows.)"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import SOURCE_PROTOCOL, make_images

from harness import registry
from harness.cli import main
from harness.phases import SourceData

ROOT = Path(__file__).resolve().parents[2]
KERAS = ("keras-frozen-features", "keras-partial-finetune", "keras-pretrained", "keras-pretrained-finetune")


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_list_and_registry_never_import_tensorflow():
    out = python("import sys\nfrom harness import registry\nfrom harness.cli import main\n"
                 "from harness.suite import get_row\n"
                 "rows = {n: get_row(n) for n in registry.STRATEGIES.names()}\nassert main(['list']) == 0\n"
                 "keras = ('keras-frozen-features', 'keras-partial-finetune')\n"
                 "assert all(rows[n].available() and rows[n].family == 'transfer' for n in keras)\n"
                 "external = ('keras-pretrained', 'keras-pretrained-finetune', 'torch-pretrained')\n"
                 "assert all(rows[n].available() and rows[n].family == 'external' for n in external)\n"
                 "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    assert out.returncode == 0, out.stderr
    assert "keras-frozen-features" in out.stdout and out.stdout.strip().endswith("[]")


@pytest.mark.slow
def test_memory_growth_is_set_for_every_gpu_at_import():
    out = python("try:\n    import triton._C.libtriton\nexcept ImportError:\n    pass\n"
                 "import tensorflow as tf\ncalls = []\n"
                 "tf.config.list_physical_devices = lambda kind=None: ['GPU:0', 'GPU:1'] if kind == 'GPU' else []\n"
                 "tf.config.experimental.set_memory_growth = lambda d, v: calls.append((d, v))\n"
                 "import strategies.keras_transfer\nprint(calls)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[('GPU:0', True), ('GPU:1', True)]")


@pytest.fixture
def without_tensorflow(monkeypatch):
    """Pretend TensorFlow is not installed (and the Keras pretrainer and adapters not imported yet)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    for reg in (registry.PRETRAINERS, registry.ADAPTERS):
        for entry in reg.entries().values():
            if entry.requires == "tensorflow" and not isinstance(entry.target, str):
                target = entry.target
                monkeypatch.setattr(entry, "target", f"{target.__module__}:{target.__qualname__}")


def test_without_tensorflow_list_shows_the_install_command(without_tensorflow, capsys):
    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in KERAS:
        assert '[unavailable: pip install -e ".[tensorflow]"]' in lines[name]
    assert "unavailable" not in lines["frozen-features"]


def test_without_tensorflow_naming_one_is_a_clear_error(without_tensorflow, imagefolder_dir, tmp_path, capsys):
    code = main(["run", "keras-frozen-features", "--preset", "smoke", "--data-dir", str(imagefolder_dir),
                 "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "needs tensorflow" in err and 'pip install -e ".[tensorflow]"' in err
    assert not (tmp_path / "r").exists()


def test_without_tensorflow_run_all_skips_them_with_the_reason(without_tensorflow, imagefolder_dir, tmp_path,
                                                                 monkeypatch):
    entries = registry.STRATEGIES.entries()
    monkeypatch.setattr(registry.STRATEGIES, "_entries", {n: entries[n] for n in KERAS})  # nothing to train: fast
    report = tmp_path / "board.md"
    assert main(["run", "--all", "--preset", "smoke", "--shots", "1", "--data-dir", str(imagefolder_dir),
                 "--out", str(tmp_path / "r"), "--report", str(report), "--quiet"]) == 0
    records = {json.loads(p.read_text())["strategy"]: json.loads(p.read_text())
               for p in (tmp_path / "r" / "records").glob("*.json")}
    text = report.read_text()
    for name in KERAS:
        assert records[name]["status"] == "skipped" and "tensorflow" in records[name]["reason"]
        assert any(name in line and 'skipped: needs tensorflow: pip install -e ".[tensorflow]"' in line
                   for line in text.splitlines())


def test_keras_conv4_matches_the_pytorch_one():
    from harness.backbone import build_backbone
    from strategies.keras_backbone import conv4

    keras_model, torch_model = conv4(5), build_backbone("conv4", 5)
    feature_dim = torch_model.feature_dim
    assert feature_dim == 256
    trainable = sum(int(np.prod(v.shape)) for v in keras_model.trainable_weights)
    statistics = sum(int(np.prod(v.shape)) for v in keras_model.non_trainable_weights)
    assert trainable == sum(p.numel() for p in torch_model.parameters())
    assert statistics == sum(b.numel() for n, b in torch_model.named_buffers() if "running" in n)
    features = conv4()(np.zeros((2, 32, 32, 3), np.float32), training=False)
    assert tuple(features.shape) == (2, feature_dim) == tuple(torch_model.features(torch.zeros(2, 3, 32, 32)).shape)


def small_source(seed: int = 0) -> SourceData:
    images, labels = make_images(12, seed=3, classes=5)
    return SourceData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels), 5,
                      torch.device("cpu"), seed, **SOURCE_PROTOCOL)


def test_pretraining_is_deterministic_and_survives_the_torch_cache(tmp_path):
    from harness.cache import SourceCache
    from harness.units import SourceResult
    from strategies.keras_backbone import KerasSupervisedPretraining, to_keras

    phase = KerasSupervisedPretraining(batch_size=16)
    first, second = phase.train(small_source(), 64), phase.train(small_source(), 64)
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    assert not torch.equal(first.state_dict()["block0_bn_moving_mean"], torch.zeros(64))  # BN statistics trained

    # what the harness does (harness/work.py): spec + CPU state dict stored, rebuilt from the spec, loaded
    cache = SourceCache(tmp_path)
    state = {k: v.detach().cpu().clone() for k, v in first.state_dict().items()}
    cache.store(SourceResult("k", phase.spec(first), state, {}))
    result = cache.load("k")  # torch.load(weights_only=True) inside
    assert result is not None and result.cached and result.spec["num_classes"] == 5
    loaded = phase.rebuild(result.spec)
    loaded.load_state_dict(result.state)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_keras(first, head=True)(x, training=False),
                                  to_keras(loaded, head=True)(x, training=False))


def test_partial_finetune_trains_one_block_with_bn_in_inference_mode():
    """Only conv + BatchNorm affine weights of the last block train; a query's logits do not depend on the
    other queries (BatchNorm uses moving statistics, never batch statistics)."""
    import keras

    from strategies.external import glorot
    from strategies.keras_backbone import conv4
    from strategies.keras_transfer import EpisodeTrainer

    backbone = conv4()
    backbone.trainable = False
    for layer in backbone.layers[3:]:
        layer.trainable = True
    body = keras.Sequential(backbone.layers[3:])
    before = [v.numpy().copy() for v in body.trainable_variables]
    trainer = EpisodeTrainer(body, 5, 256, 5, 1e-3, 1e-2, 1e-4)
    assert sorted(v.name for v in body.trainable_variables) == ["beta", "bias", "gamma", "kernel"]
    rng = np.random.default_rng(0)
    support, query = rng.normal(size=(2, 5, 4, 4, 64)).astype(np.float32)
    labels, head, bias = np.arange(5), glorot((5, 256), 1), np.zeros(5, np.float32)
    alone = trainer.fit(support, labels, query[:1], head, bias).numpy()
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, body.trainable_variables, strict=True))
    together = trainer.fit(support, labels, query, head, bias).numpy()
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-5, atol=1e-6)
    trainer.restore()
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, body.trainable_variables, strict=True))


@pytest.mark.slow
def test_keras_and_pytorch_strategies_share_the_episodes(imagefolder_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "run", "keras-partial-finetune", "keras-frozen-features",
                          "frozen-features",
                          "--preset", "smoke", "--shots", "1", "--data-dir", str(imagefolder_dir),
                          "--out", str(tmp_path / "r"), "--report", str(tmp_path / "r.md"), "--quiet"],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "r" / "records").glob("*.json")]
    assert {r["strategy"] for r in records} == {"keras-partial-finetune", "keras-frozen-features", "frozen-features"}
    assert all(r["status"] == "ok" and r["source_images_per_second"] > 0 for r in records)
    assert len({r["episode_fingerprint"] for r in records}) == 1
    keras_record = next(r for r in records if r["strategy"] == "keras-partial-finetune")
    assert keras_record["settings"]["framework"].startswith("TensorFlow")
    # the device TensorFlow computes on is recorded (tensorflow-cpu: the CPU, whatever torch uses)
    assert keras_record["device"].endswith("TensorFlow)") and keras_record["source_device"].endswith("TensorFlow)")
    # each Keras row names its PyTorch twin, and the report shows the paired difference to it
    assert keras_record["settings"]["PyTorch twin"] == "partial-finetune"
    report = (tmp_path / "r.md").read_text().split("## Same algorithm, two frameworks", 1)[1].split("##", 1)[0]
    twin_line = next(line for line in report.splitlines() if "keras-frozen-features" in line)
    assert "frozen-features" in twin_line.split("|")[4] and "[" in twin_line.split("|")[6]  # Δ with its CI
    assert "not in this run" in next(line for line in report.splitlines() if "keras-partial-finetune" in line)


def test_naming_one_on_another_backbone_is_a_clear_error(imagefolder_dir, tmp_path, capsys):
    code = main(["run", "keras-frozen-features", "--backbone", "resnet12", "--preset", "smoke", "--data-dir",
                 str(imagefolder_dir), "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "conv4 backbone only" in err and "keras-frozen-features" in err, err
