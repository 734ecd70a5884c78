"""Leaderboard files: JSON, CSV, Markdown (best marked, paired tests), PNG charts, per-user values, predictions.

Every per-row file (leaderboard.csv, per_user.csv, predictions.parquet, curve.csv, breakdown.csv) carries the
run id, the dataset name and the simulated flag, so a file read on its own still says what it measured;
leaderboard.json and .md state the run id, and every PNG shows it in its title and holds it as a ``run_id`` text
chunk. A set is written whole (``write_leaderboard``; see ``recsys.workspace``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from recsys.evaluation import breakdown as bd
from recsys.evaluation.evaluator import CI_METRICS, USER_METRICS, Result
from recsys.evaluation.metrics import HIGHER_IS_BETTER, NDCG_K
from recsys.evaluation.pairwise import PAIR_METRICS
from recsys.leaderboard import Leaderboard
from recsys.models.base import DATA_POLICY

METRICS = ("user_srocc", "pairwise_acc", "ndcg@10", "srocc", "plcc", "rmse", "mae")
TABLE_METRICS = ("user_srocc", "pairwise_acc", "ndcg@10", "rmse")
#: the metrics drawn against k in curve.png (with their 95% bands)
CURVE_METRICS = ("user_srocc", "pairwise_acc")


class MetricSet(NamedTuple):
    """The metrics of a board's rows: ``primary`` ranks and is tested, ``ranked`` get a best model, ``shown`` go
    to the Markdown and CSV, ``table`` to the terminal, ``ci`` have intervals, ``user`` are averaged over users,
    ``curve`` are drawn against k."""

    primary: str
    ranked: tuple[str, ...]
    shown: tuple[str, ...]
    table: tuple[str, ...]
    ci: tuple[str, ...]
    user: tuple[str, ...]
    curve: tuple[str, ...]


RATING_METRIC_SET = MetricSet(
    "user_srocc", METRICS, METRICS, TABLE_METRICS, CI_METRICS, USER_METRICS, CURVE_METRICS
)
PAIR_METRIC_SET = MetricSet(
    "user_choice_acc", PAIR_METRICS, (*PAIR_METRICS, "ties"), PAIR_METRICS, PAIR_METRICS[:1], PAIR_METRICS[:1],
    PAIR_METRICS[:1],
)  # fmt: skip


def metric_set(rows: list[Result]) -> MetricSet:
    """Pairwise metrics for rows of choices, the top-N task's (recall@k, ndcg@k; the first ranks) for its rows,
    rating metrics otherwise."""
    pairs = any(r.metrics and "user_choice_acc" in r.metrics for r in rows)
    topn = next(
        (tuple(r.metrics) for r in rows if r.metrics and any(m.startswith("recall@") for m in r.metrics)),
        None,
    )
    if topn is not None:
        return MetricSet(topn[0], topn, topn, topn, topn, topn, ())
    return PAIR_METRIC_SET if pairs else RATING_METRIC_SET


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
    "status",
)
#: a k-curve is drawn (and the bar chart shows only the end points of k) from this many k values on
CURVE_MIN_SHOTS = 3


def _task(row: Result) -> tuple[str, int | None]:
    return row.split, row.shots


def _task_label(split: str, shots: int | None) -> str:
    return split if shots is None else f"{split} ({shots}-shot)"


def _label(row: Result) -> str:
    """The model's name, marked on a ``--tuned`` board by where its hyperparameters come from: a study (tuned),
    its defaults, or --params."""
    if row.tuned:
        return f"{row.model} (tuned)"
    return f"{row.model} ({row.params_source})" if row.params_source else row.model


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _interval(row: Result, metric: str) -> str:
    """``[lo, hi]`` of a metric's 95% bootstrap interval over users, or empty when there is none."""
    lo, hi = (row.ci95 or {}).get(metric, (float("nan"), float("nan")))
    return "" if math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"


def best_models(rows: list[Result]) -> dict[tuple, dict[str, str]]:
    """Per (split, shots) task and metric, the best model among measured rows (the oracle excluded)."""
    best: dict[tuple, dict[str, str]] = {}
    ranked = metric_set(rows).ranked
    for task in dict.fromkeys(_task(r) for r in rows):
        candidates = [r for r in rows if _task(r) == task and r.metrics and r.model != "oracle"]
        best[task] = {}
        for metric in ranked:
            scored = [r for r in candidates if not math.isnan(r.metrics[metric])]
            if scored:
                pick = (max if HIGHER_IS_BETTER[metric] else min)(scored, key=lambda r: r.metrics[metric])
                best[task][metric] = pick.model
    return best


