"""The results directory (layout and schema: harness/schema.py): record paths, atomic record writes,
and loading with validation. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError
from harness.io import atomic_write_bytes, atomic_write_json, read_json
from harness.schema import READABLE_VERSIONS, SCHEMA_VERSION, Environment, Record, RunHeader


@dataclass(frozen=True)
class RunResults:
    """One run directory as loaded and validated (``load_run``): its config.json, its environment.json (None
    when the run has none) and its records (sorted by file name), older schema versions upgraded."""

    directory: Path
    header: RunHeader
    environment: Environment | None
    records: list[Record]

    @property
    def name(self) -> str:
        """The run directory's name (the report's default name for the run)."""
        return self.directory.resolve().name


def record_path(run_dir: Path, strategy: str, shots: int, scale: float = 1.0) -> Path:
    """``records/<strategy>-<shots>shot.json``, with ``-x<scale>`` for a budget scale other than 1."""
    suffix = "" if scale == 1 else f"-x{scale:g}"
    return run_dir / "records" / f"{strategy}-{shots}shot{suffix}.json"


def predictions_path(strategy: str, shots: int, scale: float = 1.0) -> str:
    """``predictions/<strategy>-<shots>shot[-x<scale>].npz``, relative to the run directory."""
    return f"predictions/{record_path(Path(), strategy, shots, scale).stem}.npz"


def write_record(run_dir: Path, record: Record) -> Path:
    """The record, after its predictions file when it carries one (``Record.attach``): a record on disk
    always has its predictions beside it."""
    data = record.attached()
    if data is not None and record.predictions:
        atomic_write_bytes(run_dir / record.predictions, data, fault_point="predictions-write")
    path = record_path(run_dir, record.strategy, record.shots, record.budget_scale)
    atomic_write_json(path, record.to_json(), fault_point="record-write")
    return path


def read_header(run_dir: Path, versions: tuple[int, ...] = (SCHEMA_VERSION,)) -> RunHeader:
    """config.json of a run directory; ``versions``: the schema versions accepted (a resume needs this one,
    a report reads older ones too)."""
    data = read_json(run_dir / "config.json")
    if not isinstance(data, dict) or data.get("schema_version") not in versions:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise UsageError(f"{run_dir} was written with results schema {version}, this harness reads "
                         f"{SCHEMA_VERSION} (an incompatible harness); rerun it with this version or pass a new --out")
    return RunHeader.from_json(data, str(run_dir / "config.json"))


def load_run(run_dir: str | Path) -> RunResults:
    """A run directory's header, environment and records, validated against the schema; one-line errors."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UsageError(f"{run_dir} is not a run directory (no config.json); pass a folder written by "
                         f"`python -m harness run`")
    header = read_header(run_dir, READABLE_VERSIONS)
    env_path = run_dir / "environment.json"
    environment = Environment.from_json(read_json(env_path), str(env_path)) if env_path.is_file() else None
    records = [Record.from_json(read_json(p), str(p)) for p in sorted((run_dir / "records").glob("*.json"))]
    return RunResults(run_dir, header, environment, records)
