"""What is special to als and bpr: likes at a threshold, calibration to the rating scale, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.dataset import Ratings
from recsys.models import create_model
from recsys.models.implicit_models import ALS, BPR, likes_matrix


def test_likes_matrix_keeps_scores_at_or_above_the_threshold():
    r = Ratings(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), np.array([4.0, 3.9, 5.0, 1.0], np.float32))
    binary = likes_matrix(r, 2, 3, 4.0, confidence=False).toarray()
    np.testing.assert_array_equal(binary, [[1, 0, 0], [0, 1, 0]])
    weighted = likes_matrix(r, 2, 3, 4.0, confidence=True).toarray()
    np.testing.assert_array_equal(weighted, [[4.0, 0, 0], [0, 5.0, 0]])


def test_threshold_above_every_score_is_a_clear_error(small_sim):
    with pytest.raises(ValueError, match="like_threshold"):
        ALS(like_threshold=99.0).fit(small_sim)


@pytest.mark.parametrize("name", ["als", "bpr"])
def test_calibration_is_monotonic_and_on_the_rating_scale(name, small_sim):
    model = create_model(name, seed=0).fit(small_sim)
    a, b = model.calibration
    assert b > 0
    r = small_sim.ratings["test_seen"]
    pred = model.predict(r.user_idx, r.image_idx)
    # within a user, predictions order exactly as the raw dot products
    user = r.user_idx == r.user_idx[0]
    raw = model.fold_.item_vecs[r.image_idx[user]] @ model.user_vecs_[r.user_idx[0], :-1]
    raw += model.fold_.item_offset[r.image_idx[user]]
    assert np.all(np.diff(pred[user][np.argsort(raw)]) >= -1e-9)
    # the calibrated scores live near the rating scale and beat the global mean's RMSE
    rmse = np.sqrt(np.mean((pred - r.score) ** 2))
    assert rmse < np.std(r.score) * 0.95
    assert abs(pred.mean() - r.score.mean()) < 0.3


def test_bpr_item_bias_column_becomes_the_offset(small_sim):
    model = BPR(factors=8, iterations=5, seed=0).fit(small_sim)
    assert model.user_vectors().shape == (small_sim.n_users, 8)
    assert np.ptp(model.fold_.item_offset) > 0


@pytest.mark.parametrize(
    ("cls", "params"),
    [(ALS, {"factors": 0}), (ALS, {"alpha": -1.0}), (ALS, {"iterations": 0}), (BPR, {"learning_rate": 0.0}),
     (BPR, {"like_threshold": float("nan")}), (ALS, {"blend": -1.0})],
)  # fmt: skip
def test_bad_hyperparameters_raise_value_error(cls, params):
    with pytest.raises(ValueError):
        cls(**params)