def paired_tests(rows: list[Result], metric: str | None = None) -> dict[tuple, dict[str, float]]:
    """Wilcoxon signed-rank p-values over users (per-user values averaged over draws) between the best model of
    each task and each other model, on ``metric`` (default: the rows' primary metric)."""
    metric = metric or metric_set(rows).primary
    out: dict[tuple, dict[str, float]] = {}
    best = best_models(rows)
    for task, winners in best.items():
        winner = winners.get(metric)
        by_model = {r.model: r for r in rows if _task(r) == task and r.metrics}
        if winner is None:
            continue
        ref = by_model[winner].per_user.get(metric, {})
        out[task] = {}
        for name, row in by_model.items():
            if name == winner:
                continue
            other = row.per_user.get(metric, {})
            users = sorted(set(ref) & set(other))
            diffs = np.array([ref[u] - other[u] for u in users])
            if len(users) < 5 or not np.any(diffs):
                out[task][name] = float("nan")
                continue
            out[task][name] = float(stats.wilcoxon(diffs).pvalue)
    return out


def _protocol_line(board: Leaderboard) -> str:
    if board.task == "topn":
        return (
            f"top-N task, protocol seed {board.seed}: {board.topn['candidates']} ranked for each user of the split; "
            f"relevant: {board.topn['relevant']}"
        )
    unseen = any(r.shots is not None for r in board.rows)
    queries = (
        f"the same queries at every k (all but {board.held_out} of each new user)"
        + ("" if board.references == "random" else f", references chosen by {board.references} from those")
        if board.fixed_queries
        else "each k scored on every rating of the user but its k references"
    )
    draws = (
        f"{board.draws} reference draw(s) per new user (per-user values averaged over draws before the interval "
        f"and the test), {queries}"
        if unseen
        else "seen splits only"
    )
    name = "" if board.protocol == "default" else f"{board.protocol} protocol, "
    return f"{name}protocol seed {board.seed}, shots {list(board.shots)}, {draws}"


def format_table(board: Leaderboard) -> str:
    """A fixed-width table for the terminal: ``users`` is the number of users averaged by the primary metric."""
    ms = metric_set(board.rows)
    width = max([27] + [len(_label(r)) + 1 for r in board.rows])
    head = f"{'model':<{width}} {'split':<24} {'users':>5} "
    head += " ".join(f"{m + ' [95% CI]':>26}" if m in ms.ci else f"{m:>8}" for m in ms.table)
    best = _best_of_n_columns(board.rows)
    head += f" {'fit s':>8} {'pred s':>8}" + (f" {best[0]:>9} {'vs ridge':>9}" if best else "")
    lines = [
        f"dataset: {board.dataset.name}" + ("  [SIMULATED data]" if board.dataset.simulated else ""),
        f"run {board.run_id}: {_protocol_line(board)}; fit on {board.fit_split}",
        head,
        "-" * len(head),
    ]
    for row in board.rows:
        label = _task_label(row.split, row.shots)
        users = row.metric_users.get(ms.primary, row.n_users)
        if row.metrics is None:
            lines.append(f"{_label(row):<{width}} {label:<24} {users:>5}  {row.status}: {row.reason}")
            continue
        values = []
        for m in ms.table:
            value = _fmt(row.metrics[m])
            values.append(f"{value + ' ' + _interval(row, m):>26}" if m in ms.ci else f"{value:>8}")
        lines.append(
            f"{_label(row):<{width}} {label:<24} {users:>5} "
            + " ".join(values)
            + f" {row.fit_seconds:>8.2f} {row.predict_seconds:>8.3f}"
            + (
                f" {_fmt(row.metrics.get(best[1])):>9} {best[2].get((_task(row), row.model), '-'):>9}"
                if best
                else ""
            )
        )
    return "\n".join(lines)


