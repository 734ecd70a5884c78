"""Leaderboard files: JSON, CSV, Markdown (best marked, paired tests) and a PNG chart of user_srocc."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from recsys.evaluation.evaluator import Result
from recsys.evaluation.metrics import HIGHER_IS_BETTER
from recsys.leaderboard import Leaderboard

METRICS = ("user_srocc", "pairwise_acc", "ndcg@10", "srocc", "plcc", "rmse", "mae")
TABLE_METRICS = ("user_srocc", "pairwise_acc", "ndcg@10", "rmse")


def _task(row: Result) -> tuple[str, int | None]:
    return row.split, row.shots


def _task_label(split: str, shots: int | None) -> str:
    return split if shots is None else f"{split} ({shots}-shot)"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def best_models(rows: list[Result]) -> dict[tuple, dict[str, str]]:
    """Per (split, shots) task and metric, the best model among measured rows (the oracle excluded)."""
    best: dict[tuple, dict[str, str]] = {}
    for task in dict.fromkeys(_task(r) for r in rows):
        candidates = [r for r in rows if _task(r) == task and r.metrics and r.model != "oracle"]
        best[task] = {}
        for metric in METRICS:
            scored = [r for r in candidates if not math.isnan(r.metrics[metric])]
            if scored:
                pick = (max if HIGHER_IS_BETTER[metric] else min)(scored, key=lambda r: r.metrics[metric])
                best[task][metric] = pick.model
    return best


def paired_tests(rows: list[Result], metric: str = "user_srocc") -> dict[tuple, dict[str, float]]:
    """Wilcoxon signed-rank p-values over users between the best model of each task and each other model."""
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


def format_table(board: Leaderboard) -> str:
    """A fixed-width table for the terminal."""
    head = f"{'model':<27} {'split':<24} {'users':>5} " + " ".join(f"{m:>12}" for m in TABLE_METRICS)
    head += f" {'fit s':>8} {'pred s':>8}"
    lines = [
        f"dataset: {board.dataset.name}" + ("  [SIMULATED data]" if board.dataset.simulated else ""),
        head,
        "-" * len(head),
    ]
    for row in board.rows:
        label = _task_label(row.split, row.shots)
        if row.metrics is None:
            lines.append(f"{row.model:<27} {label:<24} {row.n_users:>5}  {row.status}: {row.reason}")
            continue
        values = []
        for m in TABLE_METRICS:
            value = _fmt(row.metrics[m])
            if m in (row.ci95 or {}):
                lo, hi = row.ci95[m]
                value = f"{value}±{_fmt((hi - lo) / 2, 2)[1:]}" if not math.isnan(lo) else value
            values.append(f"{value:>12}")
        lines.append(
            f"{row.model:<27} {label:<24} {row.n_users:>5} "
            + " ".join(values)
            + f" {row.fit_seconds:>8.2f} {row.predict_seconds:>8.3f}"
        )
    return "\n".join(lines)


def to_markdown(board: Leaderboard) -> str:
    """Markdown tables per task: best model in bold per metric, Wilcoxon p-value against the best."""
    best = best_models(board.rows)
    tests = paired_tests(board.rows)
    ds = board.dataset
    lines = [
        f"# Leaderboard: {ds.name}",
        "",
        (
            "**Simulated data** (calibrated to PAMELA's published statistics; not ratings by real people). "
            if ds.simulated
            else ""
        )
        + f"Fingerprint `{ds.fingerprint()}`, protocol seed {board.seed}, shots {list(board.shots)}.",
        "",
        "Best measured model per task and metric in **bold** (the oracle, where present, is the simulator's "
        "ground truth and is never marked). `p` is a two-sided Wilcoxon signed-rank test over users of the "
        "per-user SROCC against the best model by user_srocc. ± is half the 95% bootstrap interval over users.",
    ]
    for task in dict.fromkeys(_task(r) for r in board.rows):
        split, shots = task
        lines += ["", f"## {_task_label(split, shots)}", ""]
        lines.append("| model | users | " + " | ".join(METRICS) + " | p (user_srocc) | fit s | predict s |")
        lines.append("|---|---:|" + "---:|" * len(METRICS) + "---:|---:|---:|")
        for row in (r for r in board.rows if _task(r) == task):
            if row.metrics is None:
                lines.append(
                    f"| {row.model} | {row.n_users} | {row.status}: {row.reason} |"
                    + " |" * (len(METRICS) + 2)
                )
                continue
            cells = []
            for m in METRICS:
                cell = _fmt(row.metrics[m])
                if m in (row.ci95 or {}) and not math.isnan(row.ci95[m][0]):
                    cell += f" ± {_fmt((row.ci95[m][1] - row.ci95[m][0]) / 2)}"
                if best.get(task, {}).get(m) == row.model:
                    cell = f"**{cell}**"
                cells.append(cell)
            p = tests.get(task, {}).get(row.model)
            p_cell = (
                "best"
                if best.get(task, {}).get("user_srocc") == row.model
                else ("-" if p is None or math.isnan(p) else f"{p:.2g}")
            )
            lines.append(
                f"| {row.model} | {row.n_users} | "
                + " | ".join(cells)
                + f" | {p_cell} | {row.fit_seconds:.2f} | {row.predict_seconds:.3f} |"
            )
    return "\n".join(lines) + "\n"


def write_csv(board: Leaderboard, path: Path) -> None:
    fields = ["model", "split", "shots", "n_users", "n_ratings", "status", *METRICS,
              "user_srocc_lo", "user_srocc_hi", "pairwise_acc_lo", "pairwise_acc_hi", "fit_seconds", "predict_seconds"]  # fmt: skip
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in board.rows:
            record = {
                "model": row.model, "split": row.split, "shots": "" if row.shots is None else row.shots,
                "n_users": row.n_users, "n_ratings": row.n_ratings, "status": row.status,
                "fit_seconds": f"{row.fit_seconds:.4f}", "predict_seconds": f"{row.predict_seconds:.4f}",
            }  # fmt: skip
            for m in METRICS:
                record[m] = "" if row.metrics is None else f"{row.metrics[m]:.6f}"
            for m in ("user_srocc", "pairwise_acc"):
                lo, hi = row.ci95[m] if row.ci95 else ("", "")
                record[f"{m}_lo"], record[f"{m}_hi"] = lo, hi
            writer.writerow(record)


def write_chart(board: Leaderboard, path: Path) -> None:
    """Horizontal bars of user_srocc with 95% intervals, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(_task(r) for r in board.rows))
    models = list(dict.fromkeys(r.model for r in board.rows))
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(4.2 * len(tasks), 0.45 * len(models) + 1.6), sharey=True, squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = {r.model: r for r in board.rows if _task(r) == task}
        values, errors, colours = [], [[], []], []
        for m in models:
            r = rows.get(m)
            v = r.metrics["user_srocc"] if r and r.metrics else float("nan")
            lo, hi = r.ci95["user_srocc"] if r and r.ci95 else (v, v)
            values.append(v)
            errors[0].append(max(0.0, v - lo) if not math.isnan(v) else 0)
            errors[1].append(max(0.0, hi - v) if not math.isnan(v) else 0)
            colours.append("#999999" if m == "oracle" else "#3b75af")
        ax.barh(range(len(models)), np.nan_to_num(values), xerr=errors, color=colours, capsize=3)
        ax.set_title(_task_label(*task), fontsize=10)
        ax.set_xlabel("user SROCC (95% CI)")
        ax.set_xlim(min(0.0, np.nanmin(values) if not all(map(math.isnan, values)) else 0), 1.0)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(models)), models)
    axes[0][0].invert_yaxis()
    title = board.dataset.name + (" — SIMULATED data" if board.dataset.simulated else "")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_leaderboard(board: Leaderboard, out: str | Path) -> dict[str, Path]:
    """Write leaderboard.json, .csv, .md and .png (plus per_user.csv) into ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"leaderboard.{ext}" for ext in ("json", "csv", "md", "png")}
    paths["json"].write_text(json.dumps(board.to_json(), indent=2, allow_nan=False, default=_json_default))
    write_csv(board, paths["csv"])
    paths["md"].write_text(to_markdown(board))
    write_chart(board, paths["png"])
    per_user = out / "per_user.csv"
    with open(per_user, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "split", "shots", "user_id", "metric", "value"])
        for row in board.rows:
            for metric, values in row.per_user.items():
                for user, value in values.items():
                    writer.writerow([row.model, row.split, "" if row.shots is None else row.shots,
                                     board.dataset.user_ids[user], metric, f"{value:.6f}"])  # fmt: skip
    paths["per_user"] = per_user
    return paths


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
