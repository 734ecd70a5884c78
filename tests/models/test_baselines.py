"""Baselines against hand values and independent implementations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge as SkRidge

from recsys.data.dataset import Dataset, Ratings, References
from recsys.evaluation.evaluator import Evaluator
from recsys.models import create_model
from recsys.models.baselines import weight_prior_ratio


def tiny_dataset(features=None) -> Dataset:
    images = pd.DataFrame(
        {
            "type": ["Art", "Art", "Photo", "Photo"],
            "group": ["a", "b", "a", "a"],
            "style": ["s", "s", None, None],
        }
    )
    r = Ratings(
        np.array([0, 0, 1, 1, 1]), np.array([0, 1, 0, 2, 3]), np.array([1.0, 3.0, 2.0, 4.0, 5.0], np.float32)
    )
    return Dataset(
        name="tiny",
        simulated=False,
        pamela_semantics=False,
        user_ids=np.array(["u0", "u1"], object),
        image_ids=np.arange(4),
        users=pd.DataFrame(index=range(2)),
        images=images,
        ratings={"train": r},
        score_range=(1.0, 5.0),
        image_features=features,
    )


def test_global_mean():
    model = create_model("global_mean").fit(tiny_dataset())
    assert model.predict(np.array([0]), np.array([3]))[0] == pytest.approx(3.0)


def test_metadata_mean_shrinks_hierarchically_by_hand():
    ds = tiny_dataset()
    model = create_model("metadata_mean", shrinkage=1.0).fit(ds)
    g = 3.0
    art = (1 + 3 + 2 + 1 * g) / (3 + 1)  # type Art: ratings of images 0, 1, 0
    photo = (4 + 5 + g) / (2 + 1)
    art_a = (1 + 2 + art) / (2 + 1)  # (Art, a): image 0 rated 1 and 2
    art_a_s = (1 + 2 + art_a) / (2 + 1)
    photo_a = (4 + 5 + photo) / (2 + 1)
    photo_a_none = (4 + 5 + photo_a) / (2 + 1)
    np.testing.assert_allclose(
        model.predict(np.zeros(4, int), np.arange(4)),
        [art_a_s, (3 + ((3 + art) / 2)) / 2, photo_a_none, photo_a_none],
    )


def test_ridge_matches_scikit_learn():
    rng = np.random.default_rng(0)
    ds = tiny_dataset(rng.normal(size=(4, 3)).astype(np.float32))

    x = ds.image_design()
    r = ds.ratings["train"]
    reference = SkRidge(alpha=2.0).fit(x[r.image_idx], r.score).predict(x)
    model = create_model("ridge", alpha=2.0).fit(ds)
    np.testing.assert_allclose(model.predict(np.zeros(4, int), np.arange(4)), reference, rtol=1e-6)


def test_consensus_from_grouped_rows_equals_the_per_rating_ridge():
    """The consensus ridge solves one weighted row per image; scikit-learn fits one row per rating."""
    from recsys.data.dataset import Ratings
    from recsys.models.linear import consensus_scores

    rng = np.random.default_rng(1)
    design = rng.normal(size=(30, 6))
    image_idx = rng.integers(0, 25, size=400)  # images 25..29 unrated, others rated many times
    score = rng.normal(size=400).astype(np.float32)
    ratings = Ratings(np.zeros(400, np.int64), image_idx.astype(np.int64), score)
    reference = SkRidge(alpha=2.0).fit(design[image_idx], score.astype(np.float64)).predict(design)
    np.testing.assert_allclose(consensus_scores(design, ratings, 2.0), reference, rtol=1e-9, atol=1e-12)


def test_user_ridge_equals_primal_solution_and_new_user_path():
    rng = np.random.default_rng(1)
    ds = tiny_dataset(rng.normal(size=(4, 6)).astype(np.float32))
    model = create_model("user_ridge", alpha=1.0, user_alpha=0.5, bias_shrinkage=2.0).fit(ds)

    x = ds.image_design()
    images, scores = np.array([0, 2, 3]), np.array([2.0, 4.0, 5.0])
    residual = scores - model.global_score_[images]
    bias = residual.sum() / (3 + 2.0)
    # primal ridge without intercept: (X^T X + a I)^-1 X^T (r - b), an independent route to the dual solution;
    # a = user_alpha times the empirical-Bayes ratio estimated from the fitted users
    penalty = model.user_alpha_
    assert penalty == pytest.approx(
        0.5 * weight_prior_ratio(x, ds.ratings["train"], model_residual(model, ds))
    )
    w = np.linalg.solve(
        x[images].T @ x[images] + penalty * np.eye(x.shape[1]), x[images].T @ (residual - bias)
    )
    expected = model.global_score_ + bias + x @ w
    np.testing.assert_allclose(model.predict(np.ones(4, int), np.arange(4)), expected, rtol=1e-6)
    new = model.predict_new([References(1, images, scores)], [np.arange(4)])[0]
    np.testing.assert_allclose(new, expected, rtol=1e-6)
    zero_shot = model.predict_new([References(1, np.array([], int), np.array([]))], [np.arange(4)])[0]
    np.testing.assert_allclose(zero_shot, model.global_score_, rtol=1e-9)


def model_residual(model, ds):
    train = ds.ratings["train"]
    return train.score.astype(np.float64) - model.global_score_[train.image_idx]


def synthetic_users(rng, weight_var, users=500, per_user=40, images=300, dims=5):
    """Residuals ``b + X w + e`` of users with ``b ~ N(0, 0.3)``, ``w ~ N(0, weight_var I)``, ``e ~ N(0, 1)``."""
    design = rng.normal(size=(images, dims))
    user_idx = np.repeat(np.arange(users), per_user)
    image_idx = np.concatenate([rng.choice(images, per_user, replace=False) for _ in range(users)])
    w = rng.normal(0, np.sqrt(weight_var), (users, dims)) if weight_var else np.zeros((users, dims))
    bias = rng.normal(0, np.sqrt(0.3), users)
    residual = (
        bias[user_idx]
        + np.einsum("ij,ij->i", design[image_idx], w[user_idx])
        + rng.normal(size=len(user_idx))
    )
    return design, Ratings(user_idx, image_idx, residual.astype(np.float32)), residual


def test_the_empirical_bayes_penalty_recovers_noise_over_weight_variance():
    rng = np.random.default_rng(0)
    design, ratings, residual = synthetic_users(rng, weight_var=0.05)
    assert weight_prior_ratio(design, ratings, residual) == pytest.approx(1.0 / 0.05, rel=0.15)
    design, ratings, residual = synthetic_users(rng, weight_var=0.5)
    assert weight_prior_ratio(design, ratings, residual) == pytest.approx(1.0 / 0.5, rel=0.15)
    # no personal weights at all: a large penalty (the estimate of their variance is about 0)
    design, ratings, residual = synthetic_users(rng, weight_var=0.0)
    assert weight_prior_ratio(design, ratings, residual) > 50


@pytest.mark.parametrize("name", ["metadata_mean", "ridge", "user_ridge"])
def test_baselines_learn_on_simulated_data(name, small_sim):
    """Each baseline beats the global mean's user SROCC (0 by definition) on seen and unseen users."""
    ev = Evaluator(small_sim, shots=(10,), n_bootstrap=10)
    model = create_model(name).fit(small_sim)
    assert ev.evaluate(model, "test_seen").metrics["user_srocc"] > 0.15
    assert ev.evaluate(model, "test_unseen", 10).metrics["user_srocc"] > 0.15


def test_personalisation_pays_on_seen_users(small_sim):
    ev = Evaluator(small_sim, n_bootstrap=10)
    ridge = ev.evaluate(create_model("ridge").fit(small_sim), "test_seen").metrics["user_srocc"]
    user_ridge = ev.evaluate(create_model("user_ridge").fit(small_sim), "test_seen").metrics["user_srocc"]
    assert user_ridge > ridge + 0.1


def test_bad_hyperparameters_raise_value_errors():
    from recsys.errors import UserError

    with pytest.raises(UserError, match="alpha must be > 0, got -1"):
        create_model("ridge", alpha=-1)
    with pytest.raises(UserError, match="unknown model"):
        create_model("nope")
