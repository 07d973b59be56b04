"""Bring-your-own-pretrained-model rows (keras-pretrained, torch-pretrained and their -finetune rows) from
saved random-weight files (no network): a smoke run listed apart from the ranking, one-line exit-2 errors
for missing, unreadable, incompatible and code-carrying files, the content hash in the cache key, and the
contract checks of test_contract.py (which cannot run these rows without a file)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types

import numpy as np
import pytest
import torch
from protocols import protocol
from synthetic import MEAN, SOURCE_PROTOCOL, STD, index_keys, make_images

from harness import registry
from harness.augment import to_float
from harness.cli import main
from harness.episodes import EpisodeSet
from harness.phases import SourceData, Strategy
from harness.resolve import resolve_strategies, source_key
from harness.runconfig import RunConfig
from harness.suite import get_row

pytestmark = pytest.mark.slow  # end to end or training-heavy: `pytest -m "not slow"` skips it

ROWS = {"keras-pretrained": "vgg16.h5", "keras-pretrained-finetune": "vgg16.h5",
        "torch-pretrained": "resnet18.pt", "torch-pretrained-finetune": "resnet18.pt"}
FAST = ["--set", "keras-pretrained-finetune.steps=5", "--set", "torch-pretrained-finetune.steps=5"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The README's two example models with random weights, and files that must be refused."""
    import torchvision  # before TensorFlow (strategies/keras_backbone.py says why)

    from strategies.keras_backbone import keras

    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3)).save(root / "vgg16.h5")
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), root / "resnet18.pt")
    torch.save(resnet, root / "pickled.pt")  # a whole pickled module: code runs when it is loaded
    inputs = keras.Input((32, 32, 3))
    doubled = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    lambda_model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(doubled))
    lambda_model.save(root / "lambda.keras")
    lambda_model.save(root / "lambda.h5")
    gray = keras.Input((32, 32, 1))
    keras.Model(gray, keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(gray))).save(root / "gray.keras")
    (root / "notes.h5").write_text("not a model")
    (root / "notes.txt").write_text("not a model")
    torch.save({"conv1.weight": torch.zeros(3)}, root / "wrong.pt")
    return root


def sets(files, names) -> list[str]:
    return [arg for n in names for arg in ("--set", f"{n}.source.model={files / ROWS[n]}")]


def run_args(names, imagefolder_dir, tmp_path) -> list[str]:
    return ["run", *names, "--preset", "smoke", "--shots", "1", "--data-dir", str(imagefolder_dir),
            "--out", str(tmp_path / "r"), "--quiet"]


def test_both_rows_run_at_smoke_and_are_listed_apart(files, imagefolder_dir, tmp_path):
    report = tmp_path / "board.md"
    argv = run_args([*ROWS, "frozen-features"], imagefolder_dir, tmp_path) + sets(files, ROWS) + FAST
    assert main([*argv, "--report", str(report)]) == 0
    records = {r["strategy"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "r" / "records").glob("*"))}
    for name, file in ROWS.items():
        r = records[name]
        assert r["status"] == "ok" and r["family"] == "external" and r["source_images_processed"] == 0, name
        assert r["source_params"]["sha256"] == hashlib.sha256((files / file).read_bytes()).hexdigest()
        assert r["settings"]["external pretraining"].startswith(file)
    text = report.read_text()
    ranking, external = text.split("## 1-shot", 1)[1].split("### External pretraining (not ranked)", 1)
    assert "frozen-features" in ranking and not any(name in ranking for name in ROWS)
    external = external.split("##", 1)[0]
    for name in ROWS:
        line = next(line for line in external.splitlines() if f"[{name}]" in line)
        assert "| external " in line and "[" in line.split("|")[4]  # Δ to the best ranked row, with its CI
    assert "Δ to frozen-features" in external


