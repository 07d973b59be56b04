"""Writing a report: everything is computed first, then written (nothing is written on an error)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.registry import REPORT_FORMATS
from harness.report.cells import run_names
from harness.report.frame import leaderboard_frame
from harness.results import load_run


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


def write_report(run_dirs: list[str | Path], out: str | Path, fmt: str = "md", plots: bool = True) -> list[Path]:
    """Write the leaderboard in format ``fmt`` (see ``REPORT_FORMATS``) and, for formats that show them and
    unless ``plots`` is False, its PNG plots next to it."""
    renderer = REPORT_FORMATS.load(fmt)
    out = Path(out)
    runs, names = [load_run(d) for d in run_dirs], run_names(run_dirs)
    frame = leaderboard_frame(runs, names)
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
