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
    m = best_of_n(user, score, prediction, 2, user_ids=ids, seed=0, truth=score * 2)
    key = __import__("zlib").crc32(b"u")
    groups = np.random.default_rng([0, 2, key]).permutation(4).reshape(2, 2)
    picks = [g[np.argmax(prediction[g])] for g in groups]
    uplift = np.mean([score[p] - score[g].mean() for p, g in zip(picks, groups, strict=True)])
    hit = np.mean([score[p] == score[g].max() for p, g in zip(picks, groups, strict=True)])
    assert m["best_of_n_uplift@2"] == pytest.approx(uplift)
    assert m["best_of_n_hit@2"] == pytest.approx(hit)
    assert m["best_of_n_true_uplift@2"] == pytest.approx(2 * uplift)
    # a perfect ranking picks every favourite; a reversed one never does
    perfect = best_of_n(user, score, score, 2, user_ids=ids)
    assert perfect["best_of_n_hit@2"] == 1.0 and perfect["best_of_n_uplift@2"] >= 0
    users_without_n = best_of_n(user[:1], score[:1], prediction[:1], 2, user_ids=ids)
    assert np.isnan(users_without_n["best_of_n_uplift@2"])


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
    head = next(line for line in table if line.startswith("model "))  # after the run and splits lines
    assert "best@8" in head and "vs ridge" in head
    mf_seen = next(line for line in table if line.startswith("mf ") and "test_seen" in line)
    mf_up, ridge_up = (by[(m, "test_seen", None)]["best_of_n_uplift@8"] for m in ("mf", "ridge"))
    assert mf_seen.split()[-2:] == [f"{mf_up:.3f}", f"{mf_up - ridge_up:+.3f}"]
    markdown = to_markdown(board)
    assert "## Best of n" in markdown and "over ridge @8" in markdown
    json.dumps(board.to_json())  # the metrics reach leaderboard.json