def test_without_a_model_file_naming_one_is_an_error_and_all_skips_it(imagefolder_dir, tmp_path, capsys,
                                                                      monkeypatch):
    assert main(run_args(["torch-pretrained"], imagefolder_dir, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--set torch-pretrained.source.model=PATH" in err
    entries = registry.STRATEGIES.entries()
    monkeypatch.setattr(registry.STRATEGIES, "_entries", {n: entries[n] for n in ROWS})
    assert main(["run", "--all", *run_args([], imagefolder_dir, tmp_path)[1:]]) == 0
    for path in (tmp_path / "r" / "records").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["status"] == "skipped" and "needs your model file" in record["reason"], record


@pytest.mark.parametrize("name,file,message", [
    ("keras-pretrained", "missing.h5", "does not exist"),
    ("keras-pretrained", "notes.h5", "cannot be loaded as a Keras model"),
    ("keras-pretrained", "notes.txt", "is not a Keras model file"),
    ("keras-pretrained", "gray.keras", "takes inputs of shape"),
    ("torch-pretrained", "missing.pt", "does not exist"),
    ("torch-pretrained", "notes.txt", "PyTorch file"),
    ("torch-pretrained", "wrong.pt", "does not fit torchvision resnet18"),
])
def test_bad_model_files_exit_2_naming_the_file(name, file, message, files, imagefolder_dir, tmp_path, capsys):
    argv = run_args([name], imagefolder_dir, tmp_path) + ["--set", f"{name}.source.model={files / file}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(files / file) in err and message in err, err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("name,file", [("keras-pretrained", "lambda.keras"), ("keras-pretrained", "lambda.h5"),
                                       ("torch-pretrained", "pickled.pt")])
def test_a_file_that_needs_code_to_load_is_refused_unless_trusted(name, file, files, imagefolder_dir, tmp_path,
                                                                  capsys):
    given = ["--set", f"{name}.source.model={files / file}"]
    assert main(run_args([name], imagefolder_dir, tmp_path) + given) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs code to load" in err and "--trust-model-code" in err, err
    assert str(files / file) in err and "lifts only this refusal" in err
    # trusted per row (--set ...trust_model_code) or for the run (--trust-model-code): loaded and checked
    (row,) = resolve_strategies(RunConfig(strategies=[name], set=[given[1], f"{name}.source.trust_model_code=true"]),
                                {})[0]
    assert row.source.trust_model_code and row.source.sha256
    (run,) = resolve_strategies(RunConfig(strategies=[name], set=[given[1]], trust_model_code=True), {})[0]
    assert run.source.trust_model_code and run.source.sha256 == row.source.sha256


def test_the_cache_key_covers_the_file_content_and_a_given_hash_pins_it(files, tmp_path, imagefolder_dir, capsys):
    copy_a, copy_b = tmp_path / "a.pt", tmp_path / "b.pt"
    state = torch.load(files / "resnet18.pt", weights_only=True)
    torch.save(state, copy_a)
    torch.save({**state, "fc.bias": state["fc.bias"] + 1}, copy_b)  # another file (the same features)
    keys = []
    for path in (copy_a, copy_b, copy_a):
        phase = get_row("torch-pretrained").build().source
        phase = dataclasses.replace(phase, model=str(path))
        phase.check()
        keys.append(source_key(phase, 0, types.SimpleNamespace(fingerprint="data"), protocol(), 1))
    assert keys[0] != keys[1] and keys[0] == keys[2]
    argv = run_args(["torch-pretrained"], imagefolder_dir, tmp_path) + [
        "--set", f"torch-pretrained.source.model={copy_a}", "--set", "torch-pretrained.source.sha256=0123abcd"]
    assert main(argv) == 2
    assert "not the 0123abcd given in source.sha256" in capsys.readouterr().err


@pytest.fixture(scope="module")
def synthetic():
    images, labels = make_images(24, seed=3)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    base = labels < 5
    return nchw[base], torch.from_numpy(labels[base]), to_float(nchw[~base], MEAN, STD), labels[~base]


SHORTENED = {"keras-pretrained-finetune": {"steps": 20}, "torch-pretrained-finetune": {"steps": 5}}


def built(name: str, model: str, synthetic) -> tuple[Strategy, torch.nn.Module]:
    """The row on ``model`` (fine-tuning shortened), its source model through the cache round trip."""
    strategy = get_row(name).build()
    source = dataclasses.replace(strategy.source, model=model, trust_model_code="lambda" in model)
    adapter = dataclasses.replace(strategy.adapter, **SHORTENED.get(name, {}))
    strategy = dataclasses.replace(strategy, source=source, adapter=adapter)
    strategy.check()
    images, labels, _, _ = synthetic
    trained = source.train(SourceData(images, labels, 5, torch.device("cpu"), 0, **SOURCE_PROTOCOL), 1024)
    model = source.rebuild(source.spec(trained))
    model.load_state_dict({k: v.detach().cpu().clone() for k, v in trained.state_dict().items()})
    return strategy, model.eval()


@pytest.mark.parametrize("name", [*ROWS, "keras-pretrained+lambda"])
def test_contract(name, files, synthetic):
    row, _, variant = name.partition("+")
    strategy, model = built(row, str(files / ("lambda.keras" if variant else ROWS[row])), synthetic)
    _, _, pool, pool_labels = synthetic
    es = EpisodeSet.draw(pool_labels, (5, 6, 7, 8, 9), 5, 1, 6, 4, seed=1, data_fingerprint="",
                         content=index_keys(len(pool_labels)))
    tasks = es.batch(pool, MEAN, STD)
    before = copy.deepcopy(model.state_dict())
    ticks: list[int] = []
    logits = strategy.run_episodes(model, tasks, ticks.append)
    assert len(logits) == 4 and all(lg.shape == (30, 5) and torch.isfinite(lg).all() for lg in logits)
    assert sum(ticks) == 4 and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    again = strategy.run_episodes(model, tasks)  # determinism, and the loaded model is left as it was
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(logits, again, strict=True)), name
    for i in (1, 0):  # each episode alone, in a sealed batch of its own
        alone_tasks = dataclasses.replace(es, episodes=[es.episodes[i]]).batch(pool, MEAN, STD)
        (alone,) = strategy.run_episodes(model, alone_tasks)
        if row.startswith("keras-"):
            assert float((alone.argmax(1) == logits[i].argmax(1)).float().mean()) > 0.95, name
        else:
            assert torch.allclose(alone, logits[i], atol=1e-4), name
    accuracy = float(es.accuracies([lg.argmax(1) for lg in logits]).mean())
    assert accuracy > 0.6, f"{name}: 1-shot accuracy {accuracy:.2f} on easy synthetic episodes"


def test_unfreeze_from_must_leave_a_chain(files, synthetic):
    from harness.errors import UsageError

    strategy = get_row("keras-pretrained-finetune").build()
    source = dataclasses.replace(strategy.source, model=str(files / "vgg16.h5"))
    source.check()
    for bad in (40, -40):
        with pytest.raises(UsageError, match="unfreeze_from"):
            dataclasses.replace(strategy.adapter, unfreeze_from=bad).check(source)
    prefix, body = dataclasses.replace(strategy.adapter, unfreeze_from=0).split(source)
    assert prefix is None and len(body.layers) == 19  # every layer trains (the input layer is none)
    prefix, body = strategy.adapter.split(source)
    assert [layer.name for layer in body.layers[1:]] == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    assert np.asarray(body(prefix(x))).shape == (1, 1, 1, 512)
