"""Writing a report: everything is computed first, then written (nothing is written on an error)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.errors import UsageError
from harness.registry import REPORT_FORMATS
from harness.report.cells import run_names
from harness.report.expected import unit_label
from harness.report.frame import leaderboard_frame
from harness.results import load_run


class NoRecords(UsageError):
    """No run directory holds a single record: there is nothing to report (exit status 1)."""


def write_files(files: dict[Path, str | bytes]) -> None:
    for path, content in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        except OSError as e:
            raise UsageError(f"cannot write {path} ({e.strerror}); pass a writable --out FILE") from None


def missing_line(frame: pd.DataFrame) -> str | None:
    """One line naming the units config.json asks for that have no record, or None when none is missing."""
    absent = frame[frame["status"] == "missing"]
    if absent.empty:
        return None
    units = ", ".join(unit_label(r["strategy"], r["shots"], r["budget_scale"]) for r in absent.to_dict("records"))
    return (f"{len(absent)} unit(s) named in config.json have no record (the run is still going, was stopped, or a "
            f"record was removed); reported as missing: {units}")


def write_report(run_dirs: list[str | Path], out: str | Path, fmt: str = "md", plots: bool = True,
                 warn: Callable[[str], None] | None = None) -> list[Path]:
    """Write the leaderboard in format ``fmt`` (see ``REPORT_FORMATS``) and, for formats that show them and
    unless ``plots`` is False, its PNG plots next to it. Units without a record are rows marked missing
    (and ``warn`` gets one line naming them); with no record at all, raises NoRecords and writes nothing."""
    renderer = REPORT_FORMATS.load(fmt)
    out = Path(out)
    runs, names = [load_run(d) for d in run_dirs], run_names(run_dirs)
    if not any(run.records for run in runs):
        where = ", ".join(str(Path(d) / "records") for d in run_dirs)
        raise NoRecords(f"no record in {where} yet (the run has not finished a unit, or its records were removed); "
                        f"nothing to report")
    frame = leaderboard_frame(runs, names)
    line = missing_line(frame)
    if line and warn:
        warn(line)
    images: dict[str, bytes] = {}
    if plots and renderer.plots:
        from harness.report.plots import render_plots

        stem = names[0] if len(names) == 1 else f"{names[0]}+{len(names) - 1}"
        images = render_plots(frame, runs[0].header.protocol, stem)
    text = renderer.render(runs, names, frame, out, list(images))
    write_files({out: text, **{out.parent / name: data for name, data in images.items()}})
    return [out, *(out.parent / name for name in images)]


def prediction_frame(run_dirs: list[str | Path], warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per query of every successful record with predictions (harness/predictions.py ``rows``): run,
    strategy, shots, budget scale, replicate, training seed, episode, query, true and predicted label and class,
    correct, the probability of each label ``p0..`` and the class of each label ``class0..``. A predictions file
    missing or changed since its record was written (sha256): a one-line error."""
    from harness.predictions import QueryPredictions, digest

    frames, without = [], []
    for name, run_dir in zip(run_names(run_dirs), run_dirs, strict=True):
        for r in load_run(run_dir).records:
            if r.status != "ok":
                continue
            if not r.predictions:
                without.append(unit_label(r.strategy, r.shots, r.budget_scale))
                continue
            path = Path(run_dir) / r.predictions
            if not path.is_file():
                raise UsageError(f"{path} is missing (its record names it); restore it, or rerun the unit with "
                                 f"--resume after deleting its record")
            if digest(path.read_bytes()) != r.predictions_sha256:
                raise UsageError(f"{path} is not the file its record was written with (sha256 differs); restore it, "
                                 f"or rerun the unit with --resume after deleting its record")
            columns = QueryPredictions.load(path).rows()
            frames.append(pd.DataFrame({"run": name, "strategy": r.strategy, "shots": r.shots,
                                        "budget_scale": r.budget_scale, **columns}))
    if not frames:
        where = ", ".join(str(d) for d in run_dirs)
        raise UsageError(f"no per-query predictions in {where} (records written before they were kept); rerun the "
                         f"strategies to get them")
    if without and warn:
        warn(f"{len(without)} record(s) have no per-query predictions (written before they were kept), left out: "
             f"{', '.join(without)}")
    return pd.concat(frames, ignore_index=True)


def write_predictions(run_dirs: list[str | Path], out: str | Path, fmt: str,
                      warn: Callable[[str], None] | None = None) -> tuple[Path, int]:
    """``report --predictions``: the per-query rows as ``csv`` or ``json`` (an array of row objects); (file, rows)."""
    if fmt not in ("csv", "json"):
        raise UsageError(f"--predictions writes one row per query as csv or json, not {fmt}; add --format csv or "
                         f"--format json")
    frame = prediction_frame(run_dirs, warn)
    text = frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records") + "\n"
    write_files({Path(out): text})
    return Path(out), len(frame)
