"""Metrics as pure functions over arrays. No configuration, no state.

Global metrics take aligned ``y_true`` / ``y_pred``; user-level metrics also take ``user`` (any hashable label
per rating) and average a per-user value over users. ``per_user_*`` functions return the per-user values
(for bootstrap intervals and paired tests); ``HIGHER_IS_BETTER`` says which way each metric points.

Top-N metrics (``per_user_recall_at_k``, ``per_user_topn_ndcg``) take one row per candidate item of a user
instead: ``relevant`` (bool) and the model's score, and rank each user's candidates by score.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

MIN_USER_QUERIES = 5  # a user needs at least this many queries to get a user_srocc
NDCG_K = 10  # the cut-off of ndcg@10; a user needs more queries than this to get one
#: metric families measured at a cut-off (``recall@10``, ``ndcg@20``): every k points the way its family does
CUTOFF_FAMILIES = {"recall": True, "ndcg": True}


class _Directions(dict):
    """Metric name -> True when higher is better; a name ``family@k`` of ``CUTOFF_FAMILIES`` at any k too."""

    def __missing__(self, metric: str) -> bool:
        family, at, k = metric.partition("@")
        if at and k.isdigit() and family in CUTOFF_FAMILIES:
            return CUTOFF_FAMILIES[family]
        raise KeyError(metric)


HIGHER_IS_BETTER = _Directions({
    "rmse": False,
    "mae": False,
    "plcc": True,
    "srocc": True,
    "user_srocc": True,
    "pairwise_acc": True,
    "ndcg@10": True,
    "user_choice_acc": True,
    "choice_acc": True,
    "log_loss": False,
    "ece": False,
})  # fmt: skip


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error, in score units."""
    return float(np.sqrt(np.mean((np.asarray(y_true, float) - np.asarray(y_pred, float)) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error, in score units."""
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def plcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson correlation over all ratings; 0 when either side is constant."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    return float(np.corrcoef(y_true, y_pred)[0, 1])


def srocc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman rank correlation over all ratings (average ranks for ties); 0 when either side is constant."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    return plcc(stats.rankdata(y_true), stats.rankdata(y_pred))


def _groups(user: np.ndarray):
    """(label, positions) per user, in order of first appearance."""
    user = np.asarray(user)
    _, first, inverse = np.unique(user, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse))
    starts = np.concatenate([[0], bounds[:-1]])
    for g in np.argsort(first):
        yield user[first[g]], order[starts[g] : bounds[g]]


def _group_ranks(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` within each group (``group`` integer codes), ties given their average rank."""
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    n = len(order)
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_run = new_group | np.r_[True, v[1:] != v[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], n]  # one past each run's last position
    ranks = np.empty(n)
    ranks[order] = (run_start[run_id] + run_end[run_id] - 1) / 2 - group_start + 1
    return ranks


def per_user_srocc(
    y_true: np.ndarray, y_pred: np.ndarray, user: np.ndarray, *, min_queries: int = MIN_USER_QUERIES
) -> dict:
    """Spearman per user with at least ``min_queries`` ratings (default MIN_USER_QUERIES), users in order of
    first appearance; computed for every user at once (Pearson correlation of the within-user ranks).

    A user whose predictions are constant counts 0 (the model ranks nothing); a user whose true scores are
    constant is skipped (there is nothing to rank).
    """
    y_true, y_pred, user = np.asarray(y_true, float), np.asarray(y_pred, float), np.asarray(user)
    if not len(user):
        return {}
    _, first, code = np.unique(user, return_index=True, return_inverse=True)
    code = code.ravel()
    count = np.bincount(code)
    keep = count[code] >= min_queries
    code, y_true, y_pred = code[keep], y_true[keep], y_pred[keep]
    centre = (count[code] + 1) / 2  # the mean of 1..n, and so of any user's average ranks
    dt = _group_ranks(code, y_true) - centre
    dp = _group_ranks(code, y_pred) - centre
    size = len(count)
    var_t, var_p = np.bincount(code, dt * dt, size), np.bincount(code, dp * dp, size)
    cov = np.bincount(code, dt * dp, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip(cov / np.sqrt(var_t * var_p), -1.0, 1.0)
    rho[var_p == 0] = 0.0
    scored = (count >= min_queries) & (var_t > 0)
    return {user[first[g]]: float(rho[g]) for g in np.argsort(first) if scored[g]}


def per_user_pairwise_acc(y_true: np.ndarray, y_pred: np.ndarray, user: np.ndarray) -> dict:
    """Per user, the share of pairs with different true scores that the prediction orders correctly.

    Prediction ties count one half. Users with no such pair are skipped.
    """
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    out = {}
    for label, idx in _groups(user):
        t, p = y_true[idx], y_pred[idx]
        dt = np.sign(t[:, None] - t[None, :])
        dp = np.sign(p[:, None] - p[None, :])
        upper = np.triu(np.ones_like(dt, dtype=bool), k=1) & (dt != 0)
        n_pairs = upper.sum()
        if n_pairs == 0:
            continue
        agree = (dt[upper] == dp[upper]).sum() + 0.5 * (dp[upper] == 0).sum()
        out[label] = float(agree / n_pairs)
    return out


def dcg_at_k(gains_in_rank_order: np.ndarray, k: int) -> float:
    """Discounted cumulative gain of the first k gains: sum gain_i / log2(i + 2)."""
    g = np.asarray(gains_in_rank_order, float)[:k]
    return float(np.sum(g / np.log2(np.arange(2, len(g) + 2))))


def per_user_ndcg(
    y_true: np.ndarray, y_pred: np.ndarray, user: np.ndarray, k: int = NDCG_K, *, min_score: float = 0.0
) -> dict:
    """NDCG@k per user with gains ``true score - min_score`` (pass the scale's minimum: the lowest rating gains
    nothing, and a shift of the scale does not change the metric).

    Users with k or fewer ratings are skipped: all their items are in the top k, so the metric says little about
    the ranking (``ndcg_left_out`` counts them). Ties in the prediction are broken pessimistically (the lower
    true score first), so a constant predictor earns no credit from the input order. Users whose ideal DCG is 0
    are skipped.
    """
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    out = {}
    for label, idx in _groups(user):
        if len(idx) <= k:
            continue
        t, p = y_true[idx] - min_score, y_pred[idx]
        ideal = dcg_at_k(np.sort(t)[::-1], k)
        if ideal <= 0:
            continue
        order = np.lexsort((t, -p))  # by prediction descending, then true score ascending
        out[label] = dcg_at_k(t[order], k) / ideal
    return out


def _topn_ranks(relevant: np.ndarray, y_pred: np.ndarray, user: np.ndarray):
    """Each user's candidates ranked by score, highest first, a relevant candidate after an irrelevant one of
    the same score: (user labels in order of first appearance, user code per row, 0-based rank per row, relevant
    candidates per user)."""
    relevant, y_pred, user = np.asarray(relevant, bool), np.asarray(y_pred, float), np.asarray(user)
    labels, first, code = np.unique(user, return_index=True, return_inverse=True)
    code = code.ravel()
    order = np.lexsort((relevant, -y_pred, code))  # by user, score descending, irrelevant first among ties
    counts = np.bincount(code, minlength=len(labels))
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(code), np.int64)
    rank[order] = np.arange(len(code)) - starts[code[order]]
    n_relevant = np.bincount(code, weights=relevant, minlength=len(labels))
    return labels, first, code, rank, n_relevant


def per_user_recall_at_k(relevant: np.ndarray, y_pred: np.ndarray, user: np.ndarray, k: int) -> dict:
    """Recall@k per user over one row per candidate item: the share of the user's relevant candidates among the
    k it scores highest (``hits / relevant``, so a user with more than k relevant items cannot reach 1).

    Ties in the score are broken pessimistically (an irrelevant candidate ranks before a relevant one of the
    same score), so a constant scorer earns nothing from the order of the rows. Users without a relevant
    candidate are left out. Users in order of first appearance.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not len(np.asarray(user)):
        return {}
    labels, first, code, rank, n_relevant = _topn_ranks(relevant, y_pred, user)
    hits = np.bincount(code, weights=np.asarray(relevant, bool) & (rank < k), minlength=len(labels))
    return {labels[g]: float(hits[g] / n_relevant[g]) for g in np.argsort(first) if n_relevant[g] > 0}


def per_user_topn_ndcg(relevant: np.ndarray, y_pred: np.ndarray, user: np.ndarray, k: int) -> dict:
    """NDCG@k per user over one row per candidate item, with binary gains: DCG = the sum over relevant
    candidates ranked i < k (0-based) of 1 / log2(i + 2), divided by the DCG of a ranking with every relevant
    candidate first. Ties and users without a relevant candidate as in ``per_user_recall_at_k``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not len(np.asarray(user)):
        return {}
    labels, first, code, rank, n_relevant = _topn_ranks(relevant, y_pred, user)
    hit = np.asarray(relevant, bool) & (rank < k)
    dcg = np.bincount(code, weights=np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0), minlength=len(labels))
    discounts = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))  # ideal DCG of min(relevant, k) hits
    ideal = discounts[np.minimum(n_relevant.astype(np.int64), k) - 1]
    return {labels[g]: float(dcg[g] / ideal[g]) for g in np.argsort(first) if n_relevant[g] > 0}


