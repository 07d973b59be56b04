"""Report renderers behind one interface: ``render(runs, names, frame, out, plot_files) -> text``.
Registered in ``harness.registry.REPORT_FORMATS`` (``md``, ``csv``, ``json``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.results import RunResults


@dataclass(frozen=True)
class Renderer:
    """A report format: its renderer and whether the PNG plots are written next to it."""

    name: str
    plots: bool

    def render(self, runs: list[RunResults], names: list[str], frame: pd.DataFrame, out: Path,
               plot_files: Sequence[str]) -> str:
        raise NotImplementedError


class MarkdownRenderer(Renderer):
    def render(self, runs, names, frame, out, plot_files) -> str:
        from harness.report.markdown import render_markdown

        return render_markdown(runs, out, plot_files, names, frame)


class CsvRenderer(Renderer):
    """The aggregated table, one row per strategy and shot setting (accuracies as fractions)."""

    def render(self, runs, names, frame, out, plot_files) -> str:
        import json

        nested = ("reliability", "class_accuracy", "confusion")  # dicts: one JSON text per cell
        return frame.assign(**{c: frame[c].map(lambda v: v if v is None else json.dumps(v)) for c in nested
                               if c in frame}).to_csv(index=False)


class JsonRenderer(Renderer):
    def render(self, runs, names, frame, out, plot_files) -> str:
        return frame.to_json(orient="records", indent=2) + "\n"


MARKDOWN, CSV, JSON = MarkdownRenderer("md", True), CsvRenderer("csv", False), JsonRenderer("json", False)