def _best_of_n_columns(rows: list[Result]) -> tuple[str, str, dict] | None:
    """The terminal table's best-of-n columns: header, metric (uplift at the largest n) and, per task, each
    model's uplift over the consensus model (ridge); None when no row has best-of-n metrics."""
    metrics = {m for r in rows if r.metrics for m in r.metrics if m.startswith("best_of_n_uplift@")}
    if not metrics:
        return None
    top = max(metrics, key=lambda m: int(m.split("@")[1]))
    ridge = {_task(r): r.metrics[top] for r in rows if r.model == "ridge" and r.metrics and top in r.metrics}
    over = {
        (_task(r), r.model): f"{r.metrics[top] - ridge[_task(r)]:+.3f}"
        for r in rows
        if r.metrics and top in r.metrics and _task(r) in ridge
    }
    return f"best@{top.split('@')[1]}", top, over


def _users_line(rows: list[Result]) -> str:
    """How many users each metric averaged in one task (and who was left out)."""
    ok = [r for r in rows if r.metrics]
    if not ok:
        return ""
    first = ok[0]
    parts = [f"{m} {first.metric_users.get(m, 0)}" for m in metric_set(rows).user]
    text = "Users averaged: " + ", ".join(parts)
    if first.ndcg_left_out:
        text += f" ({first.ndcg_left_out} user(s) with {NDCG_K} or fewer queries left out of ndcg@10)"
    if first.skipped_users:
        text += f"; {first.skipped_users} user(s) skipped for too few ratings (or choices) for the largest k"
    if first.shots is not None:
        text += f"; {first.n_ratings} queries per draw, {first.draws} draw(s)"
    return text + ". A cell marked (n=...) averaged a different number of users."


def to_markdown(board: Leaderboard, breakdown: bd.Breakdown | None = None) -> str:
    """Markdown tables per task: best model in bold per metric, Wilcoxon p-value against the best; then the
    best-of-n tables and the breakdowns (``breakdown``, computed here when not given)."""
    best = best_models(board.rows)
    tests = paired_tests(board.rows)
    ms = metric_set(board.rows)
    ds = board.dataset
    validation = "none (the tuned refit includes it)" if "val_seen" in board.fit_split else "val_seen"
    lines = [
        f"# Leaderboard: {ds.name}",
        "",
        (
            "**Simulated data** (calibrated to PAMELA's published statistics; not ratings by real people). "
            if ds.simulated
            else ""
        )
        + f"Fingerprint `{ds.fingerprint()}`, run `{board.run_id}`, {_protocol_line(board)}.",
        "",
        f"**Data policy.** {DATA_POLICY.describe()} This run fits on `{board.fit_split}`; validation split: "
        f"{validation}. Each row's `validation_split` is in leaderboard.json.",
    ]
    if board.tuned:
        studies = ", ".join(f"{m}: `{t['study']}`" for m, t in board.tuned.items())
        lines += [
            "",
            f"**Tuned** rows take their hyperparameters from a study: {studies}; they fit on the same splits as "
            "untuned rows, so a difference comes from the hyperparameters alone.",
        ]
    if board.defaults:
        reasons = "; ".join(f"{m}: {why}" for m, why in board.defaults.items())
        lines += ["", f"Rows marked **(defaults)** run at their default hyperparameters: {reasons}."]
    lines += [
        "",
        "Best measured model per task and metric in **bold** (the oracle, where present, is the simulator's "
        "ground truth and is never marked). `p` is a two-sided Wilcoxon signed-rank test over users of the "
        f"per-user {ms.primary} against the best model by {ms.primary}. [lo, hi] is the 95% bootstrap interval "
        "over users (percentile, not symmetric). "
        + (
            f"ndcg@10 gains are scores minus the scale's minimum ({ds.score_range[0]:g})."
            if ms is RATING_METRIC_SET
            else "Choices: P(a chosen over b); ties are left out of the accuracies and counted (`ties`)."
            if ms is PAIR_METRIC_SET
            else "Top-N: recall@k is the share of a user's relevant held-out images among the k it ranks first, "
            "ndcg@k its binary-gain NDCG; equal scores rank an irrelevant image first. Users without a relevant "
            "held-out image are left out (`users` counts those averaged). `popularity` ranks images by their "
            "number of fit ratings, the same for everyone (label-free)."
        ),
    ]
    for task in dict.fromkeys(_task(r) for r in board.rows):
        split, shots = task
        rows = [r for r in board.rows if _task(r) == task]
        lines += ["", f"## {_task_label(split, shots)}", "", _users_line(rows), ""]
        lines.append(
            "| model | users | " + " | ".join(ms.shown) + f" | p ({ms.primary}) | fit s | predict s |"
        )
        lines.append("|---|---:|" + "---:|" * len(ms.shown) + "---:|---:|---:|")
        reference = next((r for r in rows if r.metrics), None)
        for row in rows:
            users = row.metric_users.get(ms.primary, row.n_users)
            if row.metrics is None:
                lines.append(
                    f"| {_label(row)} | {users} | {row.status}: {row.reason} |" + " |" * (len(ms.shown) + 2)
                )
                continue
            cells = []
            for m in ms.shown:
                cell = _fmt(row.metrics[m], 0 if m == "ties" else 3)
                if m in ms.ci and _interval(row, m):
                    cell += " " + _interval(row, m)
                if m in ms.user and reference is not None:
                    n = row.metric_users.get(m)
                    if n is not None and n != reference.metric_users.get(m):
                        cell += f" (n={n})"
                if best.get(task, {}).get(m) == row.model:
                    cell = f"**{cell}**"
                cells.append(cell)
            p = tests.get(task, {}).get(row.model)
            p_cell = (
                "best"
                if best.get(task, {}).get(ms.primary) == row.model
                else ("-" if p is None or math.isnan(p) else f"{p:.2g}")
            )
            lines.append(
                f"| {_label(row)} | {users} | "
                + " | ".join(cells)
                + f" | {p_cell} | {row.fit_seconds:.2f} | {row.predict_seconds:.3f} |"
            )
    lines += _best_of_n_section(board)
    lines += _breakdown_section(board, breakdown or bd.breakdown(board.rows, board.dataset, board.seed))
    return "\n".join(lines) + "\n"