def ndcg_left_out(user: np.ndarray, k: int = NDCG_K) -> int:
    """How many users have k or fewer ratings, and so no NDCG@k (see ``per_user_ndcg``)."""
    _, counts = np.unique(np.asarray(user), return_counts=True)
    return int((counts <= k).sum())


def user_srocc(y_true, y_pred, user) -> float:
    """Per-user Spearman averaged over users (see ``per_user_srocc``); NaN when no user qualifies."""
    values = list(per_user_srocc(y_true, y_pred, user).values())
    return float(np.mean(values)) if values else float("nan")


def pairwise_acc(y_true, y_pred, user) -> float:
    """Per-user pairwise accuracy averaged over users (see ``per_user_pairwise_acc``)."""
    values = list(per_user_pairwise_acc(y_true, y_pred, user).values())
    return float(np.mean(values)) if values else float("nan")


def ndcg_at_10(y_true, y_pred, user, min_score: float = 0.0) -> float:
    """Per-user NDCG@10 averaged over users (see ``per_user_ndcg``)."""
    values = list(per_user_ndcg(y_true, y_pred, user, k=NDCG_K, min_score=min_score).values())
    return float(np.mean(values)) if values else float("nan")


def bootstrap_ci(
    per_user_values: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users (users resampled with replacement)."""
    values = np.asarray(per_user_values, float)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def all_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, user: np.ndarray, *, min_score: float = 0.0
) -> tuple[dict, dict]:
    """Every metric, and the per-user values of the user-level ones (keyed by metric name). ``min_score`` is the
    scale's minimum (the zero of NDCG gains)."""
    per_user = {
        "user_srocc": per_user_srocc(y_true, y_pred, user),
        "pairwise_acc": per_user_pairwise_acc(y_true, y_pred, user),
        "ndcg@10": per_user_ndcg(y_true, y_pred, user, k=NDCG_K, min_score=min_score),
    }
    metrics = {
        "rmse": rmse(y_true, y_pred),
        "mae": mae(y_true, y_pred),
        "plcc": plcc(y_true, y_pred),
        "srocc": srocc(y_true, y_pred),
    }
    for name, values in per_user.items():
        metrics[name] = float(np.mean(list(values.values()))) if values else float("nan")
    return metrics, per_user
