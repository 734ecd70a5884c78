"""What is special to mf: the batched ALS subproblems and the fold-in against independent solvers, a known
low-rank table, and (with the bench extra) Surprise's SVD on identical data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from recsys.data import load_dataset
from recsys.data.dataset import References
from recsys.models import create_model
from recsys.models.mf import Groups, MatrixFactorization, als_solve

NOISE = 0.3


def low_rank_table(path, *, users=150, items=120, rank=3, per_user=60, seed=0):
    """A ratings CSV from a known biased low-rank model plus Gaussian noise of std NOISE."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.6, (users, rank)), rng.normal(0, 0.6, (items, rank))
    bu, bi = rng.normal(0, 0.3, users), rng.normal(0, 0.5, items)
    rows = []
    for u in range(users):
        for i in rng.choice(items, per_user, replace=False):
            rows.append((f"u{u}", f"i{i}", 3.0 + bu[u] + bi[i] + p[u] @ q[i] + rng.normal(0, NOISE)))
    pd.DataFrame(rows, columns=["user_id", "item_id", "score"]).to_csv(path, index=False)
    return path


def test_batched_als_subproblems_match_sklearn_ridge_per_group():
    rng = np.random.default_rng(1)
    group = rng.integers(0, 4, 60)
    x, y, prior = rng.normal(size=(60, 6)), rng.normal(size=60), rng.normal(size=(4, 6))
    ours = als_solve(Groups(group), x, y, np.full(6, 2.5), prior)
    for g in range(4):
        rows = group == g
        # shrinking toward a prior is ridge on y - x prior, shifted by the prior
        fit = Ridge(alpha=2.5, fit_intercept=False).fit(x[rows], y[rows] - x[rows] @ prior[g])
        np.testing.assert_allclose(ours[g], prior[g] + fit.coef_, rtol=1e-10, atol=1e-10)


def test_fold_in_matches_augmented_least_squares(small_sim):
    model = create_model("mf", seed=0).fit(small_sim)
    r = small_sim.ratings["test_unseen"]
    user = int(r.user_idx[0])
    mask = r.user_idx == user
    refs = References(user, r.image_idx[mask][:10], r.score[mask][:10])
    fold = model.fold_
    # independent formulation: stack sqrt(penalty) rows for the prior and solve by lstsq
    x = np.hstack([model.fold_.item_vecs[refs.image_idx], np.ones((10, 1))])
    y = refs.score - model.fold_.a - model.fold_.item_offset[refs.image_idx]
    root = np.sqrt(fold.penalty)
    stacked_x = np.vstack([x, np.diag(root)])
    stacked_y = np.r_[y, root * fold.prior[user]]
    reference = np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0]
    np.testing.assert_allclose(model._fold([refs])[0], reference, rtol=1e-8, atol=1e-10)
    # k = 0 is the demographic prior, and predictions use exactly the folded vector
    empty = References(user, np.empty(0, np.int64), np.empty(0, np.float32))
    np.testing.assert_allclose(model._fold([empty])[0], fold.prior[user])
    images = r.image_idx[mask][10:]
    expected = (
        model.fold_.a
        + model.fold_.item_offset[images]
        + model.fold_.item_vecs[images] @ reference[:-1]
        + reference[-1]
    )
    np.testing.assert_allclose(model.predict_new([refs], [images])[0], expected, rtol=1e-8)


def test_recovers_a_known_low_rank_table_to_the_noise_level(tmp_path):
    dataset = load_dataset(low_rank_table(tmp_path / "ratings.csv"), holdout="random:0.2")
    model = create_model("mf", factors=3, reg=2.0, reg_per_rating=0.0, bias_reg=2.0, epochs=30, seed=0).fit(
        dataset
    )
    test = dataset.ratings["test_seen"]
    rmse = float(np.sqrt(np.mean((model.predict(test.user_idx, test.image_idx) - test.score) ** 2)))
    baseline = float(np.std(test.score))
    assert rmse < 1.2 * NOISE < baseline, (rmse, baseline)


def test_table_without_side_information_scores_unrated_items_as_the_average_image(tmp_path):
    table = load_dataset(
        low_rank_table(tmp_path / "ratings.csv", users=30, items=40, per_user=20), holdout="random:0.2"
    )
    dataset, _ = table.drop_images(np.array([0]))  # image 0 keeps its index but loses every rating
    model = create_model("mf", factors=2, epochs=3).fit(dataset)
    placed = np.flatnonzero(model.placeable(np.arange(dataset.n_images)))
    in_train = np.unique(dataset.ratings["train"].image_idx)
    np.testing.assert_array_equal(placed, in_train)
    user = int(dataset.ratings["train"].user_idx[0])
    # scores are linear in the item parameters: the mean item's score is the mean of the placed images' scores
    average = model.fold_.score(model.user_vecs_[user], placed).mean()
    np.testing.assert_allclose(model.predict([user], [0]), np.clip(average, *dataset.score_range))


@pytest.mark.parametrize("params", [{"factors": 0}, {"reg": -1.0}, {"epochs": 0}, {"feature_alpha": 0.0}])
def test_bad_hyperparameters_raise_value_error(params):
    with pytest.raises(ValueError):
        MatrixFactorization(**params)


def test_user_vectors_are_user_factors(small_sim):
    model = create_model("mf", factors=5, seed=0).fit(small_sim)
    vectors = model.user_vectors()
    assert vectors.shape == (small_sim.n_users, 5) and vectors.dtype == np.float32


def surprise_predictions(surprise, algorithm, dataset):
    """Test-split predictions of a Surprise algorithm fitted on the dataset's train split (indices as ids),
    clipped to the score range as Surprise does by default (and the suite's models do)."""
    train = dataset.ratings["train"]
    frame = pd.DataFrame({"u": train.user_idx, "i": train.image_idx, "r": train.score.astype(np.float64)})
    reader = surprise.Reader(rating_scale=dataset.score_range)
    algorithm.fit(surprise.Dataset.load_from_df(frame, reader).build_full_trainset())
    test = dataset.ratings["test_seen"]
    pairs = zip(test.user_idx.tolist(), test.image_idx.tolist(), strict=True)
    return np.array([algorithm.predict(u, i).est for u, i in pairs])


def test_defaults_at_or_below_surprise_svd_on_identical_data(tmp_path):
    surprise = pytest.importorskip("surprise")
    dataset = load_dataset(low_rank_table(tmp_path / "ratings.csv"), holdout="random:0.2")
    test = dataset.ratings["test_seen"]
    known = np.isin(test.image_idx, dataset.train_images())
    ours = create_model("mf", seed=0).fit(dataset).predict(test.user_idx[known], test.image_idx[known])
    theirs = surprise_predictions(surprise, surprise.SVD(random_state=0), dataset)[known]
    rmse_ours = np.sqrt(np.mean((ours - test.score[known]) ** 2))
    rmse_theirs = np.sqrt(np.mean((theirs - test.score[known]) ** 2))
    assert rmse_ours <= rmse_theirs, (rmse_ours, rmse_theirs)
