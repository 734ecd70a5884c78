"""One table of a leaderboard's rows, built once (``build_table``), that every output reads: the terminal table,
leaderboard.md and .html, leaderboard.csv and the charts.

The table holds one line per board row (``ReportTable.frame``: names, task, status, every metric with its
interval and user count, timings), the statistics of ``recsys.evaluation.stats`` (best model per task and
metric, the paired tests of the primary metric with their Holm-adjusted p-values), each row's best-of-n uplift
over the consensus model, and the rows that were not measured, grouped by reason (``not_measured``). Models are
singled out by their registry role (``ceiling``, ``consensus``), never by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys.evaluation import stats
from recsys.evaluation.evaluator import CI_METRICS, USER_METRICS, Result
from recsys.evaluation.pairwise import PAIR_METRICS
from recsys.evaluation.stats import Task, task_of
from recsys.leaderboard import Leaderboard
from recsys.models.registry import CEILING, CONSENSUS, model_role

METRICS = ("user_srocc", "pairwise_acc", "ndcg@10", "srocc", "plcc", "rmse", "mae")
TABLE_METRICS = ("user_srocc", "pairwise_acc", "ndcg@10", "rmse")
#: the metrics drawn against k in curve.png (with their 95% bands)
CURVE_METRICS = ("user_srocc", "pairwise_acc")
#: a k-curve is drawn (and the bar chart shows only the end points of k) from this many k values on
CURVE_MIN_SHOTS = 3
#: a row's best-of-n uplift over the consensus model's, at the largest n
OVER_CONSENSUS = "over_consensus"


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


def best_models(rows: list[Result]) -> dict[Task, dict[str, str]]:
    """Per (split, shots) task and ranked metric, the best measured model (the ceiling excluded)."""
    return stats.best_models(rows, metric_set(rows).ranked)


def paired_tests(rows: list[Result], metric: str | None = None) -> dict[Task, dict[str, float]]:
    """Per task, the Holm-adjusted Wilcoxon p-value of each model against the task's best on ``metric`` (default:
    the primary metric); ``stats.paired_tests`` has the raw ones too."""
    tests = stats.paired_tests(rows, metric or metric_set(rows).primary)
    return {task: {m: t.p_holm for m, t in found.tests.items()} for task, found in tests.items()}


def task_label(split: str, shots: int | None) -> str:
    return split if shots is None else f"{split} ({shots}-shot)"


def row_label(row: Result) -> str:
    """The model's name, marked on a ``--tuned`` board by where its hyperparameters come from: a study (tuned),
    its defaults, or --params."""
    if row.tuned:
        return f"{row.model} (tuned)"
    return f"{row.model} ({row.params_source})" if row.params_source else row.model


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_p(value: float | None) -> str:
    """A p-value to two significant digits, ``-`` when there is none."""
    return "-" if value is None or math.isnan(value) else f"{value:.2g}"


def interval(lo: float, hi: float) -> str:
    """``[lo, hi]`` of a 95% interval, or empty when there is none."""
    return "" if lo is None or math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"


def best_of_n_values(rows: list[Result]) -> tuple[int, ...]:
    """The n of the rows' best-of-n metrics, ascending (empty without any)."""
    found = {
        int(m.split("@")[1])
        for r in rows
        if r.metrics
        for m in r.metrics
        if m.startswith("best_of_n_uplift@")
    }
    return tuple(sorted(found))


@dataclass(frozen=True)
class NotMeasured:
    """Rows without metrics that share a status and a reason: their models and the tasks they cover."""

    status: str
    reason: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]

    def text(self) -> str:
        """``status (n): models: reason``, with ``on TASKS`` after the status when not every task."""
        where = "" if not self.tasks else f" on {', '.join(self.tasks)}"
        return f"{self.status}{where} ({len(self.models)}): {', '.join(self.models)}: {self.reason}"


@dataclass(frozen=True)
class Pick:
    """The model to pick for one task: the best by the primary metric (the ceiling excluded), and the runner-up
    with the Holm-adjusted p-value of the best against it (None without a runner-up)."""

    task: Task
    model: str
    value: float
    lo: float
    hi: float
    runner_up: str | None
    runner_up_value: float
    p_holm: float

    def text(self) -> str:
        head = f"{task_label(*self.task)}: {self.model} {fmt(self.value)}"
        if self.runner_up is None:
            return head
        return f"{head} (next {self.runner_up} {fmt(self.runner_up_value)}, p = {fmt_p(self.p_holm)})"


