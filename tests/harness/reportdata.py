"""A small fixed results set in the real on-disk format, for the report, plot and CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness import RESULTS_SCHEMA_VERSION
from harness.cache import atomic_write_json
from harness.results import ci95, write_record

EPISODES = 20
BASE_FIELDS = {"strategy", "family", "status", "reason", "shots", "ways", "queries", "episodes", "split", "seed",
               "episode_phase", "params", "settings", "source_phase", "source_params", "device", "torch_version"}
QUERIES = 15  # 5 ways x 3 queries


def episodes(offset: int, pattern: list[int]) -> list[float]:
    """Per-episode accuracies: a fixed base pattern (correct queries out of 15) plus a per-episode change."""
    base = [7 + (i * 7) % 5 for i in range(EPISODES)]
    return [round((b + offset + pattern[i % len(pattern)]) / QUERIES, 6) for i, b in enumerate(base)]


def record(strategy: str, shots: int, accs: list[float] | None, fingerprint: str, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "strategy": strategy, "family": "transfer", "status": "ok", "reason": None, "shots": shots, "ways": 5,
        "queries": 3, "episodes": EPISODES, "split": "cifar10-5-5", "seed": 0,
        "episode_fingerprint": fingerprint, "source_phase": "SupervisedPretraining", "source_params": {},
        "episode_phase": "linear probe", "params": {}, "settings": {}, "source_budget_images": 150000,
        "source_seconds": 300.0, "source_images_per_second": 500.0, "source_peak_memory_mb": 1500.0,
        "source_device": "cpu", "source_cached": False, "source_metrics": {}, "metrics": {},
        "episode_seconds": 2.0, "ms_per_episode": 100.0, "query_images_per_second": 150.0,
        "episode_peak_memory_mb": 1600.0, "device": "CPU (test, 2 threads)", "torch_version": "2.4.0",
    }
    if accs is not None:
        arr = np.asarray(accs)
        rec.update(accuracy=float(arr.mean()), ci95=ci95(arr), episode_accuracies=accs)
    rec.update(extra)
    if rec["status"] != "ok":  # like the runner's failed and skipped records: no measurements
        rec = {k: v for k, v in rec.items() if k in BASE_FIELDS}
    return rec


def fixed_records(fingerprint: str = "fp") -> list[dict[str, Any]]:
    """1-shot: frozen-features best, partial-finetune tied with it (noisy, not significant), third-party-probe
    significantly worse (with settings and a robust accuracy), one failed and one skipped strategy.
    5-shot: partial-finetune best, frozen-features significantly worse, third-party-probe tied."""
    f1, f5 = f"{fingerprint}-1shot-0123456789abcdef", f"{fingerprint}-5shot-fedcba9876543210"
    settings = {"BN": "transductive", "order": "second", "inner steps": 10}
    return [
        record("frozen-features", 1, episodes(0, [1, 0, 0, 1]), f1, ms_per_episode=40.0),
        record("partial-finetune", 1, episodes(0, [1, -1, 2, -2, 0]), f1, episode_phase="fine-tune last block",
               settings={"BN": "inductive", "steps": 100}, ms_per_episode=400.0),
        record("third-party-probe", 1, episodes(-2, [0, -1]), f1, family="meta-learning",
               source_phase="MetaTraining", episode_phase="inner-loop SGD", settings=settings,
               metrics={"robust_accuracy": 0.3, "robust_ci95": 0.02}, source_images_per_second=900.0,
               source_budget_images=60000, ms_per_episode=20.0),
        record("broken-strategy", 1, None, f1, status="failed", reason="RuntimeError: out of memory"),
        record("keras-thing", 1, None, f1, status="skipped", source_phase=None, episode_phase=None,
               reason="needs tensorflow (pip install -e \".[tensorflow]\")"),
        record("frozen-features", 5, episodes(1, [0, 0, -1]), f5, ms_per_episode=50.0),
        record("partial-finetune", 5, episodes(2, [0, 1, 0]), f5, episode_phase="fine-tune last block",
               settings={"BN": "inductive", "steps": 100}, ms_per_episode=600.0),
        record("third-party-probe", 5, episodes(2, [2, -3, 1, -1, 2, -2]), f5, family="meta-learning",
               source_phase="MetaTraining", episode_phase="inner-loop SGD", settings=settings,
               metrics={"robust_accuracy": 0.45, "robust_ci95": 0.03}, source_images_per_second=900.0,
               source_budget_images=60000, ms_per_episode=25.0),
    ]


def write_run(run_dir: Path, records: list[dict[str, Any]], seed: int = 0, ways: int = 5,
              command: str = "python -m harness run --all --preset quick") -> Path:
    config = {"schema_version": RESULTS_SCHEMA_VERSION, "harness_version": "0.1.0",
              "protocol": {"preset": "quick", "split": "cifar10-5-5", "ways": ways, "queries": 3,
                           "episodes": EPISODES, "seed": seed},
              "shots": sorted({r["shots"] for r in records}),
              "split_description": "base (train images): airplane, automobile, bird, cat, deer; novel (test "
                                   "images): dog, frog, horse, ship, truck",
              "novel_classes": 5, "preset_budgets": {"pretrain": 150000, "meta": 60000}, "strategies": {}}
    env = {"harness_version": "0.1.0", "python": "3.11.7", "torch": "2.4.0", "torchvision": "0.19.0",
           "numpy": "1.26.4", "platform": "Linux", "device": "CPU (test, 2 threads)", "device_type": "cpu",
           "threads": 2, "git_commit": "abc1234def56", "dataset": "CIFAR-10 (JPEG copy; pixels differ slightly "
           "from the original batches)", "data_source": "/data/cifar", "data_layout": "imagefolder-jpg",
           "data_fingerprint": "0123456789abcdef0123", "command": command}
    atomic_write_json(run_dir / "config.json", config)
    atomic_write_json(run_dir / "environment.json", env)
    for r in records:
        write_record(run_dir, r)
    return run_dir
