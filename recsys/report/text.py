"""The leaderboard as a fixed-width table for the terminal (``format_table``)."""

from __future__ import annotations

from recsys.leaderboard import Leaderboard
from recsys.report.table import (
    OVER_CONSENSUS,
    ReportTable,
    build_table,
    fallback_line,
    fmt,
    interval,
    protocol_line,
)

#: the width of a metric column that shows its interval
CI_WIDTH = 26


def format_table(board: Leaderboard, table: ReportTable | None = None) -> str:
    """The terminal's table: which model to pick per task first, then a line per measured row (``users``: the
    users the primary metric averaged) and the rows that were not measured, one line per shared reason."""
    table = table or build_table(board)
    ms = table.metrics
    lines = [
        f"dataset: {board.dataset.name}" + ("  [SIMULATED data]" if board.dataset.simulated else ""),
        f"run {board.run_id}: {protocol_line(table)}; fit on {board.fit_split}",
        f"splits: {board.dataset.describe_splits(board.fit_split)}",
    ]
    picks = table.picks()
    if picks:
        excluded = f"; {table.ceiling}, the ceiling, excluded" if table.ceiling else ""
        lines.append(
            f"best per task by {ms.primary}{excluded} (next: the runner-up, p: Wilcoxon over users, "
            f"Holm-corrected over the task's models):"
        )
        lines += [f"  {pick.text()}" for pick in picks]
    measured = table.measured.to_dict("records")
    width = max([27] + [len(r["label"]) + 1 for r in measured])
    head = f"{'model':<{width}} {'split':<24} {'users':>5} "
    head += " ".join(f"{m + ' [95% CI]':>{CI_WIDTH}}" if m in ms.ci else f"{m:>8}" for m in ms.table)
    top = f"best_of_n_uplift@{table.best_of_n[-1]}" if table.best_of_n else None
    if top:
        head += f" {'fit s':>8} {'pred s':>8} {'best@' + str(table.best_of_n[-1]):>9}"
        head += f" {'vs ' + (table.consensus or 'consensus'):>9}"
    else:
        head += f" {'fit s':>8} {'pred s':>8}"
    lines += [head, "-" * len(head)]
    for r in measured:
        values = []
        for m in ms.table:
            value = fmt(r[m])
            if m in ms.ci:
                values.append(f"{value + ' ' + interval(r[m + '_lo'], r[m + '_hi']):>{CI_WIDTH}}")
            else:
                values.append(f"{value:>8}")
        line = f"{r['label']:<{width}} {r['task']:<24} {r['users']:>5} " + " ".join(values)
        line += f" {r['fit_seconds']:>8.2f} {r['predict_seconds']:>8.3f}"
        if top:
            over = r[OVER_CONSENSUS]
            line += f" {fmt(r[top]):>9} {'-' if over != over else f'{over:+.3f}':>9}"
        lines.append(line)
    for group in table.not_measured():
        lines.append(group.text())
    if fallback_line(board.rows):
        lines.append(fallback_line(board.rows))
    return "\n".join(lines)
