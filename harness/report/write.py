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
    if not any(recs for _, _, recs in runs):
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
        images = render_plots(frame, runs[0][0]["protocol"], stem)
    text = renderer.render(runs, names, frame, out, list(images))
    write_files({out: text, **{out.parent / name: data for name, data in images.items()}})
    return [out, *(out.parent / name for name in images)]


def render_runs(run_dirs: list[str | Path], out: str | Path | None = None, plot_files: tuple[str, ...] = ()) -> str:
    """The Markdown leaderboard of run directories, as text."""
    runs, names = [load_run(d) for d in run_dirs], run_names(run_dirs)
    return REPORT_FORMATS.load("md").render(runs, names, leaderboard_frame(runs, names), Path(out or "report.md"),
                                            plot_files)
