"""Elicitation: strategies pick references from the pool only, from the answers so far, on random's queries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.data import References
from recsys.evaluation.elicitation import (
    Elicitor,
    LinearPosterior,
    coverage_scorer,
    disagreement_scorer,
    distinctiveness,
    elicit,
    linear_posterior,
)
from recsys.evaluation.evaluator import Evaluator
from recsys.leaderboard import run_leaderboard
from recsys.models.registry import create_model

STRATEGIES = ("disagreement", "uncertainty", "coverage")


@pytest.fixture(scope="module")
def mf(small_sim):
    return create_model("mf").fit(small_sim)


@pytest.fixture(scope="module")
def profile(small_sim):
    return create_model("profile").fit(small_sim)


def episodes(evaluator, model, shots, draw=0):
    """user -> (references, query images, query scores) of each new user's episode."""
    drawn, _ = evaluator.episodes("test_unseen", shots, draw, model)
    r = evaluator.table("test_unseen")
    return {
        e.user_idx: (
            References(e.user_idx, r.image_idx[e.references], r.score[e.references]),
            r.image_idx[e.queries],
            r.score[e.queries],
        )
        for e in drawn
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_queries_are_randoms_and_references_come_from_the_pool(small_sim, mf, strategy):
    random = Evaluator(small_sim, shots=(0, 3, 8), draws=2, reference_pool=20)
    chosen = Evaluator(small_sim, shots=(0, 3, 8), draws=2, reference_pool=20, references=strategy)
    r = small_sim.ratings["test_unseen"]
    for draw in (0, 1):
        previous = None
        for k in (0, 3, 8):
            a, b = episodes(random, mf, k, draw), episodes(chosen, mf, k, draw)
            assert a.keys() == b.keys() and len(a) > 0
            for user, (refs, query_images, query_scores) in b.items():
                np.testing.assert_array_equal(query_images, a[user][1])
                np.testing.assert_array_equal(query_scores, a[user][2])
                assert len(refs) == k and len(set(refs.image_idx.tolist())) == k
                assert not set(refs.image_idx.tolist()) & set(query_images.tolist())
                # the pool is the user's ratings that are not queries: 20 of them
                rated = r.image_idx[r.user_idx == user]
                pool = np.setdiff1d(rated, query_images)
                assert len(pool) == 20 and np.isin(refs.image_idx, pool).all()
                mine = r.user_idx == user
                observed = dict(zip(r.image_idx[mine].tolist(), r.score[mine].tolist(), strict=True))
                assert [observed[i] for i in refs.image_idx.tolist()] == refs.score.tolist()
                if previous is not None:  # nested: the references at k start with those at a smaller k
                    earlier = previous[user][0].image_idx
                    np.testing.assert_array_equal(refs.image_idx[: len(earlier)], earlier)
            previous = b


def test_picks_read_only_the_answers_asked_for(small_sim, mf):
    """Changing the scores of pool images that were never asked changes no pick."""
    elicitor = Elicitor("disagreement", mf, small_sim)
    pool = np.arange(30, 60)
    scores = np.random.default_rng(0).uniform(1, 5, len(pool))
    asked: list[int] = []

    def ask(position: int) -> float:
        asked.append(position)
        return float(scores[position])

    first = elicitor.picks(pool, ask, 10)
    assert asked == first.tolist() and len(set(asked)) == 10  # one question per pick, never twice
    other = scores.copy()
    untouched = np.setdiff1d(np.arange(len(pool)), first)
    other[untouched] = 6 - other[untouched]
    again = elicitor.picks(pool, lambda p: float(other[p]), 10)
    np.testing.assert_array_equal(again, first)
    # while the answers so far do steer it
    moved = elicitor.picks(pool, lambda p: float(6 - scores[p]), 10)
    assert moved[0] == first[0] and not np.array_equal(moved, first)


def test_elicit_takes_the_best_free_value_first_of_ties():
    values = np.array([1.0, 3.0, 3.0, 2.0])
    picks = elicit(lambda asked, answers: values, lambda p: 0.0, 4, 3)
    assert picks.tolist() == [1, 2, 3]
    assert elicit(lambda a, b: values, lambda p: 0.0, 4, 10).tolist() == [1, 2, 3, 0]


def test_disagreement_by_hand():
    predicted = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 2.0, 5.0]])
    values = disagreement_scorer(predicted)
    centred = predicted - predicted.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(values([], []), centred.var(axis=0))
    # after one answer of 1 on image 0: errors 0, 4, 1; median 1; weights exp(-e / 2)
    weights = np.exp(-np.array([0.0, 4.0, 1.0]) / 2)
    weights /= weights.sum()
    mean = weights @ centred
    np.testing.assert_allclose(values([0], [1.0]), weights @ (centred - mean) ** 2)


def test_coverage_by_hand():
    similarity = np.array([[0.9, 0.0], [0.8, 0.1], [0.1, 0.7], [-0.5, 0.3]])
    mass = np.array([0.75, 0.25])
    values = coverage_scorer(similarity, mass)
    np.testing.assert_allclose(values([], []), [0.675, 0.625, 0.25, 0.075])
    # image 0 covers prototype 0 at 0.9: only prototype 1 is left to gain
    np.testing.assert_allclose(values([0], [4.0]), [0.0, 0.025, 0.175, 0.075])
    assert elicit(values, lambda p: 3.0, 4, 2).tolist() == [0, 2]