def _gap_text(gap: dict | None) -> str:
    if gap is None:
        return f"no two groups of {bd.MIN_GROUP_USERS}+ users"
    overlap = "intervals do not overlap" if gap["separated"] else "intervals overlap"
    return f"{gap['dimension']} {gap['high']} vs {gap['low']}, {gap['gap']:.3f}, {overlap}"


def _breakdown_section(board: Leaderboard, breakdown: bd.Breakdown) -> list[str]:
    """Per model, user SROCC by user group and image group on the main task, its largest gap flagged."""
    task = breakdown.task
    if task is None:
        return []
    if breakdown.table.empty:
        return [
            "",
            "## Breakdowns",
            "",
            f"Not broken down: the data have none of {', '.join(breakdown.missing)}.",
        ]
    lines = [
        "",
        "## Breakdowns: for whom and on which images",
        "",
        f"{_task_label(*task)}; every row of every task is in breakdown.csv, drawn in breakdown.png. By user "
        "group: the mean of the users' user SROCC; by image group: each user's SROCC on only the user's queries "
        f"of that group (users with at least {bd.MIN_CATEGORY_QUERIES} of them), averaged over users. [lo, hi]: "
        "95% bootstrap interval over users; n: users. Largest gap: the highest group mean minus the lowest "
        f"among named groups (not `other`) of at least {bd.MIN_GROUP_USERS} users; the gap flagged per model is "
        "its largest whose two intervals do not overlap, else its largest; age bins "
        + "/".join(label for _, label in bd.AGE_BINS[1:])
        + f"; nationalities, image groups and styles beyond the {bd.MAX_LEVELS} most common are `other`.",
    ]
    if breakdown.missing:
        lines += ["", f"Not broken down (the data lack them): {', '.join(breakdown.missing)}."]
    table = bd.task_rows(breakdown.table, task)
    gaps, by_dimension = bd.gaps(table), bd.dimension_gaps(table)
    lines += [
        "",
        "Largest gap per model, and per dimension (highest minus lowest group; † the two intervals do not "
        "overlap):",
        "",
        "| model | gap flagged | " + " | ".join(breakdown.dimensions) + " |",
        "|---|---|" + "---:|" * len(breakdown.dimensions),
    ]
    for model in dict.fromkeys(table["model"]):
        cells = []
        for dimension in breakdown.dimensions:
            gap = by_dimension.get(model, {}).get(dimension)
            cells.append("-" if gap is None else f"{gap['gap']:.3f}" + (" †" if gap["separated"] else ""))
        lines.append(f"| {model} | {_gap_text(gaps.get(model))} | " + " | ".join(cells) + " |")
    for model, rows in table.groupby("model", sort=False):
        lines += ["", f"<details><summary>{model}: gap flagged {_gap_text(gaps.get(model))}</summary>", ""]
        lines += ["| dimension | group | n | user SROCC [95% CI] |", "|---|---|---:|---|"]
        for r in rows.itertuples():
            interval = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
            lines.append(f"| {r.dimension} | {r.group} | {r.n_users} | {r.user_srocc:.3f} {interval} |")
        lines += ["", "</details>"]
    return lines


