"""Benchmarks run on ``$HARNESS_BENCH_DEVICE`` (default cpu; scripts/gpu_check.sh sets cuda)."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def device() -> torch.device:
    name = os.environ.get("HARNESS_BENCH_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"HARNESS_BENCH_DEVICE={name} but no CUDA GPU is available")
    return torch.device(name)


@pytest.fixture(scope="session")
def episodes(device: torch.device) -> int:
    """Episodes per timed call: enough to amortise a batched GPU path, few on a CPU."""
    return 200 if device.type == "cuda" else 4


@pytest.fixture(scope="session")
def synchronized(device: torch.device):
    """``synchronized(fn)``: fn with the device synchronised after it, so a timing covers the device work."""
    def wrap(fn):
        def call():
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return result

        return call

    return wrap


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every benchmark is ``slow`` (training-heavy): ``pytest -m "not slow"`` leaves them out."""
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.slow)
