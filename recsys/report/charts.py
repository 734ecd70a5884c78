"""The leaderboard's charts (matplotlib, Agg): leaderboard.png, best_of_n.png, curve.png and breakdown.png.

Every chart reads the report table (``recsys.report.table``) or a table written beside it (curve.csv,
breakdown.csv) and draws measured rows only: a model that was not measured (unsupported, skipped) has no bar,
no line and no legend entry. The ceiling (registry role) is drawn grey. Each PNG shows the run id in its title
and holds it as a ``run_id`` text chunk.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.models.registry import CEILING, CONSENSUS, model_role
from recsys.report.table import CURVE_MIN_SHOTS, ReportTable, board_title, task_label

#: bar colours: a measured model, the ceiling
BAR, CEILING_COLOUR = "#3b75af", "#999999"
#: the ceiling's line in curve.png
CEILING_LINE = "#777777"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_metadata(run_id: str) -> dict[str, str]:
    """PNG text chunks: the run id (``run_id``) that every file of a set carries."""
    return {"run_id": run_id, "Description": f"recsys leaderboard run {run_id}"}


def chart_tasks(table: ReportTable) -> list[tuple[str, int | None]]:
    """The bar chart's panels: every seen split, and for an unseen split with many k only the smallest and the
    largest (curve.png draws them all)."""
    out = []
    for split in dict.fromkeys(s for s, _ in table.tasks):
        shots = [k for s, k in table.tasks if s == split]
        if len(shots) >= CURVE_MIN_SHOTS and None not in shots:
            shots = [min(shots), max(shots)]
        out += [(split, k) for k in shots]
    return out


def _panels(plt, n_tasks: int, n_labels: int):
    """A figure of ``n_tasks`` side-by-side bar panels sharing ``n_labels`` rows."""
    size = (4.2 * n_tasks + 1.5, 0.32 * n_labels + 1.8)
    return plt.subplots(1, n_tasks, figsize=size, sharey=True, squeeze=False)


def _save_panels(fig, axes, labels: list[str], table: ReportTable, heading: str, path: Path) -> None:
    """Row labels, the title (``heading`` with ``{title}``: the dataset, labelled when simulated; then the run
    id), and the PNG with the run id in its metadata."""
    board = table.board
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle(heading.format(title=board_title(board)) + f"; run {board.run_id}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=png_metadata(board.run_id))
    pyplot().close(fig)


def _not_measured(ax, position: int) -> None:
    ax.text(0.005, position, "not measured", va="center", fontsize=7, color="#999999")


def write_chart(table: ReportTable, path: Path) -> bool:
    """Horizontal bars of the primary metric with 95% intervals, one panel per task (``chart_tasks``), a row
    per measured model; False (nothing written) when no row was measured."""
    measured = table.measured
    if measured.empty:
        return False
    plt = pyplot()
    primary = table.metrics.primary
    tasks = chart_tasks(table)
    labels = list(dict.fromkeys(measured["label"]))
    roles = dict(zip(measured["label"], measured["role"], strict=True))
    fig, axes = _panels(plt, len(tasks), len(labels))
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = table.of_task(task).set_index("label")
        values, errors, colours = [], [[], []], []
        for position, label in enumerate(labels):
            v = rows[primary].get(label, float("nan"))
            lo = rows[primary + "_lo"].get(label, v) if primary + "_lo" in rows else v
            hi = rows[primary + "_hi"].get(label, v) if primary + "_hi" in rows else v
            if math.isnan(v):
                _not_measured(ax, position)
            values.append(v)
            errors[0].append(0.0 if math.isnan(v) or math.isnan(lo) else max(0.0, v - lo))
            errors[1].append(0.0 if math.isnan(v) or math.isnan(hi) else max(0.0, hi - v))
            colours.append(CEILING_COLOUR if roles[label] == CEILING else BAR)
        ax.barh(range(len(labels)), np.nan_to_num(values), xerr=errors, color=colours, capsize=2)
        ax.set_title(task_label(*task), fontsize=10)
        ax.set_xlabel(("user SROCC" if primary == "user_srocc" else primary) + " (95% CI)")
        finite = [v for v in values if not math.isnan(v)]
        ax.set_xlim(min(0.0, min(finite)) if finite else 0.0, 1.0)
        ax.grid(axis="x", alpha=0.3)
    _save_panels(fig, axes, labels, table, f"{{title}}; {table.board.draws} draw(s) per new user", path)
    return True


def write_best_of_n_chart(table: ReportTable, path: Path) -> bool:
    """Bars of each model's best-of-n uplift at the largest n, one panel per task (as the bar chart's), with the
    consensus model's as a dashed line; the ceiling grey. False (nothing written) without best-of-n metrics."""
    if not table.best_of_n:
        return False
    n = table.best_of_n[-1]
    metric = f"best_of_n_uplift@{n}"
    measured = table.measured
    rows = measured[measured[metric].notna()]
    if rows.empty:
        return False
    plt = pyplot()
    present = set(rows["task_key"])
    tasks = [t for t in chart_tasks(table) if t in present]
    labels = list(dict.fromkeys(rows["label"]))
    roles = dict(zip(rows["label"], rows["role"], strict=True))
    fig, axes = _panels(plt, len(tasks), len(labels))
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = rows[rows["task_key"].map(lambda key, task=task: key == task)].set_index("label")
        values = [mine[metric].get(label, float("nan")) for label in labels]
        for position, value in enumerate(values):
            if math.isnan(value):
                _not_measured(ax, position)
        colours = [CEILING_COLOUR if roles[label] == CEILING else BAR for label in labels]
        ax.barh(range(len(labels)), np.nan_to_num(values), color=colours)
        consensus = mine[mine["role"] == CONSENSUS]
        if len(consensus):
            name = consensus["model"].iloc[0]
            ax.axvline(consensus[metric].iloc[0], color="black", ls="--", lw=1, label=f"consensus ({name})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(task_label(*task), fontsize=10)
        ax.set_xlabel(f"uplift of the pick of {n} over their mean")
        ax.grid(axis="x", alpha=0.3)
    _save_panels(fig, axes, labels, table, f"Best of {n}: {{title}}", path)
    return True


def plot_curve(
    table: pd.DataFrame, title: str, png_path: Path, run_id: str | None = None, unit: str = "ratings"
) -> None:
    """Draw a curve.csv table: a row of panels per unseen split, one panel per metric, k on evenly spaced
    positions (0 and 1 stay apart). Models without a value (not measured) are left out. Models are ranked by
    their first metric at the largest k; each keeps one colour and line style in every panel, the ceiling a
    grey dotted line. ``unit``: what a reference is (ratings or choices), for the axis label."""
    plt = pyplot()
    table = table[table.groupby("model")["value"].transform(lambda v: v.notna().any())]
    splits = list(dict.fromkeys(table["split"]))
    metrics = list(dict.fromkeys(table["metric"]))
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # grey is the ceiling's
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
        others = [m for m in ranked if model_role(m) != CEILING]
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            part = rows[rows["metric"] == metric]
            for model in ranked:
                line = part[part["model"] == model].sort_values("shots")
                x = [position[k] for k in line["shots"]]
                if model_role(model) == CEILING:
                    colour, style = CEILING_LINE, ":"
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
            ax.set_xlabel(f"k (reference {unit} per new user)")
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


#: the groups of one breakdown dimension: at most bd.MAX_LEVELS named ones and "other", one colour and marker
#: each (tab10 without its grey)
GROUP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_breakdown(table: pd.DataFrame, title: str, png_path: Path, run_id: str | None = None) -> None:
    """Small multiples, one panel per dimension: a row per model (the same order in every panel), user SROCC
    along x, each group of the dimension one colour and marker with its 95% interval, side by side within the
    model's row; the panel's legend names the groups with their users. The ceiling's label is grey."""
    plt = pyplot()
    dimensions = list(dict.fromkeys(table["dimension"]))
    models = list(dict.fromkeys(table["model"]))
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    columns = min(3, len(dimensions))
    n_rows = -(-len(dimensions) // columns)
    height = 0.34 * len(models) + 1.6
    fig, axes = plt.subplots(
        n_rows, columns, figsize=(5.6 * columns, height * n_rows), squeeze=False, sharey=True
    )
    row_of = {m: i for i, m in enumerate(models)}
    for ax, dimension in zip(axes.flat, dimensions, strict=False):
        part = table[table["dimension"] == dimension]
        groups = list(dict.fromkeys(part["group"]))
        n = part.groupby("group", sort=False)["n_users"].max()
        step = 0.8 / max(1, len(groups))
        for g, group in enumerate(groups):
            lines = part[part["group"] == group]
            y = lines["model"].map(row_of).to_numpy() - 0.4 + step * (g + 0.5)
            colour = palette[g % len(palette)]
            ax.hlines(y, lines["ci_low"], lines["ci_high"], colors=[colour], linewidth=0.9)
            ax.scatter(
                lines["user_srocc"],
                y,
                color=colour,
                marker=GROUP_MARKERS[g % len(GROUP_MARKERS)],
                s=14,
                zorder=3,
                label=f"{group} (n={n[group]})",
            )
        ax.set_title(dimension, fontsize=10)
        ax.set_xlabel("user SROCC (95% CI over users)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        for boundary in range(1, len(models)):
            ax.axhline(boundary - 0.5, color="#eeeeee", linewidth=0.6, zorder=0)
        ax.legend(fontsize=7, loc="best", frameon=True, framealpha=0.85, title="group", title_fontsize=7)
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(models)), models, fontsize=8)
        for label in ax.get_yticklabels():
            if model_role(label.get_text()) == CEILING:
                label.set_color(CEILING_LINE)
    axes[0][0].set_ylim(len(models) - 0.5, -0.5)
    for ax in list(axes.flat)[len(dimensions) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # the title above the panels' own
    fig.savefig(png_path, dpi=85, metadata=png_metadata(run_id) if run_id else None)
    plt.close(fig)