def test_distinctiveness_by_hand():
    # four panel users in two taste groups; image 2 splits the groups, image 0 does not
    centred = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 1.0, -1.0], [2.0, -1.0, -1.0]])
    groups, mass = np.array([0, 0, 1, 1]), np.array([0.5, 0.5])
    means = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, -1.0]])
    gaps = means - means.mean(axis=0)  # [[-0.5, 0.5, 1], [0.5, -0.5, -1]]
    expected = np.abs(gaps / gaps.std(axis=1, keepdims=True)).T
    np.testing.assert_allclose(distinctiveness(centred, groups, mass), expected)
    values = coverage_scorer(expected, mass)
    assert elicit(values, lambda p: 3.0, 3, 1).tolist() == [2]  # the image that tells the groups apart


def test_posterior_variance_equals_the_primal_posterior_and_avoids_repeats():
    rng = np.random.default_rng(1)
    rows = rng.normal(0, 1.0, size=(6, 3))
    rows[0] = rows[1] = [3.0, 0.5, 0.0]  # the two most uncertain images look the same to the model
    posterior = LinearPosterior(rows, np.array([2.0, 0.5, 1.0]), 0.05)
    pool = np.arange(6)
    for asked in ([], [0], [0, 4]):
        x = rows[asked]
        covariance = np.linalg.inv(x.T @ x / 0.05 + np.diag(1 / np.array([2.0, 0.5, 1.0])))
        expected = np.einsum("pi,ij,pj->p", rows, covariance, rows)
        np.testing.assert_allclose(posterior.variances(pool, asked), expected, rtol=1e-9)
    picks = elicit(lambda asked, answers: posterior.variances(pool, asked), lambda p: 0.0, 6, 3)
    assert picks[0] == 0 and 1 not in picks[1:].tolist()  # once image 0 is asked, image 1 says little more


@pytest.mark.parametrize("name", ["mf", "profile"])
def test_the_posterior_is_the_models_own_fold_in(small_sim, mf, profile, name):
    """The posterior mean of the adapter's linear model reproduces the model's predict_new."""
    model = {"mf": mf, "profile": profile}[name]
    post = linear_posterior(model)
    refs = References(-1, np.array([3, 50, 77, 120, 301]), np.array([4.0, 2.0, 5.0, 1.0, 3.0], np.float32))
    queries = np.array([5, 6, 400, 700])
    if name == "mf":
        fold = model.fold_
        offset, scale, prior = fold.item_offset, fold.b, fold.prior[-1]
        target = (refs.score - fold.a) / fold.b - offset[refs.image_idx]
    else:
        offset, scale = model.consensus_, 1.0
        prior = model.demo_[-1] @ model.demo_map_
        target = refs.score - model.consensus_[refs.image_idx]
    x = post.rows[refs.image_idx]
    precision = 1 / post.prior_var
    w = np.linalg.solve(
        x.T @ x / post.noise + np.diag(precision), x.T @ target / post.noise + precision * prior
    )
    base = fold.a if name == "mf" else 0.0
    expected = base + scale * (post.rows[queries] @ w + offset[queries])
    np.testing.assert_allclose(model.predict_new([refs], [queries])[0], expected, rtol=1e-6)


def test_models_without_a_posterior_are_unsupported_for_uncertainty(small_sim):
    model = create_model("item_knn").fit(small_sim)
    evaluator = Evaluator(small_sim, shots=(0, 2), draws=1, references="uncertainty")
    row = evaluator.evaluate(model, "test_unseen", 2)
    assert row.status == "unsupported" and "no posterior" in row.reason


def test_leaderboard_records_the_strategy(small_sim):
    common = dict(splits=["test_unseen"], shots=[1, 4], draws=1, jobs=1, progress=False, reference_pool=12)
    board = run_leaderboard(small_sim, ["mf"], references="coverage", **common)
    protocol = board.to_json()["protocol"]
    assert protocol["references"] == "coverage" and protocol["reference_pool"] == 12
    assert all(r.status == "ok" for r in board.rows)
    random = run_leaderboard(small_sim, ["mf"], **common)
    # the same queries: the same number of them per draw
    assert [r.n_ratings for r in board.rows] == [r.n_ratings for r in random.rows]


def test_leaderboard_command_takes_a_strategy(small_sim_dir, tmp_path, capsys):
    from recsys.cli import main

    out = tmp_path / "board"
    common = ["leaderboard", "--data", str(small_sim_dir), "--models", "profile", "--splits", "test_unseen"]
    common += ["--draws", "1", "--no-tracking", "--jobs", "1"]
    args = [
        *common,
        "--references",
        "uncertainty",
        "--reference-pool",
        "25",
        "--shots",
        "1,3",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    protocol = json.loads((out / "leaderboard.json").read_text())["protocol"]
    assert (protocol["references"], protocol["reference_pool"], protocol["shots"]) == (
        "uncertainty",
        25,
        [1, 3],
    )
    assert "references chosen by uncertainty" in (out / "leaderboard.md").read_text()
    capsys.readouterr()
    # a pool smaller than the largest k (the default k = 1..20 of a strategy) is one line, exit 2
    assert (
        main([*common, "--references", "coverage", "--reference-pool", "10", "--out", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err == "error: the reference pool (10) must hold the largest k (20)"
