"""Devices and honest measurements: synchronised clocks, each phase's own peak memory, determinism and
precision settings (and the record of what was in force).

Peak memory is a phase's own: on CUDA ``max_memory_allocated`` minus what was allocated when the phase
started (the resident data and models excluded); on a CPU the resident set sampled every few
milliseconds in a thread, minus the resident set when the phase started.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from typing import Any

import torch

from harness.errors import UsageError, unknown

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES and not name.startswith("cuda:"):
        if name.lower() in ("gpu", "gpus", "nvidia"):  # difflib would suggest 'cpu'
            raise UsageError(f"unknown device {name!r} (did you mean 'cuda'?); choose from: {', '.join(DEVICES)}")
        raise unknown("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} asked for, but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU ({cpu}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    """The process's current resident set (Linux /proc; elsewhere the peak so far from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024


class _RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, rss_bytes(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss_bytes())


class Stopwatch:
    """Wall time of a block of device work, synchronised at both ends, and the block's own peak memory
    (above what was allocated when it started)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.peak_memory_mb = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = rss_bytes()
            self._sampler = _RssSampler()
            self._sampler.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._sampler.stop()
        self.peak_memory_mb = max(0, peak - self._base) / 2**20


def configure(deterministic: bool) -> dict[str, Any]:
    """Set (or lift) deterministic algorithms for this process; return what is in force, for the record.
    ``CUBLAS_WORKSPACE_CONFIG`` must be set before cuBLAS starts: this runs in ``prepare`` (and in each worker
    process) before any CUDA work."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    # subnormal floats are about 100x slower on x86 CPUs; a backward pass whose gradients underflow (a source
    # phase that already fits its data) could take seconds a step. Flushed to zero on every run (in the cache key)
    torch.set_flush_denormal(True)
    return determinism_settings()


def determinism_settings() -> dict[str, Any]:
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"), "flush_denormal": True}


def autocast(device: torch.device, precision: str) -> Any:
    """The source phases' precision, the same meaning on every device: fp32, or bf16 autocast."""
    if precision not in PRECISIONS:
        raise unknown("precision", precision, PRECISIONS)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
