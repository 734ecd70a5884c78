"""The leaderboard's report: one table of rows (``table``), the terminal table (``text``), leaderboard.md,
leaderboard.html and breakdown.md from templates (``pages``, ``templates/``), the charts (``charts``) and the
set of files written whole (``files``). The statistics it shows (best model, paired tests, Holm's correction)
are ``recsys.evaluation.stats``.
"""

from recsys.report.charts import plot_breakdown, plot_curve, png_metadata, pyplot
from recsys.report.files import (
    curve_rows,
    predictions_table,
    write_breakdown,
    write_csv,
    write_curve,
    write_files,
    write_leaderboard,
    write_per_user,
)
from recsys.report.pages import to_html, to_markdown
from recsys.report.table import (
    PAIR_METRIC_SET,
    RATING_METRIC_SET,
    MetricSet,
    ReportTable,
    best_models,
    build_table,
    metric_set,
    paired_tests,
)
from recsys.report.text import format_table

__all__ = [
    "PAIR_METRIC_SET",
    "RATING_METRIC_SET",
    "MetricSet",
    "ReportTable",
    "best_models",
    "build_table",
    "curve_rows",
    "format_table",
    "metric_set",
    "paired_tests",
    "plot_breakdown",
    "plot_curve",
    "png_metadata",
    "predictions_table",
    "pyplot",
    "to_html",
    "to_markdown",
    "write_breakdown",
    "write_csv",
    "write_curve",
    "write_files",
    "write_leaderboard",
    "write_per_user",
]
