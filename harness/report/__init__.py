"""Reports: pure functions of run directories' files (records, config.json, environment.json). No torch
and no strategy module is imported; what a report shows (code links, settings, descriptions) is written
into the records by the run.

- ranking (frame.py: one row per (strategy, shots, budget scale), ranked within each (shots, scale)) apart
  from rendering; expected units from config.json and rows for the missing ones (expected.py); the gain of
  the largest budget scale over the second largest (scales.py);
- the Markdown page (markdown.py: summary.py, tables.py, details.py), plots (plots.py, plots_cost.py,
  plots_calibration.py; their shared style and helpers in plot_style.py), the run comparison (compare.py);
  renderers behind one interface (formats.py), registered as ``md``, ``csv``, ``json``;
- ``write_report`` / ``write_comparison`` (write.py): compute everything, then write.
"""

from harness.registry import REPORT_FORMATS

REPORT_FORMATS.register_lazy("md", "harness.report.formats:MARKDOWN", description="the leaderboard page, with plots")
REPORT_FORMATS.register_lazy("csv", "harness.report.formats:CSV", description="the aggregated table, for pandas")
REPORT_FORMATS.register_lazy("json", "harness.report.formats:JSON", description="the aggregated table, for pandas")

from harness.report.cells import run_names  # noqa: E402
from harness.report.compare import compare_frame, write_comparison  # noqa: E402
from harness.report.frame import FRAME_COLUMNS, leaderboard_frame  # noqa: E402
from harness.report.write import NoRecords, write_predictions, write_report  # noqa: E402

__all__ = ["FRAME_COLUMNS", "NoRecords", "compare_frame", "leaderboard_frame", "run_names", "write_comparison",
           "write_predictions", "write_report"]
