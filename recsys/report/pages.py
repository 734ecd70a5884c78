"""leaderboard.md, leaderboard.html and breakdown.md, rendered from templates (``templates/``) with what the
report table (``recsys.report.table``) and the breakdowns (``recsys.evaluation.breakdown``) hold.

``page_context`` builds the one context both leaderboard pages read: the model to pick per task, the data
policy, a table per task (cells formatted once, the best model per metric flagged), the rows not measured
(one line per shared reason), the best-of-n tables and the breakdown summary. leaderboard.md stays short: each
model's per-group values go to breakdown.md.
"""

from __future__ import annotations

import base64
from pathlib import Path

from recsys.evaluation import breakdown as bd
from recsys.evaluation.metrics import NDCG_K
from recsys.evaluation.stats import CORRECTION, task_of
from recsys.leaderboard import Leaderboard
from recsys.models.base import DATA_POLICY
from recsys.models.registry import CEILING, CONSENSUS, model_role
from recsys.report.table import (
    OVER_CONSENSUS,
    PAIR_METRIC_SET,
    RATING_METRIC_SET,
    ReportTable,
    build_table,
    fallback_line,
    fmt,
    fmt_p,
    interval,
    protocol_line,
    task_label,
)
from recsys.report.templating import render

#: the charts leaderboard.html embeds when they were written, with their captions
CHARTS = (
    ("leaderboard.png", "The primary metric with its 95% interval, per task"),
    ("curve.png", "Against k, the number of references per new user"),
    ("best_of_n.png", "Best of n: the uplift of each model's pick"),
    ("breakdown.png", "By user group and image group"),
)


def _users_line(table: ReportTable, task) -> str:
    """How many users each metric averaged in one task (and who was left out)."""
    rows = table.of_task(task)
    if rows.empty:
        return ""
    first = rows.iloc[0]
    parts = [f"{m} {int(first[m + '_users'] or 0)}" for m in table.metrics.user]
    text = "Users averaged: " + ", ".join(parts)
    if first["ndcg_left_out"]:
        text += f" ({first['ndcg_left_out']} user(s) with {NDCG_K} or fewer queries left out of ndcg@10)"
    if first["skipped_users"]:
        text += f"; {first['skipped_users']} user(s) skipped for too few {table.unit} for the largest k"
    if first["shots"] is not None:
        text += f"; {first['n_ratings']} queries per draw, {first['draws']} draw(s)"
    return text + ". A cell marked (n=...) averaged a different number of users."


def _tests_line(table: ReportTable, task) -> str:
    """Which correction the task's p-values carry, over how many models."""
    tests = table.tests.get(task)
    if tests is None or not tests.family:
        return "No paired test: fewer than two measured models with per-user values."
    return (
        f"`p`: {table.metrics.primary} of `{tests.best}` against each model, Wilcoxon signed-rank over users, "
        f"{CORRECTION}-corrected over the {tests.family} models of the task it is compared with (`p raw`: "
        "uncorrected)."
    )


def _task_section(table: ReportTable, task) -> dict:
    """One task's table: a row per measured model, cells formatted, the best per metric flagged."""
    ms = table.metrics
    rows = table.of_task(task).to_dict("records")
    reference = rows[0] if rows else None
    out = []
    for r in rows:
        cells = []
        for m in ms.shown:
            text = fmt(r[m], 0 if m == "ties" else 3)
            if m in ms.ci and interval(r[m + "_lo"], r[m + "_hi"]):
                text += " " + interval(r[m + "_lo"], r[m + "_hi"])
            if m in ms.user and reference is not None:
                n = r[m + "_users"]
                if n is not None and n != reference[m + "_users"]:
                    text += f" (n={n})"
            cells.append({"text": text, "best": bool(r.get(f"best:{m}", False))})
        if r[f"best:{ms.primary}"]:
            p, p_raw = "best", "-"
        elif r["role"] == CEILING:
            p, p_raw = "ceiling", "-"
        else:
            p, p_raw = fmt_p(r["p_holm"]), fmt_p(r["p"])
        out.append(
            {
                "label": r["label"],
                "users": r["users"],
                "cells": cells,
                "p": p,
                "p_raw": p_raw,
                "fit": f"{r['fit_seconds']:.2f}",
                "predict": f"{r['predict_seconds']:.3f}",
            }
        )
    return {
        "label": task_label(*task),
        "users_line": _users_line(table, task),
        "tests_line": _tests_line(table, task),
        "fallback_line": fallback_line([r for r in table.board.rows if task_of(r) == task]),
        "rows": out,
    }


