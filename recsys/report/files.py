"""A leaderboard's set of files, written whole (``write_leaderboard``; see ``recsys.workspace``).

Every per-row file (leaderboard.csv, per_user.csv, predictions.parquet, curve.csv, breakdown.csv) carries the
run id, the dataset name and the simulated flag, so a file read on its own still says what it measured;
leaderboard.json, .md and .html state the run id, and every PNG shows it in its title and holds it as a
``run_id`` text chunk.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.evaluation import breakdown as bd
from recsys.evaluation.stats import CORRECTION
from recsys.leaderboard import Leaderboard
from recsys.report import charts
from recsys.report.pages import breakdown_markdown, to_html, to_markdown
from recsys.report.table import CURVE_MIN_SHOTS, ReportTable, board_title, build_table, task_label

#: the columns that say which run, data and simulation a per-row file belongs to
PROVENANCE = ("run_id", "dataset", "simulated")
CSV_HEAD = (
    *PROVENANCE,
    "model",
    "tuned",
    "tuned_study",
    "params_source",
    "split",
    "shots",
    "draws",
    "fit_split",
    "validation_split",
    "n_users",
    "n_ratings",
    "skipped_users",
    "fallback_predictions",
    "status",
)
#: what each row's ``by_draw`` (leaderboard.json) holds, stated in the file
BY_DRAW = (
    "per metric, its value computed on each reference draw alone (unseen splits with two or more draws): the "
    "draw-to-draw spread that averaging the draws removes"
)


def statistics_json(table: ReportTable) -> dict:
    """The statistics of leaderboard.json: per task, the best model per metric and the paired tests of the
    primary metric with raw and Holm-adjusted p-values (null where no test could be made)."""
    tasks = []
    for task in table.tasks:
        tests = table.tests.get(task)
        tasks.append(
            {
                "split": task[0],
                "shots": task[1],
                "best": table.best.get(task, {}),
                "tests": None
                if tests is None
                else {
                    "against": tests.best,
                    "family": tests.family,
                    "p": {
                        m: {"raw": _finite(t.p), "holm": _finite(t.p_holm), "users": t.n_users}
                        for m, t in tests.tests.items()
                    },
                },
            }
        )
    return {
        "metric": table.metrics.primary,
        "test": "two-sided Wilcoxon signed-rank over users (per-user values averaged over draws), the task's best "
        "model against each other measured model; the ceiling is neither best nor tested",
        "correction": f"{CORRECTION}, over the models of each task",
        "tasks": tasks,
        "by_draw": BY_DRAW,
    }


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def write_csv(board: Leaderboard, path: Path, table: ReportTable | None = None) -> None:
    """One line per row: provenance, protocol, every metric with its user count, intervals, timings and the
    p-values of the primary metric against the task's best (raw and Holm-adjusted)."""
    table = table or build_table(board)
    ms = table.metrics
    fields = [*CSV_HEAD, *ms.shown, *(f"{m}_users" for m in ms.user), "ndcg_left_out"]
    fields += [f"{m}_{end}" for m in ms.ci for end in ("lo", "hi")] + ["fit_seconds", "predict_seconds"]
    fields += ["p_vs_best", "p_vs_best_holm"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row, line in zip(board.rows, table.frame.to_dict("records"), strict=True):
            record = board.provenance() | {
                "model": row.model,
                "tuned": row.tuned,
                "tuned_study": row.tuned_study or "",
                "params_source": row.params_source or "",
                "split": row.split,
                "shots": "" if row.shots is None else row.shots,
                "draws": row.draws,
                "fit_split": row.fit_split,
                "validation_split": row.validation_split or "",
                "n_users": row.n_users,
                "n_ratings": row.n_ratings,
                "skipped_users": row.skipped_users,
                "fallback_predictions": row.fallback_predictions,
                "status": row.status,
                "ndcg_left_out": row.ndcg_left_out,
                "fit_seconds": f"{row.fit_seconds:.4f}",
                "predict_seconds": f"{row.predict_seconds:.4f}",
                "p_vs_best": "" if math.isnan(line["p"]) else f"{line['p']:.6g}",
                "p_vs_best_holm": "" if math.isnan(line["p_holm"]) else f"{line['p_holm']:.6g}",
            }
            for m in ms.shown:
                record[m] = "" if row.metrics is None else f"{row.metrics[m]:.6f}"
            for m in ms.user:
                record[f"{m}_users"] = row.metric_users.get(m, "")
            for m in ms.ci:
                lo, hi = row.ci95[m] if row.ci95 else ("", "")
                record[f"{m}_lo"], record[f"{m}_hi"] = lo, hi
            writer.writerow(record)


# ---------------------------------------------------------------------- k-curves
def curve_rows(board: Leaderboard, table: ReportTable | None = None) -> list[dict]:
    """One record per (model, unseen split, k, metric) of the splits evaluated at CURVE_MIN_SHOTS or more k."""
    curve = (table or build_table(board)).metrics.curve
    out = []
    for split in dict.fromkeys(r.split for r in board.rows if r.shots is not None):
        rows = [r for r in board.rows if r.split == split and r.shots is not None]
        if len({r.shots for r in rows}) < CURVE_MIN_SHOTS:
            continue
        for row in rows:
            for metric in curve:
                lo, hi = (row.ci95 or {}).get(metric, (float("nan"), float("nan")))
                value = row.metrics[metric] if row.metrics else float("nan")
                out.append(
                    board.provenance()
                    | {
                        "model": row.model,
                        "tuned_study": row.tuned_study or "",
                        "split": split,
                        "shots": row.shots,
                        "draws": row.draws,
                        "metric": metric,
                        "value": value,
                        "lo": lo,
                        "hi": hi,
                        "n_users": row.metric_users.get(metric, 0),
                        "n_queries": row.n_ratings,
                    }
                )
    return out


def write_curve(board: Leaderboard, csv_path: Path, png_path: Path, table: ReportTable | None = None) -> bool:
    """curve.csv and curve.png (the curve metrics against k, a line per measured model with its 95% band);
    False (nothing written) with fewer than CURVE_MIN_SHOTS k values."""
    table = table or build_table(board)
    records = curve_rows(board, table)
    if not records:
        return False
    frame = pd.DataFrame(records)
    frame.to_csv(csv_path, index=False)
    heading = f"{board_title(board)}; {board.draws} reference draw(s) per new user, seed {board.seed}; run {board.run_id}"
    charts.plot_curve(frame, heading, png_path, run_id=board.run_id, unit=table.unit)
    return True


# ---------------------------------------------------------------------- breakdowns
def write_breakdown(board: Leaderboard, breakdown: bd.Breakdown, csv_path: Path, png_path: Path) -> bool:
    """breakdown.csv (every rating row's groups, with provenance) and breakdown.png (the main task); False
    (nothing written) when no row could be broken down."""
    task = breakdown.task
    if task is None or breakdown.table.empty:
        return False
    frame = breakdown.table.copy()
    for position, (key, value) in enumerate(board.provenance().items()):
        frame.insert(position, key, value)
    frame.to_csv(csv_path, index=False)
    heading = f"{board_title(board)}: user SROCC by group, {task_label(*task)} (95% CI over users); run {board.run_id}"
    charts.plot_breakdown(bd.task_rows(breakdown.table, task), heading, png_path, run_id=board.run_id)
    return True


# ---------------------------------------------------------------------- per-user values and predictions
def write_per_user(board: Leaderboard, path: Path) -> None:
    """Per-user values (averaged over draws) of every row: the inputs of the intervals and the tests."""
    ids = board.dataset.user_ids
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [*PROVENANCE, "model", "tuned_study", "split", "shots", "draws", "user_id", "metric", "value"]
        )
        head = list(board.provenance().values())
        for row in board.rows:
            shots = "" if row.shots is None else row.shots
            for metric, values in row.per_user.items():
                for user, value in values.items():
                    record = [
                        row.model,
                        row.tuned_study or "",
                        row.split,
                        shots,
                        row.draws,
                        ids[user],
                        metric,
                    ]
                    writer.writerow([*head, *record, f"{value:.6f}"])


