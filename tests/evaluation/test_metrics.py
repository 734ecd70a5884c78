"""Metrics against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from recsys.evaluation import metrics as M


def test_rmse_and_mae_by_hand():
    y, p = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 1.0])
    assert M.rmse(y, p) == pytest.approx(math.sqrt((1 + 0 + 9) / 3))
    assert M.mae(y, p) == pytest.approx((1 + 0 + 3) / 3)


def test_plcc_and_srocc_match_scipy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    p = y + rng.normal(size=200)
    p[:20] = p[0]  # ties
    assert M.plcc(y, p) == pytest.approx(stats.pearsonr(y, p)[0])
    assert M.srocc(y, p) == pytest.approx(stats.spearmanr(y, p)[0])
    assert M.srocc(y, np.ones_like(y)) == 0.0


def test_user_srocc_constant_prediction_counts_zero_and_constant_truth_is_skipped():
    user = np.array([0] * 5 + [1] * 5 + [2] * 5 + [3] * 4)
    y = np.concatenate([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [3, 3, 3, 3, 3], [1, 2, 3, 4]]).astype(float)
    p = np.concatenate([[1, 2, 3, 4, 5], [2, 2, 2, 2, 2], [1, 2, 3, 4, 5], [4, 3, 2, 1]]).astype(float)
    per_user = M.per_user_srocc(y, p, user)
    # user 0 perfect, user 1 constant prediction -> 0, user 2 constant truth skipped, user 3 too few queries
    assert per_user == pytest.approx({0: 1.0, 1: 0.0})
    assert M.user_srocc(y, p, user) == pytest.approx(0.5)


def test_pairwise_acc_by_hand_with_ties():
    user = np.zeros(4, dtype=int)
    y = np.array([1.0, 2.0, 3.0, 3.0])
    p = np.array([1.0, 3.0, 2.0, 2.0])
    # pairs with different truth: (0,1) ok, (0,2) ok, (0,3) ok, (1,2) wrong, (1,3) wrong; (2,3) same truth: skipped
    assert M.pairwise_acc(y, p, user) == pytest.approx(3 / 5)
    p_tie = np.array([1.0, 1.0, 2.0, 2.0])  # (0,1) tie -> 1/2; (0,2),(0,3) ok; (1,2),(1,3) ok
    assert M.pairwise_acc(y, p_tie, user) == pytest.approx(4.5 / 5)


def test_pairwise_acc_averages_over_users():
    user = np.array([0, 0, 1, 1])
    y = np.array([1.0, 2.0, 1.0, 2.0])
    p = np.array([1.0, 2.0, 2.0, 1.0])
    assert M.pairwise_acc(y, p, user) == pytest.approx(0.5)


def test_ndcg_by_hand():
    user = np.zeros(3, dtype=int)
    y = np.array([3.0, 1.0, 2.0])
    p = np.array([0.1, 0.3, 0.2])  # ranks truth as [1, 2, 3]
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    ideal = 3 / math.log2(2) + 2 / math.log2(3)
    assert M.per_user_ndcg(y, p, user, k=2) == pytest.approx({0: dcg / ideal})
    assert M.per_user_ndcg(y, y, user, k=2) == pytest.approx({0: 1.0})


def test_ndcg_gains_start_at_the_scale_minimum():
    """On a 1-5 scale the lowest rating gains nothing: gains are score - 1."""
    user = np.zeros(3, dtype=int)
    y = np.array([3.0, 1.0, 2.0])
    p = np.array([0.1, 0.3, 0.2])  # ranks truth as [1, 2, 3]: gains [0, 1, 2]
    dcg = 0 / math.log2(2) + 1 / math.log2(3)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert M.per_user_ndcg(y, p, user, k=2, min_score=1.0) == pytest.approx({0: dcg / ideal})
    # shifting the scale and its minimum together changes nothing
    shifted = M.per_user_ndcg(y + 10, p, user, k=2, min_score=11.0)
    assert shifted == pytest.approx(M.per_user_ndcg(y, p, user, k=2, min_score=1.0))


def test_ndcg_constant_prediction_gets_no_credit_from_input_order():
    user = np.zeros(3, dtype=int)
    y = np.array([3.0, 2.0, 1.0])
    worst = (1 / math.log2(2) + 2 / math.log2(3)) / (3 + 2 / math.log2(3))
    assert M.per_user_ndcg(y, np.zeros(3), user, k=2) == pytest.approx({0: worst})


def test_ndcg_leaves_out_users_with_k_or_fewer_ratings():
    user = np.array([0] * 10 + [1] * 11)
    y = np.arange(21.0) % 5 + 1
    values = M.per_user_ndcg(y, y, user, k=10, min_score=1.0)
    assert values == pytest.approx({1: 1.0})
    assert M.ndcg_left_out(user, 10) == 1
    assert M.ndcg_at_10(y, y, user, min_score=1.0) == pytest.approx(1.0)


def test_bootstrap_interval_contains_mean_and_shrinks_with_more_users():
    rng = np.random.default_rng(1)
    small = rng.normal(0.5, 0.2, 20)
    large = rng.normal(0.5, 0.2, 2000)
    lo_s, hi_s = M.bootstrap_ci(small, seed=0)
    lo_l, hi_l = M.bootstrap_ci(large, seed=0)
    assert lo_s < small.mean() < hi_s
    assert hi_l - lo_l < hi_s - lo_s
    # the normal-theory half-width 1.96 * sd / sqrt(n) is an independent check of the scale
    assert (hi_l - lo_l) / 2 == pytest.approx(1.96 * large.std() / math.sqrt(len(large)), rel=0.15)


def test_every_metric_declares_a_direction():
    from recsys.evaluation.pairwise import PAIR_METRICS

    values, _ = M.all_metrics(np.arange(10.0), np.arange(10.0), np.zeros(10))
    assert set(values) | set(PAIR_METRICS) == set(M.HIGHER_IS_BETTER)


def test_per_user_srocc_is_scipy_per_user_with_ties_and_a_minimum():
    rng = np.random.default_rng(5)
    user = rng.choice(["a", "b", "c", "d", "e"], 120)
    y = rng.integers(1, 6, 120).astype(float)  # many ties
    p = np.round(rng.normal(size=120), 1)  # ties too
    y[user == "e"] = 2.0  # constant truth: skipped
    p[user == "d"] = 0.5  # constant prediction: 0
    for min_queries, n_users in ((3, 4), (25, 2)):  # users a..e have 26, 30, 18, 22 and 24 ratings
        got = M.per_user_srocc(y, p, user, min_queries=min_queries)
        qualifying = [u for u in dict.fromkeys(user) if (user == u).sum() >= min_queries and u != "e"]
        assert len(qualifying) == n_users
        assert list(got) == qualifying  # users in order of first appearance
        for u in qualifying:
            expected = 0.0 if u == "d" else stats.spearmanr(y[user == u], p[user == u])[0]
            assert got[u] == pytest.approx(expected)


def test_topn_recall_and_ndcg_by_hand():
    # user 7: scores rank the candidates 0, 1, 2, 3; relevant are 1 and 3
    user = np.array([7, 7, 7, 7])
    relevant = np.array([False, True, False, True])
    score = np.array([0.9, 0.8, 0.7, 0.1])
    assert M.per_user_recall_at_k(relevant, score, user, 2) == pytest.approx({7: 1 / 2})
    assert M.per_user_recall_at_k(relevant, score, user, 4) == pytest.approx({7: 1.0})
    # DCG@2 = 1 / log2(3); ideal: both relevant first, 1 + 1 / log2(3)
    assert M.per_user_topn_ndcg(relevant, score, user, 2) == pytest.approx(
        {7: (1 / math.log2(3)) / (1 + 1 / math.log2(3))}
    )
    # DCG@4 = 1 / log2(3) + 1 / log2(5) over the same ideal
    assert M.per_user_topn_ndcg(relevant, score, user, 4) == pytest.approx(
        {7: (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))}
    )
    # k = 1 with one hit at rank 0: recall 1/2 (two relevant), ndcg 1 (the ideal at k = 1 is one hit)
    first = np.array([False, False, False, True])
    assert M.per_user_recall_at_k(relevant, first * 1.0, user, 1) == pytest.approx({7: 1 / 2})
    assert M.per_user_topn_ndcg(relevant, first * 1.0, user, 1) == pytest.approx({7: 1.0})


def test_topn_ties_are_pessimistic_and_users_without_relevant_items_are_left_out():
    user = np.array(["b", "b", "b", "a", "a"])
    relevant = np.array([True, False, False, False, False])
    constant = np.zeros(5)
    # user b: all three tie, the relevant candidate ranks last: nothing in the top 2, rank 2 at k = 3
    assert M.per_user_recall_at_k(relevant, constant, user, 2) == {"b": 0.0}
    assert M.per_user_topn_ndcg(relevant, constant, user, 3) == pytest.approx({"b": 1 / math.log2(4)})
    # the order of the rows does not matter
    flipped = slice(None, None, -1)
    assert M.per_user_recall_at_k(relevant[flipped], constant, user[flipped], 2) == {"b": 0.0}
    assert M.per_user_recall_at_k(np.zeros(0, bool), np.zeros(0), np.zeros(0), 5) == {}
    with pytest.raises(ValueError, match="k must be at least 1"):
        M.per_user_topn_ndcg(relevant, constant, user, 0)
    assert M.HIGHER_IS_BETTER["recall@20"] and M.HIGHER_IS_BETTER["ndcg@5"]
    with pytest.raises(KeyError):
        M.HIGHER_IS_BETTER["rmse@10"]


def test_topn_metrics_match_a_brute_force_ranking():
    rng = np.random.default_rng(3)
    user = rng.integers(0, 12, 600)
    relevant = rng.random(600) < 0.08
    score = np.round(rng.normal(size=600), 1)  # many ties
    for k in (1, 5, 10, 20):
        recall = M.per_user_recall_at_k(relevant, score, user, k)
        ndcg = M.per_user_topn_ndcg(relevant, score, user, k)
        expected_users = [u for u in dict.fromkeys(user.tolist()) if relevant[user == u].any()]
        assert list(recall) == list(ndcg) == expected_users
        for u in expected_users:
            rows = np.flatnonzero(user == u).tolist()
            # Python's sort: score descending, then irrelevant before relevant
            ranked = sorted(rows, key=lambda r: (-score[r], bool(relevant[r])))
            top = [bool(relevant[r]) for r in ranked[:k]]
            n_relevant = int(relevant[rows].sum())
            assert recall[u] == pytest.approx(sum(top) / n_relevant)
            dcg = sum(1 / math.log2(i + 2) for i, hit in enumerate(top) if hit)
            ideal = sum(1 / math.log2(i + 2) for i in range(min(k, n_relevant)))
            assert ndcg[u] == pytest.approx(dcg / ideal)