@dataclass
class ReportTable:
    """A board's rows as one table (``frame``, a line per row in board order) and its statistics."""

    board: Leaderboard
    metrics: MetricSet
    frame: pd.DataFrame
    tasks: list[Task]
    best: dict[Task, dict[str, str]]
    tests: dict[Task, stats.TaskTests]
    #: the n of the best-of-n metrics (empty without any)
    best_of_n: tuple[int, ...]

    @property
    def unit(self) -> str:
        """What a user gives: ``choices`` on data of pairwise choices, else ``ratings``."""
        return "choices" if self.metrics is PAIR_METRIC_SET else "ratings"

    @property
    def measured(self) -> pd.DataFrame:
        return self.frame[self.frame["measured"]]

    def of_task(self, task: Task, measured_only: bool = True) -> pd.DataFrame:
        """The lines of one task (measured ones only by default)."""
        frame = self.measured if measured_only else self.frame
        return frame[frame["task_key"].map(lambda key: key == task)]

    def role_model(self, role: str) -> str | None:
        """The name of the board's model with registry role ``role``, or None."""
        return next((m for m in self.frame["model"] if model_role(m) == role), None)

    @property
    def ceiling(self) -> str | None:
        return self.role_model(CEILING)

    @property
    def consensus(self) -> str | None:
        return self.role_model(CONSENSUS)

    def picks(self) -> list[Pick]:
        """Per task with a best model, which one to pick (``Pick``)."""
        primary, out = self.metrics.primary, []
        for task in self.tasks:
            tests = self.tests.get(task)
            if tests is None:
                continue
            rows = [r for r in self.board.rows if task_of(r) == task]
            best = next(r for r in rows if r.model == tests.best and r.metrics)
            lo, hi = (best.ci95 or {}).get(primary, (float("nan"), float("nan")))
            runner = tests.runner_up(rows)
            out.append(
                Pick(
                    task,
                    row_label(best),
                    best.metrics[primary],
                    lo,
                    hi,
                    None if runner is None else row_label(runner),
                    float("nan") if runner is None else runner.metrics[primary],
                    float("nan") if runner is None else tests.tests[runner.model].p_holm,
                )
            )
        return out

    def not_measured(self) -> list[NotMeasured]:
        """The rows without metrics, grouped by status, reason (the model's own name taken out) and the tasks
        they cover; the tasks are left empty when a group covers every task."""
        groups: dict[tuple[str, str], dict[str, list[str]]] = {}
        for line in self.frame[~self.frame["measured"]].itertuples():
            reason = _without_name(line.reason or "", line.model)
            groups.setdefault((line.status, reason), {}).setdefault(line.label, []).append(line.task)
        every = [task_label(*t) for t in self.tasks]
        out: list[NotMeasured] = []
        for (status, reason), models in groups.items():
            by_tasks: dict[tuple[str, ...], list[str]] = {}
            for label, covered in models.items():
                key = () if sorted(covered) == sorted(every) else tuple(covered)
                by_tasks.setdefault(key, []).append(label)
            out += [NotMeasured(status, reason, tuple(m), t) for t, m in by_tasks.items()]
        return out


def _without_name(reason: str, model: str) -> str:
    """A row's reason without its leading model name (``mf learns ...`` -> ``learns ...``), so that the reasons
    of several models read as one."""
    for prefix in (f"{model}: ", f"{model} "):
        if reason.startswith(prefix):
            return reason[len(prefix) :]
    return reason


def _record(row: Result, ms: MetricSet, bon: tuple[int, ...]) -> dict:
    """A row's line of the table (``ReportTable.frame``)."""
    metrics = row.metrics or {}
    record = {
        "model": row.model,
        "label": row_label(row),
        "role": model_role(row.model) or "",
        "split": row.split,
        "shots": row.shots,
        "task_key": task_of(row),
        "task": task_label(row.split, row.shots),
        "status": row.status,
        "reason": row.reason or "",
        "measured": row.metrics is not None,
        "users": row.metric_users.get(ms.primary, row.n_users),
        "n_users": row.n_users,
        "n_ratings": row.n_ratings,
        "draws": row.draws,
        "tuned": row.tuned,
        "tuned_study": row.tuned_study or "",
        "params_source": row.params_source or "",
        "fit_split": row.fit_split,
        "validation_split": row.validation_split or "",
        "skipped_users": row.skipped_users,
        "ndcg_left_out": row.ndcg_left_out,
        "fit_seconds": row.fit_seconds,
        "predict_seconds": row.predict_seconds,
    }
    for m in ms.shown:
        record[m] = metrics.get(m, float("nan"))
    for m in ms.ci:
        lo, hi = (row.ci95 or {}).get(m, (float("nan"), float("nan")))
        record[f"{m}_lo"], record[f"{m}_hi"] = lo, hi
    for m in ms.user:
        record[f"{m}_users"] = row.metric_users.get(m)
    for n in bon:
        for kind in ("uplift", "hit", "true_uplift"):
            record[f"best_of_n_{kind}@{n}"] = metrics.get(f"best_of_n_{kind}@{n}", float("nan"))
    return record


