"""Best of n: the metrics by hand, the same groups for every model, and the leaderboard's section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.evaluation.best_of_n import best_of_n
from recsys.leaderboard import run_leaderboard
from recsys.report import format_table, to_markdown


def test_best_of_two_by_hand():
    # one user, four queries: shuffled into two groups of two
    user = np.zeros(4, np.int64)
    score = np.array([5.0, 1.0, 3.0, 3.0])
    prediction = np.array([0.9, 0.1, 0.2, 0.8])
    ids = np.array(["u"])
    m, per_user = best_of_n(user, score, prediction, 2, user_ids=ids, seed=0, truth=score * 2)
    key = __import__("zlib").crc32(b"u")
    groups = np.random.default_rng([0, 2, key]).permutation(4).reshape(2, 2)
    picks = [g[np.argmax(prediction[g])] for g in groups]
    uplift = np.mean([score[p] - score[g].mean() for p, g in zip(picks, groups, strict=True)])
    hit = np.mean([score[p] == score[g].max() for p, g in zip(picks, groups, strict=True)])
    assert m["best_of_n_uplift@2"] == pytest.approx(uplift)
    assert m["best_of_n_hit@2"] == pytest.approx(hit)
    assert m["best_of_n_true_uplift@2"] == pytest.approx(2 * uplift)
    assert per_user == {0: pytest.approx(uplift)}
    # a perfect ranking picks every favourite
    perfect, _ = best_of_n(user, score, score, 2, user_ids=ids)
    assert perfect["best_of_n_hit@2"] == 1.0 and perfect["best_of_n_uplift@2"] >= 0
    users_without_n, nobody = best_of_n(user[:1], score[:1], prediction[:1], 2, user_ids=ids)
    assert np.isnan(users_without_n["best_of_n_uplift@2"]) and nobody == {}


def test_tied_candidates_share_the_pick_so_a_constant_predictor_scores_exactly_zero():
    rng = np.random.default_rng(3)
    user = np.repeat(np.arange(20), 16)
    score = rng.integers(1, 6, len(user)).astype(float)
    ids = np.array([f"u{i}" for i in range(20)])
    for seed in range(5):  # whatever the grouping, a constant predictor picks nothing better than chance
        m, per_user = best_of_n(user, score, np.zeros(len(user)), 4, user_ids=ids, seed=seed, truth=score)
        assert m["best_of_n_uplift@4"] == 0.0 and m["best_of_n_true_uplift@4"] == 0.0
        assert all(v == 0.0 for v in per_user.values())
    # ties at the top by hand: one user, one group of four, two candidates tied for the highest prediction
    one = np.zeros(4, np.int64)
    observed = np.array([5.0, 1.0, 2.0, 4.0])
    predicted = np.array([0.7, 0.7, 0.1, 0.2])
    m, _ = best_of_n(one, observed, predicted, 4, user_ids=np.array(["u"]))
    assert m["best_of_n_uplift@4"] == pytest.approx((5 + 1) / 2 - observed.mean())
    assert m["best_of_n_hit@4"] == pytest.approx(0.5)  # one of the two tied picks is the favourite


def test_leaderboard_has_best_of_n_for_every_model_with_the_consensus(small_sim, tmp_path):
    board = run_leaderboard(small_sim, ["ridge", "mf", "oracle"], draws=2, jobs=1, progress=False)
    for row in board.rows:
        for n in (2, 4, 8):
            assert np.isfinite(row.metrics[f"best_of_n_uplift@{n}"])
            assert 0 <= row.metrics[f"best_of_n_hit@{n}"] <= 1
            assert f"best_of_n_true_uplift@{n}" in row.metrics  # simulated data
    by = {(r.model, r.split, r.shots): r.metrics for r in board.rows}
    # the ground truth picks better than the consensus, and more candidates give a larger uplift
    assert (
        by[("oracle", "test_seen", None)]["best_of_n_uplift@8"]
        > by[("ridge", "test_seen", None)]["best_of_n_uplift@8"]
    )
    assert (
        by[("mf", "test_seen", None)]["best_of_n_uplift@8"]
        > by[("mf", "test_seen", None)]["best_of_n_uplift@2"]
    )
    table = format_table(board).splitlines()
    head = next(
        line for line in table if line.startswith("model ")
    )  # after the header, splits and best-per-task lines
    assert "best@8" in head and "vs ridge" in head
    mf_seen = next(line for line in table if line.startswith("mf ") and "test_seen" in line)
    mf_up, ridge_up = (by[(m, "test_seen", None)]["best_of_n_uplift@8"] for m in ("mf", "ridge"))
    assert mf_seen.split()[-2:] == [f"{mf_up:.3f}", f"{mf_up - ridge_up:+.3f}"]
    markdown = to_markdown(board)
    assert "## Best of n" in markdown and "over ridge @8" in markdown
    json.dumps(board.to_json())  # the metrics reach leaderboard.json


def test_uplift_over_the_consensus_has_a_paired_interval_over_users(small_sim):
    from recsys.evaluation.stats import paired_interval
    from recsys.report.table import OVER_CONSENSUS, build_table

    board = run_leaderboard(small_sim, ["ridge", "mf"], draws=2, jobs=1, progress=False)
    by = {(r.model, r.split, r.shots): r for r in board.rows}
    mf, ridge = by[("mf", "test_seen", None)], by[("ridge", "test_seen", None)]
    mine, theirs = mf.per_user["best_of_n_uplift@8"], ridge.per_user["best_of_n_uplift@8"]
    users = sorted(set(mine) & set(theirs))
    differences = np.array([mine[u] - theirs[u] for u in users])
    # the per-user uplifts average to the row's metric when every user has the same number of groups per draw
    assert np.mean(list(mine.values())) == pytest.approx(mf.metrics["best_of_n_uplift@8"], abs=0.05)
    mean, low, high = paired_interval(mine, theirs, seed=board.seed)
    assert mean == pytest.approx(differences.mean()) and low < mean < high
    rng = np.random.default_rng(board.seed)  # the percentile bootstrap, by hand
    means = differences[rng.integers(0, len(differences), size=(1000, len(differences)))].mean(axis=1)
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    frame = build_table(board).frame
    row = frame[(frame["model"] == "mf") & (frame["split"] == "test_seen")].iloc[0]
    assert (row[OVER_CONSENSUS + "_lo"], row[OVER_CONSENSUS + "_hi"]) == pytest.approx((low, high))
    assert f"[{low:+.3f}, {high:+.3f}]" in to_markdown(board)
