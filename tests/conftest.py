from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)

from synthetic import NOVEL_PER_CLASS, write_batches, write_imagefolder  # noqa: E402


@pytest.fixture(scope="session")
def imagefolder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("imagefolder"), test_per_class=NOVEL_PER_CLASS, ext="png")


@pytest.fixture(scope="session")
def batches_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_batches(tmp_path_factory.mktemp("batches"), test_per_class=NOVEL_PER_CLASS)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's cache or downloads anything."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.setattr("harness.datasets.cifar10._download", _no_internet)
    monkeypatch.setattr("harness.datasets.cifar100._download", _no_internet)


def _no_internet(root: Path) -> None:
    raise OSError("no internet in tests")


@pytest.fixture
def register_strategy():
    """Register an adapter class as a strategy over a pretrainer for one test: ``register_strategy(cls, name)``."""
    from harness.registry import ADAPTERS, STRATEGIES
    from harness.suite import register

    names: list[str] = []

    def add(cls: type, name: str, source: str = "supervised") -> str:
        register(cls, source=source, name=name)
        names.append(name)
        return name

    yield add
    for name in names:
        STRATEGIES.unregister(name)
        ADAPTERS.unregister(name)