def _best_of_n_rows(board: Leaderboard) -> tuple[list[Result], list[int]]:
    """The rows with best-of-n metrics and their n values, ascending (empty lists without any)."""
    rows = [r for r in board.rows if r.metrics and "best_of_n_uplift@2" in r.metrics]
    if not rows:
        return [], []
    return rows, sorted(int(m.split("@")[1]) for m in rows[0].metrics if m.startswith("best_of_n_uplift@"))


def _best_of_n_section(board: Leaderboard) -> list[str]:
    """Markdown tables of the best-of-n metrics per task, with each model's uplift over the consensus (ridge)."""
    rows, ns = _best_of_n_rows(board)
    if not rows:
        return []
    true = any(f"best_of_n_true_uplift@{ns[-1]}" in r.metrics for r in rows)
    lines = [
        "",
        "## Best of n: picking a person's best of n candidates",
        "",
        "Each user's queries in seeded groups of n (the same groups for every model); the model picks the image "
        "it scores highest. `uplift@n`: the pick's observed score minus the group's mean (0 for a random pick); "
        "`hit@n`: share of groups where the pick is one of the user's favourites; `over ridge`: the uplift minus "
        "that of the consensus model (`ridge`, not personal), i.e. what personalisation adds"
        + ("; `true uplift`: the uplift in the simulator's expected score." if true else "."),
    ]
    head = [f"uplift@{n}" for n in ns] + [f"hit@{n}" for n in ns] + [f"over ridge @{ns[-1]}"]
    head += [f"true uplift@{ns[-1]}"] if true else []
    for task in dict.fromkeys(_task(r) for r in rows):
        mine = [r for r in rows if _task(r) == task]
        ridge = next((r for r in mine if r.model == "ridge"), None)
        lines += ["", f"### {_task_label(*task)}", "", "| model | " + " | ".join(head) + " |"]
        lines.append("|---|" + "---:|" * len(head))
        for row in mine:
            m = row.metrics
            cells = [_fmt(m[f"best_of_n_uplift@{n}"]) for n in ns] + [
                _fmt(m[f"best_of_n_hit@{n}"]) for n in ns
            ]
            top = f"best_of_n_uplift@{ns[-1]}"
            cells.append("-" if ridge is None else f"{m[top] - ridge.metrics[top]:+.3f}")
            cells += [_fmt(m.get(f"best_of_n_true_uplift@{ns[-1]}"))] if true else []
            lines.append(f"| {_label(row)} | " + " | ".join(cells) + " |")
    return lines


def write_csv(board: Leaderboard, path: Path) -> None:
    """One line per row: provenance, protocol, every metric with its user count, intervals and timings."""
    ms = metric_set(board.rows)
    fields = [*CSV_HEAD, *ms.shown, *(f"{m}_users" for m in ms.user), "ndcg_left_out"]
    fields += [f"{m}_{end}" for m in ms.ci for end in ("lo", "hi")] + ["fit_seconds", "predict_seconds"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in board.rows:
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
                "status": row.status,
                "ndcg_left_out": row.ndcg_left_out,
                "fit_seconds": f"{row.fit_seconds:.4f}",
                "predict_seconds": f"{row.predict_seconds:.4f}",
            }
            for m in ms.shown:
                record[m] = "" if row.metrics is None else f"{row.metrics[m]:.6f}"
            for m in ms.user:
                record[f"{m}_users"] = row.metric_users.get(m, "")
            for m in ms.ci:
                lo, hi = row.ci95[m] if row.ci95 else ("", "")
                record[f"{m}_lo"], record[f"{m}_hi"] = lo, hi
            writer.writerow(record)


