"""The statistics of a leaderboard, apart from how they are shown: best model, paired tests, Holm correction.

* **Best model** per task (split, k) and metric: the measured row with the best value, in the direction the
  metric points (``direction``); rows without a value are left out, and so is the ceiling (the model whose
  registry role is ``ceiling``: the simulator's ground truth is not a model one could pick). Of equal values
  the first row wins.
* **Paired tests**: per task, a two-sided Wilcoxon signed-rank test over users of the per-user values (averaged
  over draws) of the task's best model against each other measured model (``wilcoxon_p``; zero differences
  dropped, as scipy's default does; fewer than ``MIN_PAIRED_USERS`` users or no difference at all gives NaN).
* **Holm's correction** (``holm``): the family of a task is its comparisons against that task's best model (the
  ceiling is not one of them), so the chance of calling any one of them a difference when none is real stays
  at the level of a single test. The best model itself is chosen on the same data; the correction does not undo
  that selection, it bounds how many "worse than the best" calls are noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from recsys.evaluation.evaluator import Result
from recsys.evaluation.metrics import HIGHER_IS_BETTER, bootstrap_ci
from recsys.models.registry import CEILING, model_role

#: a paired test needs at least this many users with a value under both models
MIN_PAIRED_USERS = 5
#: the name of the correction, as the report states it
CORRECTION = "Holm"

Task = tuple[str, int | None]


def task_of(row: Result) -> Task:
    """The task of a row: its split and number of references (None on seen splits)."""
    return row.split, row.shots


def direction(metric: str) -> bool:
    """True when a larger value of ``metric`` is better (best-of-n uplifts and hit rates, top-N recall@k and
    ndcg@k at any k included)."""
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    if metric.startswith(
        ("best_of_n_uplift@", "best_of_n_hit@", "best_of_n_true_uplift@", "recall@", "ndcg@")
    ):
        return True
    raise KeyError(f"no direction is known for metric {metric!r}")


def candidates(rows: Iterable[Result]) -> list[Result]:
    """The rows that can be best: measured, and not the ceiling."""
    return [r for r in rows if r.metrics and model_role(r.model) != CEILING]


def pick_best(rows: Sequence[Result], metric: str) -> Result | None:
    """The best candidate row (``candidates``) on ``metric``: its finite value the largest (or smallest, for a
    metric where lower is better), the first of equal values; None when no row has a value."""
    scored = [r for r in candidates(rows) if metric in r.metrics and np.isfinite(r.metrics[metric])]
    if not scored:
        return None
    return (max if direction(metric) else min)(scored, key=lambda r: r.metrics[metric])


def tasks(rows: Iterable[Result]) -> list[Task]:
    """The rows' tasks in the order they first appear."""
    return list(dict.fromkeys(task_of(r) for r in rows))


def best_models(rows: Sequence[Result], metrics: Iterable[str]) -> dict[Task, dict[str, str]]:
    """Per task and metric, the name of the best model (``pick_best``); a metric no row measured is absent."""
    metrics = list(metrics)
    out: dict[Task, dict[str, str]] = {}
    for task in tasks(rows):
        mine = [r for r in rows if task_of(r) == task]
        out[task] = {m: best.model for m in metrics if (best := pick_best(mine, m)) is not None}
    return out


def paired_differences(reference: Mapping[int, float], other: Mapping[int, float]) -> np.ndarray:
    """``reference[u] - other[u]`` over the users both have, in user order."""
    users = sorted(set(reference) & set(other))
    return np.array([reference[u] - other[u] for u in users], dtype=np.float64)


def paired_interval(
    reference: Mapping[int, float], other: Mapping[int, float], *, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """The mean over users of ``reference[u] - other[u]`` (the users both have) with its 95% percentile bootstrap
    interval over users (the users resampled together, so the interval is of the paired difference):
    (mean, low, high), NaN without common users."""
    differences = paired_differences(reference, other)
    if not len(differences):
        return float("nan"), float("nan"), float("nan")
    low, high = bootstrap_ci(differences, n_resamples=n_resamples, seed=seed)
    return float(differences.mean()), low, high


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy; zero differences dropped); NaN with
    fewer than ``MIN_PAIRED_USERS`` differences or when every difference is zero."""
    differences = np.asarray(differences, dtype=np.float64)
    if len(differences) < MIN_PAIRED_USERS or not np.any(differences):
        return float("nan")
    return float(stats.wilcoxon(differences).pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given. NaN p-values are not part of the family (m
    counts the finite ones) and stay NaN. With the finite p-values sorted, p_(1) <= ... <= p_(m), the adjusted
    p_(i) is max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if not m:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


@dataclass(frozen=True)
class PairedTest:
    """The best model of a task against one other model: raw and Holm-adjusted p-values, users paired."""

    model: str
    p: float
    p_holm: float
    n_users: int


@dataclass(frozen=True)
class TaskTests:
    """A task's tests on ``metric``: its ``best`` model against each other measured model (``tests``, by name;
    the ceiling is not tested). ``family`` is the number of finite p-values corrected together."""

    metric: str
    best: str
    tests: dict[str, PairedTest]

    @property
    def family(self) -> int:
        return sum(np.isfinite(t.p) for t in self.tests.values())

    def runner_up(self, rows: Sequence[Result]) -> Result | None:
        """The second best candidate row of this task on the metric (None with a single candidate)."""
        others = [r for r in rows if r.model != self.best and r.model in self.tests]
        return pick_best(others, self.metric)


def paired_tests(rows: Sequence[Result], metric: str) -> dict[Task, TaskTests]:
    """Per task with a best model on ``metric``: Wilcoxon signed-rank tests over users (``per_user[metric]``)
    of the best against every other candidate row, Holm-corrected over the task's family (module docstring)."""
    out: dict[Task, TaskTests] = {}
    for task in tasks(rows):
        mine = [r for r in rows if task_of(r) == task]
        best = pick_best(mine, metric)
        if best is None:
            continue
        reference = best.per_user.get(metric, {})
        others = [r for r in candidates(mine) if r.model != best.model]
        raw, paired = [], []
        for row in others:
            differences = paired_differences(reference, row.per_user.get(metric, {}))
            raw.append(wilcoxon_p(differences))
            paired.append(len(differences))
        adjusted = holm(raw)
        tests = {
            row.model: PairedTest(row.model, p, float(q), n)
            for row, p, q, n in zip(others, raw, adjusted, paired, strict=True)
        }
        out[task] = TaskTests(metric, best.model, tests)
    return out
