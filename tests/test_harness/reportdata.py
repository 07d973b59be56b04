"""A small fixed results set in the real on-disk format (harness.schema's dataclasses), for the report,
plot and CLI tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.io import atomic_write_json
from harness.results import write_record
from harness.schema import Environment, Record, RunHeader
from harness.stats import COVERS_EPISODES, ci95

EPISODES = 20
QUERIES = 15  # 5 ways x 3 queries
DEVICE = "CPU (test, 2 threads)"
MEASUREMENTS = ("source_keys", "source_budget_images", "source_images_processed", "source_flops",
                "source_flops_method", "source_seconds", "source_images_per_second", "source_peak_memory_mb",
                "source_device", "source_cached", "episode_seconds", "ms_per_episode", "episode_flops",
                "query_images_per_second", "episode_peak_memory_mb", "episode_fingerprint", "ci_covers",
                "replicate_seeds", "replicate_accuracies")
COMMAND = ("python", "-m", "harness", "run", "--all", "--preset", "quick")


def episodes(offset: int, pattern: list[int]) -> list[float]:
    """Per-episode accuracies: a fixed base pattern (correct queries out of 15) plus a per-episode change."""
    base = [7 + (i * 7) % 5 for i in range(EPISODES)]
    return [round((b + offset + pattern[i % len(pattern)]) / QUERIES, 6) for i, b in enumerate(base)]


def record(strategy: str, shots: int, accs: list[float] | None, fingerprint: str, **extra: Any) -> Record:
    rec = Record(
        strategy=strategy, family="transfer", status="ok", shots=shots, ways=5, queries=3, episodes=EPISODES,
        dataset="cifar10-5-5", seed=0, episode_fingerprint=fingerprint, backbone="conv4",
        source_phase="SupervisedPretraining", source_description="supervised conv4 pretraining",
        source_params={}, episode_phase="linear probe", params={}, settings={},
        source_keys=["SupervisedPretraining-k"], budget_group="pretrain", source_budget_images=150000,
        source_images_processed=150016, source_seconds=300.0, source_images_per_second=500.0,
        source_peak_memory_mb=1500.0, source_device=DEVICE, source_cached=False, source_metrics={}, metrics={},
        episode_seconds=2.0, ms_per_episode=100.0, query_images_per_second=150.0, episode_peak_memory_mb=1600.0,
        device=DEVICE, torch_version="2.4.0",
        code={"source": "strategies/supervised.py", "adapter": "strategies/probe.py"})
    if accs is not None:
        arr = np.asarray(accs)
        rec = dataclasses.replace(rec, accuracy=float(arr.mean()), ci95=ci95(arr), episode_accuracies=accs,
                                  ci_covers=COVERS_EPISODES, replicate_seeds=[0],
                                  replicate_accuracies=[float(arr.mean())])
    rec = dataclasses.replace(rec, **extra)
    if rec.status != "ok":  # like the runner's failed and skipped records: no measurements
        rec = dataclasses.replace(rec, **dict.fromkeys(MEASUREMENTS), source_metrics={}, metrics={})
    return rec


def fixed_records(fingerprint: str = "fp") -> list[Record]:
    """1-shot: frozen-features best, partial-finetune tied with it (noisy, not significant), third-party-probe
    significantly worse (with settings and a robust accuracy), one failed and one skipped strategy.
    5-shot: partial-finetune best, frozen-features significantly worse, third-party-probe tied; the failed
    strategy failed again and the skipped one is skipped again. No FLOPs (null, as in older records)."""
    f1, f5 = f"{fingerprint}-1shot-0123456789abcdef", f"{fingerprint}-5shot-fedcba9876543210"
    settings = {"BN": "transductive", "order": "second", "inner steps": 10}
    finetune = {"source": "strategies/supervised.py", "adapter": "strategies/finetune.py"}
    outside = {"source": "elsewhere/meta.py", "adapter": "elsewhere/probe.py"}  # not in this checkout: no link
    meta = dict(family="meta-learning", source_phase="MetaTraining", source_description="meta-training",
                episode_phase="inner-loop SGD", settings=settings, source_images_per_second=900.0,
                source_budget_images=60000, source_images_processed=60000, budget_group="meta", code=outside)
    skipped = dict(status="skipped", source_phase=None, source_description=None, episode_phase=None,
                   budget_group=None, reason="needs tensorflow (pip install -e \".[tensorflow]\")", code={})
    return [
        record("frozen-features", 1, episodes(0, [1, 0, 0, 1]), f1, ms_per_episode=40.0),
        record("partial-finetune", 1, episodes(0, [1, -1, 2, -2, 0]), f1, episode_phase="fine-tune last block",
               settings={"BN": "inductive", "steps": 100}, ms_per_episode=400.0, code=finetune),
        record("third-party-probe", 1, episodes(-2, [0, -1]), f1, **meta, ms_per_episode=20.0,
               metrics={"clean_and_robust_accuracy": 0.3, "clean_and_robust_ci95": 0.02}),
        record("broken-strategy", 1, None, f1, status="failed", reason="RuntimeError: out of memory"),
        record("keras-thing", 1, None, f1, **skipped),
        record("frozen-features", 5, episodes(1, [0, 0, -1]), f5, ms_per_episode=50.0),
        record("partial-finetune", 5, episodes(2, [0, 1, 0]), f5, episode_phase="fine-tune last block",
               settings={"BN": "inductive", "steps": 100}, ms_per_episode=600.0, code=finetune),
        record("third-party-probe", 5, episodes(2, [2, -3, 1, -1, 2, -2]), f5, **meta, ms_per_episode=25.0,
               metrics={"clean_and_robust_accuracy": 0.45, "clean_and_robust_ci95": 0.03}),
        record("broken-strategy", 5, None, f5, status="failed", reason="RuntimeError: out of memory"),
        record("keras-thing", 5, None, f5, **skipped),
    ]


def write_run(run_dir: Path, records: list[Record], seed: int = 0, ways: int = 5,
              command: Sequence[str] = COMMAND, preset: str = "quick", strategies: Sequence[str] | None = None,
              shots: Sequence[int] | None = None, scales: Sequence[float] | None = None,
              data_label: str = "CIFAR-10 (JPEG q75 copy)") -> Path:
    """A run directory as the runner writes it; config.json names the records' strategies, shots and budget
    scales unless ``strategies`` / ``shots`` / ``scales`` say otherwise (to leave units without a record)."""
    names = list(dict.fromkeys(r.strategy for r in records)) if strategies is None else list(strategies)
    skipped = {r.strategy for r in records if r.status == "skipped"}
    header = RunHeader(harness_version="0.2.0",
                       protocol={"preset": preset, "dataset": "cifar10-5-5", "ways": ways, "queries": 3,
                                 "episodes": EPISODES, "seed": seed},
                       shots=sorted({r.shots for r in records} if shots is None else shots),
                       budget_scales=sorted({r.budget_scale for r in records} if scales is None else scales),
                       dataset_description="base (train images): airplane, automobile, bird, cat, deer; novel "
                                           "(test images): dog, frog, horse, ship, truck",
                       novel_classes=5, preset_budgets={"pretrain": 150000, "meta": 60000},
                       strategies={n: None if n in skipped else {"source": {"phase": "x"}} for n in names}, run={})
    env = Environment(harness_version="0.2.0", code_version="abc1234def56", python="3.11.7", torch="2.4.0",
                      torchvision="0.19.0", numpy="1.26.4", platform="Linux", device=DEVICE,
                      device_type="cpu", threads=2, precision="fp32",
                      determinism={"deterministic_algorithms": True, "tf32_matmul": False,
                                   "cublas_workspace_config": None},
                      dataset=data_label, data_source="/data/cifar", data_layout="imagefolder-jpg",
                      data_fingerprint="0123456789abcdef0123", command=list(command))
    atomic_write_json(run_dir / "config.json", header.to_json())
    atomic_write_json(run_dir / "environment.json", env.to_json())
    for r in records:
        write_record(run_dir, dataclasses.replace(r, seed=seed, ways=ways))
    return run_dir


SCALES = (0.25, 0.5, 1.0)


def scaled_records(fingerprint: str = "fp") -> list[Record]:
    """Three strategies at budget scales 0.25, 0.5 and 1, with FLOPs. At both shot settings
    frozen-features still rises from x0.5 to x1 (significantly), partial-finetune is flat from x0.5 to x1,
    and protonet is cheap (a quarter of the source FLOPs) and tied with the best at x1."""
    curves = {  # strategy: (per-scale offsets, pattern, source TFLOP at x1, episode GFLOP)
        "frozen-features": ((-3, -2, 0), [1, 0, 0, 1], 10.0, 2.0),  # x1: another pattern, +2 on average
        "partial-finetune": ((-2, 0, 0), [0, 1, -1], 10.0, 40.0),
        "protonet": ((-1, 0, 0), [1, -1, 2, 0], 2.5, 1.0),
    }
    records = []
    for shots in (1, 5):
        fp = f"{fingerprint}-{shots}shot"
        for name, (offsets, pattern, tflop, gflop) in curves.items():
            for scale, offset in zip(SCALES, offsets, strict=True):
                noise = pattern if scale != 1 else [2, 0, 1, 0, 2] if name == "frozen-features" else pattern[::-1]
                accs = episodes(offset + (2 if shots == 5 else 0), noise)
                records.append(record(
                    name, shots, accs, fp, budget_scale=scale, source_flops=tflop * scale * 1e12,
                    source_flops_method="FlopCounterMode, one training step x images processed",
                    episode_flops=gflop * 1e9 * shots, source_images_processed=int(150016 * scale),
                    source_budget_images=int(150000 * scale), source_seconds=300.0 * scale,
                    family="meta-learning" if name == "protonet" else "transfer",
                    code={"source": "strategies/supervised.py", "adapter": "strategies/probe.py"}))
    return records


def render_page(run_dirs: Sequence[str | Path], out: str | Path | None = None, plot_files: Sequence[str] = ()) -> str:
    """The Markdown leaderboard of run directories, as text: what ``report`` writes (the registered ``md``
    renderer on the leaderboard frame; ``out``: where it would be written, for the code links)."""
    from harness.registry import REPORT_FORMATS
    from harness.report import leaderboard_frame, run_names
    from harness.results import load_run

    runs, names = [load_run(d) for d in run_dirs], run_names(run_dirs)
    return REPORT_FORMATS.load("md").render(runs, names, leaderboard_frame(runs, names), Path(out or "report.md"),
                                            plot_files)
