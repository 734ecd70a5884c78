"""What is special to blend: it learns from its bases' held-out errors, and its weights come from val_seen only."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from recsys.data.dataset import Ratings, References
from recsys.errors import UserError
from recsys.evaluation.evaluator import Evaluator
from recsys.models import create_model
from recsys.models.blend import _stack, _user_weights

#: closed-form bases (fitted in well under a second): what the tests of the weights need
CHEAP = "ridge,user_ridge"


@pytest.fixture(scope="module")
def blend(small_sim):
    return create_model("blend").fit(small_sim)


def _with_scores(dataset, split: str, scores: np.ndarray):
    ratings = dict(dataset.ratings)
    r = ratings[split]
    ratings[split] = Ratings(r.user_idx, r.image_idx, scores.astype(r.score.dtype))
    return replace(dataset, ratings=ratings)


def test_blend_is_at_least_as_good_as_its_best_base(blend, small_sim):
    """Seen users: user SROCC of the stack at least that of its best base model (within 0.01), new users at 10
    references likewise: the bases (a linear map of features, a factor model, visual profiles) err differently."""
    evaluator = Evaluator(small_sim, shots=(10,), n_bootstrap=10)
    bases = [
        create_model(name, **({"seed": 0} if name == "mf" else {})).fit(small_sim) for name in blend.bases_
    ]
    for split, k in (("test_seen", None), ("test_unseen", 10)):
        best = max(evaluator.evaluate(b, split, k).metrics["user_srocc"] for b in bases)
        assert evaluator.evaluate(blend, split, k).metrics["user_srocc"] >= best - 0.01, split


def test_stack_is_the_best_non_negative_least_squares_fit():
    """Against brute force: least squares with an intercept on every subset of columns, the best fit whose
    weights are all non-negative."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(200, 3))
    target = 1.5 + z @ np.array([2.0, -0.7, 0.4]) + rng.normal(scale=0.3, size=200)
    weights, intercept = _stack(z, target)
    best = None
    for size in range(4):
        for cols in itertools.combinations(range(3), size):
            x = np.column_stack([np.ones(200), z[:, cols]])
            coef = np.linalg.lstsq(x, target, rcond=None)[0]
            if (coef[1:] < 0).any():
                continue
            loss = float(((x @ coef - target) ** 2).sum())
            if best is None or loss < best[0]:
                w = np.zeros(3)
                w[list(cols)] = coef[1:]
                best = (loss, w, coef[0])
    np.testing.assert_allclose(weights, best[1], atol=1e-8)
    assert intercept == pytest.approx(best[2], abs=1e-8)
    assert weights[1] == 0.0


def test_user_weights_run_from_least_squares_to_the_global_weights():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(30, 2))
    residual = z @ np.array([1.0, 0.5])
    prior = np.array([0.2, 0.2])
    np.testing.assert_allclose(_user_weights(z, residual, prior, 1e-12), [1.0, 0.5], atol=1e-8)
    np.testing.assert_allclose(_user_weights(z, residual, prior, np.inf), prior)
    # a penalty of 30 pseudo-ratings: (Z'Z + 30 I) w = Z'r + 30 prior, solved by hand
    expected = np.linalg.solve(z.T @ z + 30 * np.eye(2), z.T @ residual + 30 * prior)
    np.testing.assert_allclose(_user_weights(z, residual, prior, 30.0), expected)


def test_weights_come_from_val_seen_and_never_from_test(small_sim):
    """Other val_seen ratings give other weights; other test or val_unseen ratings give the same weights, to the
    bit."""
    model = create_model("blend", bases=CHEAP).fit(small_sim)
    rng = np.random.default_rng(0)
    for split in ("test_seen", "test_unseen", "val_unseen"):
        n = len(small_sim.ratings[split])
        other = create_model("blend", bases=CHEAP).fit(_with_scores(small_sim, split, rng.uniform(1, 5, n)))
        for key in ("weights_", "intercept_", "user_weights_", "new_weights_", "new_intercept_"):
            np.testing.assert_array_equal(getattr(other, key), getattr(model, key), err_msg=f"{split} {key}")
    val = small_sim.ratings["val_seen"]
    other = create_model("blend", bases=CHEAP).fit(
        _with_scores(small_sim, "val_seen", rng.uniform(1, 5, len(val)))
    )
    assert not np.allclose(other.weights_, model.weights_)
    assert not np.allclose(other.new_weights_, model.new_weights_)


def test_refit_is_deterministic(small_sim):
    a = create_model("blend", bases=CHEAP).fit(small_sim)
    b = create_model("blend", bases=CHEAP).fit(small_sim)
    r = small_sim.ratings["test_seen"]
    np.testing.assert_array_equal(a.predict(r.user_idx, r.image_idx), b.predict(r.user_idx, r.image_idx))
    np.testing.assert_array_equal(a.user_weights_, b.user_weights_)


def test_fit_including_val_seen_has_nothing_to_weigh_on_and_blends_alike(small_sim):
    model = create_model("blend", bases=CHEAP).fit(small_sim, "train+val_seen")
    assert model.validation_split_ is None
    assert model.weights_[0] == model.weights_[1] > 0
    np.testing.assert_array_equal(model.new_weights_, model.weights_[None])


@pytest.mark.parametrize("bases", ["blend", "nonesuch", " , ", "mf,oracle"])
def test_bad_bases_are_a_one_line_error(small_sim, bases):
    with pytest.raises(UserError, match="bases must name registered models") as err:
        create_model("blend", bases=bases).fit(small_sim)
    assert "\n" not in str(err.value)


def test_a_new_user_is_scored_with_the_weights_of_the_largest_fitted_count_not_above_theirs(small_sim):
    """With 3 references the weights fitted at k = 2 score (shots 0, 1, 2, 5, ...): changing any other row of
    the new-user weights leaves the scores as they are, changing that row changes them."""
    model = create_model("blend", bases=CHEAP).fit(small_sim)
    assert model.new_shots_.tolist() == [0, 1, 2, 5, 10, 20]
    r = small_sim.ratings["test_unseen"]
    rows = np.flatnonzero(r.user_idx == r.user_idx[0])
    refs = [References(int(r.user_idx[0]), r.image_idx[rows[:3]], r.score[rows[:3]])]
    queries = [r.image_idx[rows[3:]]]
    before = model.predict_new(refs, queries)[0]
    others = model.new_weights_.copy()
    others[[0, 1, 3, 4, 5]] += 1.0
    model.new_weights_ = others
    np.testing.assert_array_equal(model.predict_new(refs, queries)[0], before)
    others[2] += 1.0
    assert not np.allclose(model.predict_new(refs, queries)[0], before)