def _best_of_n(table: ReportTable) -> dict | None:
    """The best-of-n tables per task (rows with best-of-n metrics), with each model's uplift over the
    consensus model's; None without best-of-n metrics."""
    ns = table.best_of_n
    if not ns:
        return None
    top = f"best_of_n_uplift@{ns[-1]}"
    measured = table.measured
    rows = measured[measured[top].notna()]
    true = bool(rows[f"best_of_n_true_uplift@{ns[-1]}"].notna().any())
    consensus = table.consensus
    head = [f"uplift@{n}" for n in ns] + [f"hit@{n}" for n in ns]
    head += [f"over {consensus or 'consensus'} @{ns[-1]}"] + ([f"true uplift@{ns[-1]}"] if true else [])
    tasks = []
    for task in table.tasks:
        mine = rows[rows["task_key"].map(lambda key, task=task: key == task)]
        if mine.empty:
            continue
        lines = []
        for r in mine.to_dict("records"):
            cells = [fmt(r[f"best_of_n_uplift@{n}"]) for n in ns] + [fmt(r[f"best_of_n_hit@{n}"]) for n in ns]
            over = r.get(OVER_CONSENSUS, float("nan"))
            low, high = (
                r.get(OVER_CONSENSUS + "_lo", float("nan")),
                r.get(OVER_CONSENSUS + "_hi", float("nan")),
            )
            interval = "" if low != low else f" [{low:+.3f}, {high:+.3f}]"
            if model_role(r["model"]) == CONSENSUS:
                cells.append("consensus")
            else:
                cells.append("-" if over != over else f"{over:+.3f}{interval}")
            cells += [fmt(r[f"best_of_n_true_uplift@{ns[-1]}"])] if true else []
            lines.append({"label": r["label"], "cells": cells})
        tasks.append({"label": task_label(*task), "rows": lines})
    return {"consensus": consensus, "true": true, "head": head, "tasks": tasks}


def _gap_text(gap: dict | None) -> str:
    if gap is None:
        return f"no two groups of {bd.MIN_GROUP_USERS}+ users"
    overlap = "intervals do not overlap" if gap["separated"] else "intervals overlap"
    return f"{gap['dimension']} {gap['high']} vs {gap['low']}, {gap['gap']:.3f}, {overlap}"


def _breakdown(breakdown: bd.Breakdown) -> dict | None:
    """The breakdown summary (largest gap per model and dimension) on the main task, and each model's groups
    (for breakdown.md); None when no row could be broken down."""
    task = breakdown.task
    if task is None:
        return None
    out = {
        "task": task_label(*task),
        "empty": breakdown.table.empty,
        "missing": list(breakdown.missing),
        "dimensions": list(breakdown.dimensions),
        "min_category_queries": bd.MIN_CATEGORY_QUERIES,
        "min_group_users": bd.MIN_GROUP_USERS,
        "max_levels": bd.MAX_LEVELS,
        "age_bins": "/".join(label for _, label in bd.AGE_BINS[1:]),
        "models": [],
        "details": [],
    }
    if breakdown.table.empty:
        return out
    table = bd.task_rows(breakdown.table, task)
    gaps, by_dimension = bd.gaps(table), bd.dimension_gaps(table)
    for model in dict.fromkeys(table["model"]):
        cells = []
        for dimension in breakdown.dimensions:
            gap = by_dimension.get(model, {}).get(dimension)
            cells.append("-" if gap is None else f"{gap['gap']:.3f}" + (" †" if gap["separated"] else ""))
        out["models"].append({"model": model, "flagged": _gap_text(gaps.get(model)), "cells": cells})
    for model, rows in table.groupby("model", sort=False):
        groups = [
            {
                "dimension": r.dimension,
                "group": r.group,
                "n": r.n_users,
                "value": f"{r.user_srocc:.3f}",
                "interval": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
            }
            for r in rows.itertuples()
        ]
        out["details"].append({"model": model, "flagged": _gap_text(gaps.get(model)), "groups": groups})
    return out