def predictions_table(board: Leaderboard) -> pd.DataFrame:
    """Every scored query of every row: run_id, dataset, simulated, model, tuned_study, split, shots, draw,
    user_id, image_id, score (observed), prediction; on choices image_a_id, image_b_id, choice (1 a, 0 b, 0.5 a
    tie) and prediction = P(a) instead of image_id, score. ``shots`` and ``draw`` are null on seen splits."""
    ds = board.dataset
    parts = []
    for row in board.rows:
        p = row.predictions
        if p is None:
            continue
        n = len(p.prediction)
        if hasattr(p, "choice"):  # a pairwise row: the two images, the choice, P(a)
            scored = {"image_a_id": ds.image_ids[p.image_a], "image_b_id": ds.image_ids[p.image_b]}
            scored["choice"] = p.choice.astype(np.float32)
        else:
            scored = {"image_id": ds.image_ids[p.image_idx], "score": p.score.astype(np.float32)}
        parts.append(
            pd.DataFrame(
                {
                    "model": np.full(n, row.model, dtype=object),
                    "tuned_study": np.full(n, row.tuned_study or "", dtype=object),
                    "split": np.full(n, row.split, dtype=object),
                    "shots": pd.array(np.full(n, -1 if row.shots is None else row.shots), dtype="Int64"),
                    "draw": pd.array(p.draw, dtype="Int64"),
                    "user_id": ds.user_ids[p.user_idx].astype(str),
                    **scored,
                    "prediction": p.prediction.astype(np.float64),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(frame):
        frame.loc[frame["shots"] < 0, "shots"] = pd.NA
        frame.loc[frame["draw"] < 0, "draw"] = pd.NA
    for position, (key, value) in enumerate(board.provenance().items()):
        frame.insert(position, key, value)
    return frame


# ---------------------------------------------------------------------- the set
def write_leaderboard(
    board: Leaderboard, out: str | Path, *, overwrite: bool = False, markdown_extra: str = ""
) -> dict[str, Path]:
    """Write leaderboard.json, .csv, .md, .html and .png, per_user.csv, predictions.parquet, best_of_n.png
    (rating rows), breakdown.csv, .md and .png (when a rating row can be broken down) and, with three or more k
    values, curve.csv and curve.png into ``out`` as one set; returns the paths.

    The set is written into a hidden folder beside ``out`` and renamed into place when every file is written,
    under a lock on ``out`` (see ``recsys.workspace.write_atomically``): an error leaves a previous set intact.
    A non-empty ``out`` is refused unless ``overwrite``. ``markdown_extra`` is appended to leaderboard.md.
    """
    from recsys.workspace import write_atomically

    out = Path(out)
    names = write_atomically(
        out, lambda folder: write_files(board, folder, markdown_extra), overwrite=overwrite
    )
    return {key: out / name for key, name in names.items()}


def write_files(board: Leaderboard, out: Path, markdown_extra: str = "") -> dict[str, str]:
    """Write every file of a set into the existing folder ``out``; returns the file names by key. The report
    table and the breakdowns are computed once, and every file reads them."""
    table = build_table(board)
    names = {ext: f"leaderboard.{ext}" for ext in ("json", "csv", "md")}
    record = board.to_json() | {"statistics": statistics_json(table)}
    (out / names["json"]).write_text(json.dumps(record, indent=2, allow_nan=False, default=_json_default))
    write_csv(board, out / names["csv"], table)
    breakdown = bd.breakdown(board.rows, board.dataset, board.seed)
    markdown = to_markdown(board, breakdown, table)
    (out / names["md"]).write_text(markdown + (f"\n{markdown_extra}" if markdown_extra else ""))
    if charts.write_chart(table, out / "leaderboard.png"):
        names["png"] = "leaderboard.png"
    names["per_user"] = "per_user.csv"
    write_per_user(board, out / names["per_user"])
    names["predictions"] = "predictions.parquet"
    predictions_table(board).to_parquet(out / names["predictions"], index=False)
    if charts.write_best_of_n_chart(table, out / "best_of_n.png"):
        names["best_of_n"] = "best_of_n.png"
    if write_curve(board, out / "curve.csv", out / "curve.png", table):
        names["curve_csv"], names["curve_png"] = "curve.csv", "curve.png"
    if write_breakdown(board, breakdown, out / "breakdown.csv", out / "breakdown.png"):
        names["breakdown_csv"], names["breakdown_png"] = "breakdown.csv", "breakdown.png"
        details = breakdown_markdown(board, breakdown)
        if details is not None:
            names["breakdown_md"] = "breakdown.md"
            (out / names["breakdown_md"]).write_text(details)
    names["html"] = "leaderboard.html"
    page = to_html(board, breakdown, table, charts=out, extra=bool(markdown_extra))
    (out / names["html"]).write_text(page)
    return names


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
