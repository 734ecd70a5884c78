"""What is special to the biases baseline: ALS steps by hand, the converged fit against a direct
least-squares solve, the fold-in of new users, image biases from features, and (with the bench extra)
Surprise's BaselineOnly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_mf import low_rank_table, surprise_predictions

from recsys.data import load_dataset
from recsys.data.dataset import References
from recsys.models import create_model


def write_table(path, rows) -> object:
    """A rating table from (user, item, score, split) rows."""
    pd.DataFrame(rows, columns=["user_id", "item_id", "score", "split"]).to_csv(path, index=False)
    return load_dataset(path)


def test_one_als_epoch_by_hand(tmp_path):
    # u0 rates a: 5, b: 3; u1 rates a: 4; mu = 4. Item step first (user biases 0), regs 1:
    # b_a = ((5 - 4) + (4 - 4)) / (2 + 1) = 1/3, b_b = (3 - 4) / (1 + 1) = -1/2;
    # then b_u0 = ((5 - 4 - 1/3) + (3 - 4 + 1/2)) / (2 + 1) = 1/18, b_u1 = (4 - 4 - 1/3) / (1 + 1) = -1/6
    table = write_table(
        tmp_path / "ratings.csv", [("u0", "a", 5, "train"), ("u0", "b", 3, "train"), ("u1", "a", 4, "train")]
    )
    model = create_model("biases", user_reg=1.0, item_reg=1.0, epochs=1).fit(table)
    u0, u1 = table.user_index("u0"), table.user_index("u1")
    a, b = table.image_index("a"), table.image_index("b")
    base = model.baseline_
    assert base.mu == pytest.approx(4.0)
    np.testing.assert_allclose(base.item_bias[[a, b]], [1 / 3, -1 / 2])
    np.testing.assert_allclose(base.user_bias[[u0, u1]], [1 / 18, -1 / 6])
    np.testing.assert_allclose(model.predict([u1], [b]), [4.0 - 1 / 6 - 1 / 2])


def test_converges_to_the_penalised_least_squares_solution(tmp_path):
    table = load_dataset(
        low_rank_table(tmp_path / "ratings.csv", users=40, items=30, per_user=12), holdout="random:0.2"
    )
    model = create_model("biases", user_reg=3.0, item_reg=2.0, epochs=300).fit(table)
    # independent: argmin |r - mu - b_u - b_i|^2 + 3 |b_u|^2 + 2 |b_i|^2 as one stacked least-squares problem
    r = table.ratings["train"]
    x = np.zeros((len(r), table.n_users + table.n_images))
    x[np.arange(len(r)), r.user_idx] = 1.0
    x[np.arange(len(r)), table.n_users + r.image_idx] = 1.0
    penalty = np.r_[np.full(table.n_users, np.sqrt(3.0)), np.full(table.n_images, np.sqrt(2.0))]
    stacked = np.vstack([x, np.diag(penalty)])
    target = np.r_[r.score - r.score.astype(np.float64).mean(), np.zeros(len(penalty))]
    solution = np.linalg.lstsq(stacked, target, rcond=None)[0]
    np.testing.assert_allclose(model.baseline_.user_bias, solution[: table.n_users], atol=1e-8)
    np.testing.assert_allclose(model.baseline_.item_bias, solution[table.n_users :], atol=1e-8)


def test_fold_in_of_a_new_user_by_hand(small_sim):
    model = create_model("biases").fit(small_sim)
    base = model.baseline_
    r = small_sim.ratings["test_unseen"]
    user = int(r.user_idx[0])
    mask = r.user_idx == user
    refs = References(user, r.image_idx[mask][:10], r.score[mask][:10])
    residual = refs.score.astype(np.float64) - base.mu - base.item_bias[refs.image_idx]
    bias = (residual.sum() + base.user_reg * base.user_prior[user]) / (10 + base.user_reg)
    images = r.image_idx[mask][10:]
    np.testing.assert_allclose(
        model.predict_new([refs], [images])[0], base.mu + bias + base.item_bias[images]
    )
    # no references: the demographic prior
    empty = References(user, np.empty(0, np.int64), np.empty(0, np.float32))
    expected = base.mu + base.user_prior[user] + base.item_bias[images]
    np.testing.assert_allclose(model.predict_new([empty], [images])[0], expected)


def test_images_absent_from_the_fit_get_biases_from_their_features(small_sim):
    model = create_model("biases").fit(small_sim)
    test = small_sim.ratings["test_seen"]
    train_images = small_sim.train_images()
    assert not np.isin(test.image_idx, train_images).any()  # PAMELA: test_seen images are new
    # the image bias of a new image tracks its mean test score
    images = np.unique(test.image_idx)
    mean_score = np.array([test.score[test.image_idx == i].mean() for i in images])
    assert np.corrcoef(model.baseline_.item_bias[images], mean_score)[0, 1] > 0.3
    pred = model.predict(test.user_idx, test.image_idx)
    rmse = np.sqrt(np.mean((pred - test.score) ** 2))
    assert rmse < np.sqrt(np.mean((test.score - small_sim.ratings["train"].score.mean()) ** 2))


def test_without_side_information_a_new_image_scores_mean_plus_user_bias(tmp_path):
    table = write_table(
        tmp_path / "ratings.csv",
        [
            ("u0", "a", 5, "train"),
            ("u0", "b", 3, "train"),
            ("u1", "a", 4, "train"),
            ("u1", "c", 2, "test_seen"),
        ],
    )
    model = create_model("biases").fit(table)
    u1, c = table.user_index("u1"), table.image_index("c")
    expected = model.baseline_.mu + model.baseline_.user_bias[u1]
    np.testing.assert_allclose(model.predict([u1], [c]), [expected])


def test_matches_surprise_baseline_only(tmp_path):
    surprise = pytest.importorskip("surprise")
    path = low_rank_table(tmp_path / "ratings.csv", users=60, items=50, per_user=20)
    table = load_dataset(path, holdout="random:0.2")
    model = create_model("biases").fit(table)
    test = table.ratings["test_seen"]
    theirs = surprise_predictions(surprise, surprise.BaselineOnly(verbose=False), table)
    np.testing.assert_allclose(model.predict(test.user_idx, test.image_idx), theirs, atol=1e-6)


@pytest.mark.parametrize("params", [{"user_reg": 0.0}, {"item_reg": -1.0}, {"epochs": 0}])
def test_bad_hyperparameters_raise_value_error(params):
    with pytest.raises(ValueError):
        create_model("biases").clone(**params)