def page_context(table: ReportTable, breakdown: bd.Breakdown) -> dict:
    """Everything leaderboard.md and leaderboard.html show (module docstring)."""
    board, ms = table.board, table.metrics
    ds = board.dataset
    validation = "none (the tuned refit includes it)" if "val_seen" in board.fit_split else "val_seen"
    ceiling = table.ceiling
    picks = table.picks()
    return {
        "name": ds.name,
        "simulated": ds.simulated,
        "unit": table.unit,
        "fingerprint": ds.fingerprint(),
        "run_id": board.run_id,
        "protocol": protocol_line(table),
        "policy": f"{DATA_POLICY.describe()} This run fits on `{board.fit_split}`; validation split: "
        f"{validation}. Each row's `validation_split` is in leaderboard.json.",
        "splits": f"{ds.describe_splits(board.fit_split)} (`splits` in leaderboard.json).",
        "tuned": [{"model": m, "study": t["study"]} for m, t in board.tuned.items()],
        "defaults": "; ".join(f"{m}: {why}" for m, why in board.defaults.items()),
        "primary": ms.primary,
        "ceiling": ceiling,
        "correction": CORRECTION,
        "picks": [
            {
                "task": task_label(*p.task),
                "model": p.model,
                "value": fmt(p.value) + (" " + interval(p.lo, p.hi) if interval(p.lo, p.hi) else ""),
                "runner_up": p.runner_up,
                "runner_up_value": fmt(p.runner_up_value),
                "p": fmt_p(p.p_holm),
            }
            for p in picks
        ],
        "scale_note": (
            f"ndcg@10 gains are scores minus the scale's minimum ({ds.score_range[0]:g})."
            if ms is RATING_METRIC_SET
            else "Choices: P(a chosen over b); ties are left out of the accuracies and counted (`ties`)."
            if ms is PAIR_METRIC_SET
            else "Top-N: recall@k is the share of a user's relevant held-out images among the k it ranks first, "
            "ndcg@k its binary-gain NDCG; equal scores rank an irrelevant image first. Users without a relevant "
            "held-out image are left out (`users` counts those averaged). `popularity` ranks images by their "
            "number of fit ratings, the same for everyone (label-free)."
        ),
        "shown": list(ms.shown),
        "tasks": [_task_section(table, task) for task in table.tasks if not table.of_task(task).empty],
        "not_measured": [group.text() for group in table.not_measured()],
        "best_of_n": _best_of_n(table),
        "breakdown": _breakdown(breakdown),
    }


def _context(board: Leaderboard, breakdown: bd.Breakdown | None, table: ReportTable | None) -> dict:
    table = table or build_table(board)
    return page_context(table, breakdown or bd.breakdown(board.rows, board.dataset, board.seed))


def to_markdown(
    board: Leaderboard, breakdown: bd.Breakdown | None = None, table: ReportTable | None = None
) -> str:
    """leaderboard.md: the model to pick per task, tables per task (best in bold per metric, Holm-corrected
    Wilcoxon p-values against the best), the rows not measured, best of n and the breakdown summary
    (``breakdown`` and ``table`` are computed here when not given)."""
    return render("leaderboard.md.j2", **_context(board, breakdown, table))


def breakdown_markdown(board: Leaderboard, breakdown: bd.Breakdown) -> str | None:
    """breakdown.md: each model's user SROCC per group on the main task, with intervals; None when no row
    could be broken down."""
    found = _breakdown(breakdown)
    if found is None or found["empty"]:
        return None
    return render(
        "breakdown.md.j2",
        name=board.dataset.name,
        simulated=board.dataset.simulated,
        run_id=board.run_id,
        **found,
    )


def to_html(
    board: Leaderboard,
    breakdown: bd.Breakdown | None = None,
    table: ReportTable | None = None,
    charts: Path | None = None,
    extra: bool = False,
) -> str:
    """leaderboard.html: what leaderboard.md shows, as one self-contained page (inline CSS, the charts of
    ``CHARTS`` found in the folder ``charts`` embedded as data: URIs). ``extra``: leaderboard.md has a section
    the page does not (numbers reported by others), and the page says so."""
    context = _context(board, breakdown, table)
    figures = []
    for name, caption in CHARTS:
        if charts is not None and (charts / name).is_file():
            data = base64.b64encode((charts / name).read_bytes()).decode("ascii")
            figures.append({"name": name, "caption": caption, "uri": f"data:image/png;base64,{data}"})
    return render("leaderboard.html.j2", **context, figures=figures, extra=extra)
