"""The results directory: schema, atomic writes, loading.

    RUN_DIR/
      config.json        resolved protocol and strategy hyperparameters (schema_version, harness version)
      environment.json   versions, device, git commit, data source and fingerprint
      records/<strategy>-<shots>shot.json   one record per (strategy, shots); see RECORD_FIELDS
      run.log            tracebacks of failed strategies

Every file is written to a temporary name and renamed, so a crash never leaves a half-written record.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from harness import RESULTS_SCHEMA_VERSION
from harness.cache import atomic_write_json
from harness.errors import UsageError

# field -> meaning; the README's schema table is generated from the same words
RECORD_FIELDS: dict[str, str] = {
    "schema_version": "version of this layout",
    "strategy": "registered strategy name",
    "family": "transfer / meta-learning / self-supervised / adversarial",
    "status": "ok, or failed (then `reason` says why)",
    "reason": "one-line reason for a failure, else null",
    "shots": "K: support images per class",
    "ways": "N: classes per episode",
    "queries": "query images per class",
    "episodes": "number of episodes E",
    "split": "named base/novel split",
    "seed": "run seed; episodes depend on (seed, shots, index) only",
    "episode_fingerprint": "sha256 of all episode indices and labels (equal => same episodes)",
    "accuracy": "mean query accuracy over episodes (0..1)",
    "ci95": "1.96 * std / sqrt(E) (0..1)",
    "episode_accuracies": "accuracy of each episode, in episode order",
    "metrics": "further scored outputs, e.g. robust_accuracy / robust_ci95 (0..1)",
    "source_phase": "source phase class name",
    "source_params": "source phase hyperparameters",
    "source_key": "cache key of the source model",
    "source_budget_images": "images processed by the source phase",
    "source_seconds": "source phase wall time (when trained; cached rows repeat the original)",
    "source_images_per_second": "source phase throughput",
    "source_peak_memory_mb": "CUDA max allocated, or peak process RSS on CPU, during the source phase",
    "source_device": "device the source phase ran on",
    "source_cached": "true when this record reused a source model (from the disk cache or trained earlier in the run)",
    "source_metrics": "measurements the source phase reported (e.g. peak memory of a meta-step)",
    "episode_phase": "what the strategy does per support set",
    "params": "episode-phase hyperparameters",
    "settings": "protocol settings shown in the leaderboard (BN mode, inner steps...)",
    "episode_seconds": "wall time of all episodes (synchronised)",
    "ms_per_episode": "episode_seconds / episodes * 1000",
    "query_images_per_second": "queries scored per second of episode phase",
    "episode_peak_memory_mb": "peak memory during the episode phase (as above)",
    "device": "device name (GPU model or CPU)",
    "torch_version": "torch.__version__",
}


def ci95(accuracies: np.ndarray) -> float:
    """Half-width of the normal 95% interval of the mean: 1.96 * std / sqrt(E) (population std)."""
    return float(1.96 * np.std(accuracies) / math.sqrt(len(accuracies)))


def record_path(run_dir: Path, strategy: str, shots: int) -> Path:
    return run_dir / "records" / f"{strategy}-{shots}shot.json"


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(run_dir, record["strategy"], record["shots"])
    atomic_write_json(path, {"schema_version": RESULTS_SCHEMA_VERSION, **record}, fault_point="record-write")
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read {path} ({e}); it is not a results file of this harness") from None


def load_run(run_dir: str | Path) -> tuple[dict, dict, list[dict]]:
    """(config, environment, records) of a run directory; clear errors for anything else."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UsageError(f"{run_dir} is not a run directory (no config.json); pass a folder written by "
                         f"`python -m harness run`")
    config = read_json(run_dir / "config.json")
    if config.get("schema_version") != RESULTS_SCHEMA_VERSION:
        raise UsageError(f"{run_dir} was written with results schema {config.get('schema_version')}, this "
                         f"harness reads {RESULTS_SCHEMA_VERSION}; rerun it with this version")
    environment = read_json(run_dir / "environment.json") if (run_dir / "environment.json").is_file() else {}
    records = [read_json(p) for p in sorted((run_dir / "records").glob("*.json"))]
    return config, environment, records