_EMPTY = Result("", "", None, 0, 0, None, None, 0.0, 0.0)


def build_table(board: Leaderboard) -> ReportTable:
    """The board's table and statistics (module docstring)."""
    rows = board.rows
    ms = metric_set(rows)
    bon = best_of_n_values(rows)
    frame = pd.DataFrame([_record(r, ms, bon) for r in rows], columns=list(_record(_EMPTY, ms, bon)))
    # None (seen splits) and (split, shots) tuples kept as they are, not made floats
    frame["shots"] = pd.Series([r.shots for r in rows], dtype=object)
    frame["task_key"] = pd.Series([task_of(r) for r in rows], dtype=object)
    for m in ms.user:  # counts stay integers (or None), not floats
        frame[f"{m}_users"] = pd.Series([r.metric_users.get(m) for r in rows], dtype=object)
    best = stats.best_models(rows, ms.ranked)
    tests = stats.paired_tests(rows, ms.primary)
    for m in ms.ranked:
        frame[f"best:{m}"] = [best.get(task_of(r), {}).get(m) == r.model for r in rows]
    p, p_holm = [], []
    for r in rows:
        test = tests.get(task_of(r))
        found = test.tests.get(r.model) if test else None
        p.append(np.nan if found is None else found.p)
        p_holm.append(np.nan if found is None else found.p_holm)
    frame["p"], frame["p_holm"] = p, p_holm
    if bon:
        top = f"best_of_n_uplift@{bon[-1]}"
        consensus = {
            task_of(r): r.metrics[top]
            for r in rows
            if model_role(r.model) == CONSENSUS and r.metrics and top in r.metrics
        }
        frame[OVER_CONSENSUS] = [
            r.metrics[top] - consensus[task_of(r)]
            if r.metrics and top in r.metrics and task_of(r) in consensus
            else np.nan
            for r in rows
        ]
        # the same difference per user, with its paired bootstrap interval over users
        per_user = {
            task_of(r): r.per_user.get(top, {})
            for r in rows
            if model_role(r.model) == CONSENSUS and r.metrics
        }
        intervals = [
            stats.paired_interval(r.per_user.get(top, {}), per_user[task_of(r)], seed=board.seed)
            if r.metrics and task_of(r) in per_user and r.per_user.get(top)
            else (np.nan, np.nan, np.nan)
            for r in rows
        ]
        frame[OVER_CONSENSUS + "_lo"] = [i[1] for i in intervals]
        frame[OVER_CONSENSUS + "_hi"] = [i[2] for i in intervals]
    return ReportTable(board, ms, frame, stats.tasks(rows), best, tests, bon)


def protocol_line(table: ReportTable) -> str:
    """The protocol in one line: seed, shots, reference draws and which queries every k is scored on."""
    board, unit = table.board, table.unit
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
        else f"each k scored on every {unit[:-1]} of the user but its k references"
    )
    draws = (
        f"{board.draws} reference draw(s) per new user (per-user values averaged over draws before the interval "
        f"and the test), {queries}"
        if unseen
        else "seen splits only"
    )
    name = "" if board.protocol == "default" else f"{board.protocol} protocol, "
    note = f"; {board.protocol_note}" if board.protocol_note else ""
    return f"{name}protocol seed {board.seed}, shots {list(board.shots)}, {draws}{note}"


def fallback_line(rows: list[Result]) -> str:
    """One sentence: per task, how many predictions the models scored by their fallback (``Model.placeable``),
    with the models that did; "" when none did."""
    groups: dict[tuple, list[str]] = {}
    for r in rows:
        if r.fallback_predictions:
            groups.setdefault((task_of(r), r.fallback_predictions, r.n_ratings), []).append(row_label(r))
    if not groups:
        return ""
    parts = "; ".join(
        f"{task_label(*task)}: {used:,} of {total:,} ({', '.join(models)})"
        for (task, used, total), models in groups.items()
    )
    return (
        "Fallbacks (predictions of images a model cannot place, with no training rating and no features or "
        f"metadata, scored as the average image; `fallback_predictions` in leaderboard.json): {parts}."
    )


def board_title(board: Leaderboard) -> str:
    """The dataset's name, labelled when simulated (chart titles)."""
    return board.dataset.name + (" — SIMULATED data" if board.dataset.simulated else "")
