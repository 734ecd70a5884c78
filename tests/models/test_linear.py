"""The consensus ridge: solved on per-image means weighted by counts, it is the ridge over every rating."""

from __future__ import annotations

import numpy as np

from recsys.data.dataset import Ratings
from recsys.models.linear import consensus_scores, dataset_consensus


def test_the_consensus_on_image_means_is_the_ridge_on_every_rating():
    rng = np.random.default_rng(0)
    design = rng.normal(size=(40, 6))
    image_idx = rng.integers(0, 30, size=400)  # images 30..39 are never rated, some are rated many times
    score = design[image_idx] @ rng.normal(size=6) + rng.normal(size=400) + 3.0
    ratings = Ratings(np.zeros(400, np.int64), image_idx, score.astype(np.float32))
    # the textbook ridge, one row per rating: centred columns, unpenalised intercept, normal equations
    x, y = design[image_idx], score.astype(np.float32).astype(np.float64)
    xc, yc = x - x.mean(0), y - y.mean()
    coef = np.linalg.solve(xc.T @ xc + 2.0 * np.eye(6), xc.T @ yc)
    expected = design @ coef + (y.mean() - x.mean(0) @ coef)
    np.testing.assert_allclose(consensus_scores(design, ratings, 2.0), expected, rtol=1e-10, atol=1e-10)


def test_dataset_consensus_is_computed_once_per_ratings_and_alpha(small_sim):
    train, val = small_sim.ratings["train"], small_sim.ratings["val_seen"]
    first = dataset_consensus(small_sim, train, 3.0)
    first[:] = 0.0  # a caller's copy: changing it changes nothing shared
    again = dataset_consensus(small_sim, train, 3.0)
    np.testing.assert_array_equal(again, consensus_scores(small_sim.image_design(), train, 3.0))
    assert not np.array_equal(dataset_consensus(small_sim, val, 3.0), again)
    assert not np.array_equal(dataset_consensus(small_sim, train, 30.0), again)
