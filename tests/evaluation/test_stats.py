"""The leaderboard's statistics against hand computations, brute force and scipy: Holm's correction, the
Wilcoxon signed-rank test, best-model selection and the paired tests of a task."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from recsys.evaluation import stats
from recsys.evaluation.evaluator import Result


def closed_testing(p: list[float]) -> list[float]:
    """Holm by its definition as a closed test with Bonferroni local tests: the adjusted p-value of hypothesis i
    is the largest, over every subset S of the hypotheses that holds i, of min(1, |S| * min over S of p)."""
    m = len(p)
    out = []
    for i in range(m):
        worst = 0.0
        for size in range(1, m + 1):
            for subset in itertools.combinations(range(m), size):
                if i in subset:
                    worst = max(worst, min(1.0, size * min(p[j] for j in subset)))
        out.append(worst)
    return out


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept at 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # capped at 1, then monotone
    assert stats.holm([0.2]).tolist() == [0.2]  # a family of one is not corrected
    found = stats.holm([float("nan"), 0.01, 0.04])  # NaN is not in the family: m = 2
    assert math.isnan(found[0]) and found[1:] == pytest.approx([0.02, 0.04])
    assert np.isnan(stats.holm([float("nan")])).all() and len(stats.holm([])) == 0


@pytest.mark.parametrize("seed", range(6))
def test_holm_is_the_closed_test_of_bonferroni_tests(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.3, 6) ** 2
    if seed % 2:
        p[2] = p[4]  # ties
    assert stats.holm(p) == pytest.approx(closed_testing(list(p)), abs=1e-15)


def exact_signed_rank_p(d: np.ndarray) -> float:
    """Two-sided exact p-value of the signed-rank statistic (sum of the ranks of the positive differences) by
    enumerating every sign pattern; the differences are non-zero and their magnitudes distinct."""
    ranks = scipy_stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    totals = np.array([ranks[np.array(s, bool)].sum() for s in itertools.product((0, 1), repeat=len(d))])
    return min(1.0, 2 * min((totals <= observed).mean(), (totals >= observed).mean()))


@pytest.mark.parametrize("seed", range(4))
def test_wilcoxon_is_the_exact_signed_rank_test(seed):
    d = np.random.default_rng(seed).normal(0.3, 1.0, 11)
    assert stats.wilcoxon_p(d) == pytest.approx(exact_signed_rank_p(d), rel=1e-12)


def test_wilcoxon_with_zeros_and_ties_is_scipys_and_needs_five_users():
    d = np.array([0.0, 0.1, 0.1, -0.2, 0.3, 0.3, 0.4, 0.0, 0.5, -0.1, 0.2, 0.6])
    assert stats.wilcoxon_p(d) == scipy_stats.wilcoxon(d).pvalue
    assert math.isnan(stats.wilcoxon_p(d[:4]))  # fewer than MIN_PAIRED_USERS
    assert math.isnan(stats.wilcoxon_p(np.zeros(20)))  # no difference at all


def row(model: str, split: str = "test_seen", shots: int | None = None, per_user=None, **metrics) -> Result:
    return Result(model, split, shots, 10, 100, metrics or None, None, 0.0, 0.0,
                  per_user={"user_srocc": per_user or {}})  # fmt: skip


def test_best_model_follows_the_metric_direction_and_skips_the_ceiling_and_missing_values():
    rows = [
        row("a", user_srocc=0.5, rmse=1.1),
        row("oracle", user_srocc=0.9, rmse=0.5),  # the ceiling: never best
        row("b", user_srocc=0.7, rmse=1.3),
        row("c", user_srocc=float("nan"), rmse=0.9),
        row("d", user_srocc=0.7, rmse=1.0),  # ties b on user_srocc: b comes first
        row("e"),  # not measured
        row("a", "test_unseen", 0, user_srocc=0.2),
        row("b", "test_unseen", 0, user_srocc=0.1),
    ]
    best = stats.best_models(rows, ["user_srocc", "rmse", "ndcg@10"])
    assert best == {
        ("test_seen", None): {"user_srocc": "b", "rmse": "c"},
        ("test_unseen", 0): {"user_srocc": "a"},
    }
    assert stats.pick_best([row("oracle", user_srocc=0.9)], "user_srocc") is None


def test_direction_of_every_metric():
    assert stats.direction("user_choice_acc") and not stats.direction("log_loss")
    assert stats.direction("best_of_n_uplift@8") and stats.direction("best_of_n_hit@2")
    with pytest.raises(KeyError, match="no direction"):
        stats.direction("latency")


def test_paired_tests_of_a_task_by_hand():
    rng = np.random.default_rng(3)
    users = range(30)
    base = {u: rng.uniform(0.2, 0.6) for u in users}
    rows = [
        row("best", per_user={u: v + 0.05 + rng.normal(0, 0.02) for u, v in base.items()}, user_srocc=0.45),
        row("near", per_user={u: v + rng.normal(0, 0.05) for u, v in base.items()}, user_srocc=0.40),
        row("far", per_user={u: v - 0.2 for u, v in base.items()}, user_srocc=0.2),
        row("few", per_user={u: base[u] for u in range(4)}, user_srocc=0.3),  # 4 users: no test
        row("oracle", per_user={u: 0.9 for u in users}, user_srocc=0.9),
        row("skipped"),
    ]
    found = stats.paired_tests(rows, "user_srocc")[("test_seen", None)]
    assert found.best == "best" and set(found.tests) == {"near", "far", "few"}  # the ceiling is not tested
    raw = {}
    for other in ("near", "far"):
        mine = next(r for r in rows if r.model == other).per_user["user_srocc"]
        d = [rows[0].per_user["user_srocc"][u] - mine[u] for u in users]
        raw[other] = scipy_stats.wilcoxon(d).pvalue
        assert found.tests[other].p == pytest.approx(raw[other]) and found.tests[other].n_users == 30
    assert math.isnan(found.tests["few"].p) and math.isnan(found.tests["few"].p_holm)
    assert found.family == 2
    holm = closed_testing([raw["near"], raw["far"]])
    assert [found.tests["near"].p_holm, found.tests["far"].p_holm] == pytest.approx(holm)
    assert found.runner_up(rows).model == "near"
