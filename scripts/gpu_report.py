"""The GPU check's table, from a run directory and a pytest-benchmark JSON file (scripts/gpu_check.sh).

    python scripts/gpu_report.py RUN_DIR [--benchmarks FILE] [--wall-seconds S]

Prints the device and settings, each source phase's throughput (images processed per second after its
warm-up step), each strategy's ms per episode (after one warm-up episode) and peak memory, the benchmark
figures (meta-training tasks/s, batched episode phases) and the run's wall time, with the paper preset's
source time estimated from the measured throughputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.presets import get_preset  # noqa: E402
from harness.results import load_run  # noqa: E402
from harness.schema import Record  # noqa: E402


def source_rows(records: list[Record]) -> list[list]:
    seen: dict[str, list] = {}
    for r in records:
        if r.status != "ok" or not r.source_keys:
            continue
        key = r.source_keys[0]
        if key not in seen:
            per_shots = "Maml" in r.source_phase or "Protonet" in r.source_phase
            seen[key] = [r.source_phase + (f" ({r.shots}-shot)" if per_shots else ""),
                         r.budget_group, f"{r.source_images_per_second:,.0f}", f"{r.source_seconds:.1f}",
                         f"{r.source_peak_memory_mb:,.0f}", "cached" if r.source_cached else "trained"]
    return sorted(seen.values())


def strategy_rows(records: list[Record]) -> list[list]:
    rows = []
    for r in sorted(records, key=lambda r: (r.strategy, r.shots)):
        if r.status != "ok":
            rows.append([r.strategy, r.shots, r.status, "-", "-"])
            continue
        rows.append([r.strategy, r.shots, f"{100 * r.accuracy:.2f} ± {100 * r.ci95:.2f}",
                     f"{r.ms_per_episode:.2f}", f"{r.episode_peak_memory_mb:,.0f}"])
    return rows


def benchmark_rows(path: Path) -> list[list]:
    rows = []
    for b in json.loads(path.read_text())["benchmarks"]:
        info, mean = b.get("extra_info", {}), b["stats"]["mean"]
        if "tasks_per_call" in info:
            per = info["tasks_per_call"] / mean
            rows.append([b["name"], f"{per:,.1f} tasks/s", f"{1000 / per:.2f} ms/task"])
        elif "images_per_second" in info:
            rows.append([b["name"], f"{info['images_per_second']:,.0f} img/s",
                         f"{info.get('base_images_per_second', 0):,.0f} base img/s"])
    return rows


def paper_estimate(records: list[Record]) -> float:
    """Seconds the paper preset's source phases would take at the measured throughputs (one replicate)."""
    paper = get_preset("paper").source_images
    seen, total = set(), 0.0
    for r in records:
        if r.status == "ok" and r.source_keys and r.source_keys[0] not in seen \
                and r.source_images_processed:  # rows that train nothing (external) cost nothing here
            seen.add(r.source_keys[0])
            total += paper.get(r.budget_group, 0) / max(r.source_images_per_second, 1e-9)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--benchmarks", type=Path, default=None)
    parser.add_argument("--wall-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    run = load_run(args.run_dir)
    records, env, protocol = run.records, run.environment, run.header.protocol
    if env is None:
        raise SystemExit(f"{args.run_dir} has no environment.json; pass a run directory written by `harness run`")
    det = env.determinism
    print(f"device: {env.device} | torch {env.torch} | precision {env.precision} | deterministic "
          f"{det.get('deterministic_algorithms')} | TF32 {det.get('tf32_matmul')} | preset "
          f"{protocol['preset']}, {protocol['episodes']} episodes")
    print(tabulate(source_rows(records), headers=["source phase", "budget group", "img/s", "seconds",
                                                  "peak MB", ""], tablefmt="github"))
    print(tabulate(strategy_rows(records), headers=["strategy", "shots", "accuracy (%)", "ms / episode",
                                                    "episode peak MB"], tablefmt="github"))
    if args.benchmarks and args.benchmarks.is_file():
        print(tabulate(benchmark_rows(args.benchmarks), headers=["benchmark", "throughput", ""], tablefmt="github"))
    if args.wall_seconds is not None:
        print(f"run --all wall time: {args.wall_seconds:.0f} s")
    print(f"paper preset, source phases at these throughputs: about {paper_estimate(records) / 3600:.1f} h "
          f"(one replicate; episodes not included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