def _chart_tasks(board: Leaderboard) -> list[tuple[str, int | None]]:
    """The bar chart's panels: every seen split, and for an unseen split with many k only the smallest and the
    largest (curve.png draws them all)."""
    tasks = list(dict.fromkeys(_task(r) for r in board.rows))
    out = []
    for split in dict.fromkeys(s for s, _ in tasks):
        shots = [k for s, k in tasks if s == split]
        if len(shots) >= CURVE_MIN_SHOTS and None not in shots:
            shots = [min(shots), max(shots)]
        out += [(split, k) for k in shots]
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_metadata(run_id: str) -> dict[str, str]:
    """PNG text chunks: the run id (``run_id``) that every file of a set carries."""
    return {"run_id": run_id, "Description": f"recsys leaderboard run {run_id}"}


def _board_title(board: Leaderboard) -> str:
    """The dataset's name for chart titles, labelled when simulated."""
    return board.dataset.name + (" — SIMULATED data" if board.dataset.simulated else "")


def _panels(plt, n_tasks: int, n_labels: int):
    """A figure of ``n_tasks`` side-by-side bar panels sharing ``n_labels`` rows."""
    size = (4.2 * n_tasks + 1.5, 0.32 * n_labels + 1.8)
    return plt.subplots(1, n_tasks, figsize=size, sharey=True, squeeze=False)


def _save_panels(fig, axes, labels: list[str], board: Leaderboard, heading: str, path: Path) -> None:
    """Row labels, the title (``heading`` with ``{title}``: the dataset, labelled when simulated; then the run
    id), and the PNG with the run id in its metadata."""
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0][0].invert_yaxis()
    title = _board_title(board)
    fig.suptitle(heading.format(title=title) + f"; run {board.run_id}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=png_metadata(board.run_id))
    _pyplot().close(fig)


def write_chart(board: Leaderboard, path: Path) -> None:
    """Horizontal bars of the primary metric with 95% intervals, one panel per task (see ``_chart_tasks``)."""
    plt = _pyplot()
    primary = metric_set(board.rows).primary
    tasks = _chart_tasks(board)
    labels = list(dict.fromkeys(_label(r) for r in board.rows))
    fig, axes = _panels(plt, len(tasks), len(labels))
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = {_label(r): r for r in board.rows if _task(r) == task}
        values, errors, colours = [], [[], []], []
        for m in labels:
            r = rows.get(m)
            v = r.metrics[primary] if r and r.metrics else float("nan")
            lo, hi = r.ci95[primary] if r and r.ci95 else (v, v)
            values.append(v)
            errors[0].append(max(0.0, v - lo) if not math.isnan(v) else 0)
            errors[1].append(max(0.0, hi - v) if not math.isnan(v) else 0)
            colours.append("#999999" if m == "oracle" else "#3b75af")
        ax.barh(range(len(labels)), np.nan_to_num(values), xerr=errors, color=colours, capsize=2)
        ax.set_title(_task_label(*task), fontsize=10)
        ax.set_xlabel(("user SROCC" if primary == "user_srocc" else primary) + " (95% CI)")
        ax.set_xlim(min(0.0, np.nanmin(values) if not all(map(math.isnan, values)) else 0), 1.0)
        ax.grid(axis="x", alpha=0.3)
    _save_panels(fig, axes, labels, board, f"{{title}}; {board.draws} draw(s) per new user", path)


def write_best_of_n_chart(board: Leaderboard, path: Path) -> bool:
    """Bars of each model's best-of-n uplift at the largest n, one panel per task (as the bar chart's), with the
    consensus model's (ridge) as a dashed line; the oracle grey. False (nothing written) when no row has
    best-of-n metrics."""
    rows, ns = _best_of_n_rows(board)
    if not rows:
        return False
    plt = _pyplot()
    n = ns[-1]
    metric = f"best_of_n_uplift@{n}"
    tasks = [t for t in _chart_tasks(board) if any(_task(r) == t for r in rows)]
    labels = list(dict.fromkeys(_label(r) for r in rows))
    fig, axes = _panels(plt, len(tasks), len(labels))
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = {_label(r): r for r in rows if _task(r) == task}
        values = [mine[m].metrics[metric] if m in mine else float("nan") for m in labels]
        colours = ["#999999" if m == "oracle" else "#3b75af" for m in labels]
        ax.barh(range(len(labels)), np.nan_to_num(values), color=colours)
        ridge = next((r.metrics[metric] for r in mine.values() if r.model == "ridge"), None)
        if ridge is not None:
            ax.axvline(ridge, color="black", ls="--", lw=1, label="consensus (ridge)")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(_task_label(*task), fontsize=10)
        ax.set_xlabel(f"uplift of the pick of {n} over their mean")
        ax.grid(axis="x", alpha=0.3)
    _save_panels(fig, axes, labels, board, f"Best of {n}: {{title}}", path)
    return True


# ---------------------------------------------------------------------- k-curves
def curve_rows(board: Leaderboard) -> list[dict]:
    """One record per (model, unseen split, k, metric) of the splits evaluated at CURVE_MIN_SHOTS or more k."""
    out, curve = [], metric_set(board.rows).curve
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


def write_curve(board: Leaderboard, csv_path: Path, png_path: Path) -> bool:
    """curve.csv and curve.png (user SROCC and pairwise accuracy against k, a line per model with its 95%
    band); False (nothing written) with fewer than CURVE_MIN_SHOTS k values."""
    records = curve_rows(board)
    if not records:
        return False
    table = pd.DataFrame(records)
    table.to_csv(csv_path, index=False)
    title = _board_title(board)
    heading = f"{title}; {board.draws} reference draw(s) per new user, seed {board.seed}; run {board.run_id}"
    plot_curve(table, heading, png_path, run_id=board.run_id)
    return True


def plot_curve(table: pd.DataFrame, title: str, png_path: Path, run_id: str | None = None) -> None:
    """Draw a curve.csv table: a row of panels per unseen split, one panel per metric, k on evenly spaced
    positions (0 and 1 stay apart). Models are ranked by their first metric at the largest k; each keeps one
    colour and line style in every panel, the oracle a grey dotted line."""
    plt = _pyplot()
    splits = list(dict.fromkeys(table["split"]))
    metrics = list(dict.fromkeys(table["metric"]))
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # grey is the oracle's
    styles = ("-", "--", "-.")
    fig, axes = plt.subplots(
        len(splits), len(metrics), figsize=(6.6 * len(metrics) + 3.4, 5.6 * len(splits)), squeeze=False
    )
    for i, split in enumerate(splits):
        rows = table[table["split"] == split]
        shots = sorted(rows["shots"].unique())
        position = {k: p for p, k in enumerate(shots)}
        at_end = rows[(rows["shots"] == shots[-1]) & (rows["metric"] == metrics[0])].set_index("model")[
            "value"
        ]
        ranked = sorted(dict.fromkeys(rows["model"]), key=lambda name: -np.nan_to_num(at_end.get(name, -1)))
        others = [m for m in ranked if m != "oracle"]
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            part = rows[rows["metric"] == metric]
            for model in ranked:
                line = part[part["model"] == model].sort_values("shots")
                x = [position[k] for k in line["shots"]]
                if model == "oracle":
                    colour, style = "#777777", ":"
                else:
                    rank = others.index(model)
                    colour, style = palette[rank % len(palette)], styles[(rank // len(palette)) % len(styles)]
                label = f"{model} ({at_end.get(model, float('nan')):.3f})"
                ax.plot(
                    x,
                    line["value"],
                    style,
                    color=colour,
                    marker="o",
                    markersize=3,
                    linewidth=1.5,
                    label=label,
                )
                ax.fill_between(x, line["lo"], line["hi"], color=colour, alpha=0.06, linewidth=0)
            ax.set_xticks(range(len(shots)), [str(k) for k in shots])
            ax.set_xlabel("k (reference ratings per new user)")
            ax.set_ylabel(f"{metric} (lines: mean; bands: 95% over users)")
            n_users, n_queries = int(part["n_users"].max()), int(part["n_queries"].max())
            ax.set_title(
                f"{split}: {metric} — {n_users} users, {n_queries} queries per draw at every k", fontsize=10
            )
            ax.grid(alpha=0.3)
        heading = f"model ({metrics[0]} at k = {shots[-1]})"
        axes[i][-1].legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title=heading
        )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120, metadata=png_metadata(run_id) if run_id else None)
    plt.close(fig)


# ---------------------------------------------------------------------- breakdowns
def write_breakdown(board: Leaderboard, breakdown: bd.Breakdown, csv_path: Path, png_path: Path) -> bool:
    """breakdown.csv (every rating row's groups, with provenance) and breakdown.png (the main task); False
    (nothing written) when no row could be broken down."""
    task = breakdown.task
    if task is None or breakdown.table.empty:
        return False
    table = breakdown.table.copy()
    for position, (key, value) in enumerate(board.provenance().items()):
        table.insert(position, key, value)
    table.to_csv(csv_path, index=False)
    title = _board_title(board)
    heading = f"{title}: user SROCC by group, {_task_label(*task)} (95% CI over users); run {board.run_id}"
    plot_breakdown(bd.task_rows(breakdown.table, task), heading, png_path, run_id=board.run_id)
    return True


def plot_breakdown(table: pd.DataFrame, title: str, png_path: Path, run_id: str | None = None) -> None:
    """One panel per dimension, its groups along x, a marker per model (side by side) with its 95% interval;
    the oracle grey."""
    plt = _pyplot()
    dimensions = list(dict.fromkeys(table["dimension"]))
    models = list(dict.fromkeys(table["model"]))
    others = [m for m in models if m != "oracle"]
    palette = plt.get_cmap("tab20").colors
    columns = min(3, len(dimensions))
    rows = -(-len(dimensions) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns + 2.6, 4.2 * rows), squeeze=False)
    width = 0.8 / len(models)
    colour = {m: palette[others.index(m) % len(palette)] if m != "oracle" else "#777777" for m in models}
    offset = {m: -0.4 + width * (j + 0.5) for j, m in enumerate(models)}
    for ax, dimension in zip(axes.flat, dimensions, strict=False):
        part = table[table["dimension"] == dimension]
        groups = list(dict.fromkeys(part["group"]))
        where = {g: i for i, g in enumerate(groups)}
        x = part["group"].map(where) + part["model"].map(offset)
        colours = list(part["model"].map(colour))
        ax.vlines(x, part["ci_low"], part["ci_high"], colors=colours, linewidth=0.8)  # one call per panel
        ax.scatter(x, part["user_srocc"], c=colours, s=9, zorder=3)
        n = part.groupby("group", sort=False)["n_users"].max()
        ax.set_xticks(range(len(groups)), [f"{g}\n(n={n[g]})" for g in groups], fontsize=7, rotation=30)
        ax.set_title(dimension, fontsize=10)
        ax.set_ylabel("user SROCC")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Line2D([], [], color=colour[m], marker="o", markersize=3, lw=0.8, label=m) for m in models]
    axes[0][-1].legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7,
        frameon=False,
        title="model",
    )
    for ax in list(axes.flat)[len(dimensions) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(png_path, dpi=85, metadata=png_metadata(run_id) if run_id else None)
    plt.close(fig)


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
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(table):
        table.loc[table["shots"] < 0, "shots"] = pd.NA
        table.loc[table["draw"] < 0, "draw"] = pd.NA
    for position, (key, value) in enumerate(board.provenance().items()):
        table.insert(position, key, value)
    return table


def write_leaderboard(
    board: Leaderboard, out: str | Path, *, overwrite: bool = False, markdown_extra: str = ""
) -> dict[str, Path]:
    """Write leaderboard.json, .csv, .md and .png, per_user.csv, predictions.parquet, best_of_n.png (rating
    rows), breakdown.csv and .png (when a rating row can be broken down) and, with three or more k values,
    curve.csv and curve.png into ``out`` as one set; returns the paths.

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
    """Write every file of a set into the existing folder ``out``; returns the file names by key."""
    names = {ext: f"leaderboard.{ext}" for ext in ("json", "csv", "md", "png")}
    (out / names["json"]).write_text(
        json.dumps(board.to_json(), indent=2, allow_nan=False, default=_json_default)
    )
    write_csv(board, out / names["csv"])
    breakdown = bd.breakdown(board.rows, board.dataset, board.seed)
    markdown = to_markdown(board, breakdown)
    (out / names["md"]).write_text(markdown + (f"\n{markdown_extra}" if markdown_extra else ""))
    write_chart(board, out / names["png"])
    names["per_user"] = "per_user.csv"
    write_per_user(board, out / names["per_user"])
    names["predictions"] = "predictions.parquet"
    predictions_table(board).to_parquet(out / names["predictions"], index=False)
    if write_best_of_n_chart(board, out / "best_of_n.png"):
        names["best_of_n"] = "best_of_n.png"
    if write_curve(board, out / "curve.csv", out / "curve.png"):
        names["curve_csv"], names["curve_png"] = "curve.csv", "curve.png"
    if write_breakdown(board, breakdown, out / "breakdown.csv", out / "breakdown.png"):
        names["breakdown_csv"], names["breakdown_png"] = "breakdown.csv", "breakdown.png"
    return names


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
