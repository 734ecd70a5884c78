"""What is special to the kNN models: the weighted neighbour mean, FAISS against brute force, the
rating-based similarities on a table without image features (Pearson-baseline against loops, and item_knn
against Surprise's KNNBaseline when the bench extra is installed)."""

from __future__ import annotations

import numpy as np
import pytest
from test_mf import low_rank_table, surprise_predictions

from recsys.data import load_dataset
from recsys.data.dataset import References
from recsys.errors import UserError
from recsys.models.knn import ItemKNN, UserKNN, pearson_baseline, weighted_neighbours


def test_weighted_neighbours_by_hand():
    sim = np.array([[0.9, 0.1, -0.5, 0.5]])
    values = np.array([1.0, 10.0, 100.0, -1.0])
    # k = 2 keeps 0.9 and 0.5: (0.9 * 1 - 0.5 * 1) / (1.4 + 0.6)
    np.testing.assert_allclose(weighted_neighbours(sim, values, 2, 0.6), [(0.9 - 0.5) / 2.0])
    # negative similarities never contribute
    np.testing.assert_allclose(weighted_neighbours(sim, values, 4, 0.0), [(0.9 + 1.0 - 0.5) / 1.5])


def test_faiss_neighbours_match_brute_force(small_sim):
    model = UserKNN(k=10).fit(small_sim)
    user = int(model.train_users_[0])
    found, sims = model._neighbours(model.taste_[user], None, None, exclude=user)
    others = model.train_users_[model.train_users_ != user]
    brute = model.taste_[others] @ model.taste_[user]
    expected = np.sort(brute)[::-1][:10]
    np.testing.assert_allclose(np.sort(sims)[::-1], expected, rtol=1e-4, atol=1e-5)
    assert user not in found


def test_user_knn_scores_are_its_definition_computed_by_loops(small_sim):
    model = UserKNN(k=5, image_k=3).fit(small_sim)
    user = int(model.train_users_[1])
    candidates = np.arange(12)
    rated, scores = model._rated(user)
    mean = model.user_mean_[user]
    neighbours, sims = model._neighbours(model.taste_[user], rated, scores - mean, exclude=user)
    num, den = np.zeros(len(candidates)), np.full(len(candidates), model.shrinkage)
    for neighbour, sim in zip(neighbours, sims, strict=True):
        if sim <= 0:
            continue
        their_images, their_scores = model._rated(neighbour)
        # beyond the neighbour's mean and each image's deviation from the global mean in the consensus score
        beyond = [
            score - model.user_mean_[neighbour] - (model.item_score_[j] - model.global_)
            for j, score in zip(their_images, their_scores, strict=True)
        ]
        for row, image in enumerate(candidates):  # its 3 rated images nearest the candidate, one at a time
            cosine = [float(model.embedding_[image] @ model.embedding_[j]) for j in their_images]
            num[row] += sim * np.mean(np.array(beyond)[np.argsort(cosine)[::-1][:3]])
            den[row] += sim
    expected = mean + (model.item_score_[candidates] - model.global_) + num / den
    np.testing.assert_allclose(model.predict(np.full(12, user), candidates), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = low_rank_table(tmp_path_factory.mktemp("table") / "ratings.csv", users=100, items=80, per_user=40)
    return load_dataset(path, holdout="random:0.2")


@pytest.mark.parametrize("cls", [ItemKNN, UserKNN])
def test_rating_based_fallback_without_features(cls, table):
    assert table.image_features is None
    model = cls(k=20).fit(table)
    assert model.embedding_ is None
    test = table.ratings["test_seen"]
    pred = model.predict(test.user_idx, test.image_idx)
    rmse = np.sqrt(np.mean((pred - test.score) ** 2))
    assert rmse < 0.8 * np.std(test.score), rmse
    # new users from references, also rating-based
    train = table.ratings["train"]
    refs = References(int(train.user_idx[0]), train.image_idx[train.user_idx == train.user_idx[0]][:10],
                      train.score[train.user_idx == train.user_idx[0]][:10])  # fmt: skip
    out = model.predict_new([refs], [test.image_idx[:5]])[0]
    assert out.shape == (5,) and np.isfinite(out).all()


def test_user_knn_on_a_table_by_loops_and_without_neighbours_is_the_zero_shot_ranking(table):
    """Without features: co-rating cosine neighbours, each judged by its own rating of the candidate beyond its
    mean and the image's deviation; an image no neighbour rated keeps user mean + its deviation, which orders
    the images as the 0-shot prediction (the shrunk image mean) does."""
    model = UserKNN(k=5).fit(table)
    train = table.ratings["train"]
    user = int(train.user_idx[0])
    rated, scores = model._rated(user)
    mean = model.user_mean_[user]
    neighbours, sims = model._neighbours(None, rated, scores - mean, exclude=user)
    candidates = np.arange(table.n_images)
    num, den = np.zeros(len(candidates)), np.full(len(candidates), model.shrinkage)
    deviation = model.item_score_ - model.global_
    for neighbour, sim in zip(neighbours, sims, strict=True):
        if sim <= 0:
            continue
        for image, score in zip(*model._rated(neighbour), strict=True):
            num[image] += sim * (score - model.user_mean_[neighbour] - deviation[image])
            den[image] += sim
    expected = mean + deviation + num / den
    np.testing.assert_allclose(model.predict(np.full(len(candidates), user), candidates), expected, atol=1e-9)
    unrated = den == model.shrinkage
    assert unrated.sum() >= 2
    zero_shot = model.predict_new([References(-1, np.empty(0, np.int64), np.empty(0, np.float32))],
                                  [candidates[unrated]])[0]  # fmt: skip
    np.testing.assert_allclose(expected[unrated] - zero_shot, mean - model.global_, atol=1e-9)  # a shift


def test_item_knn_new_user_by_loops_and_one_reference_keeps_the_zero_shot_ranking(table):
    """A new user's score: baseline + sum over its references with positive similarity of s * (residual - the
    references' mean residual), over (sum of s + shrinkage); one reference has no residual beyond its mean, so it
    leaves the 0-shot ranking as it was."""
    model = ItemKNN().fit(table)
    base = model.baseline_
    train = table.ratings["train"]
    rows = np.flatnonzero(train.user_idx == train.user_idx[0])[:6]
    rated, scores = train.image_idx[rows], train.score[rows].astype(np.float64)
    candidates = np.setdiff1d(np.arange(table.n_images), rated)
    bias = base.fold(-1, rated, scores)
    residual = scores - (base.mu + bias + base.item_bias[rated])
    centred = residual - residual.mean()
    expected = []
    for c in candidates:
        sims = [float(model.item_sim_[c, j]) for j in rated]
        num = sum(s * e for s, e in zip(sims, centred, strict=True) if s > 0)
        den = sum(s for s in sims if s > 0) + model.shrinkage
        expected.append(base.mu + bias + base.item_bias[c] + num / den)
    expected = np.clip(expected, *table.score_range)
    new = model.predict_new([References(-1, rated, scores.astype(np.float32))], [candidates])[0]
    np.testing.assert_allclose(new, expected, atol=1e-6)
    one = model.predict_new([References(-1, rated[:1], scores[:1].astype(np.float32))], [candidates])[0]
    none = model.predict_new([References(-1, rated[:0], scores[:0].astype(np.float32))], [candidates])[0]
    np.testing.assert_allclose(one - none, (one - none)[0], atol=1e-9)  # a shift: the same order


def test_item_knn_zero_shot_is_the_baseline_estimate(small_sim):
    model = ItemKNN().fit(small_sim)
    images = np.arange(10)
    empty = References(0, np.empty(0, np.int64), np.empty(0, np.float32))
    base = model.baseline_
    expected = base.mu + base.user_prior[0] + base.item_bias[images]
    np.testing.assert_allclose(model.predict_new([empty], [images])[0], expected)


def test_weighted_neighbours_without_positive_similarity_is_zero():
    sim = np.array([[-0.2, 0.0]])
    np.testing.assert_array_equal(weighted_neighbours(sim, np.array([1.0, 2.0]), 2, 0.0), [0.0])


def test_pearson_baseline_against_loops_over_co_raters():
    rng = np.random.default_rng(3)
    mask = rng.random((6, 9)) < 0.6  # 6 images x 9 users
    residual = rng.normal(size=(6, 9))
    rows, columns = np.nonzero(mask)
    ours = pearson_baseline(rows, columns, residual[rows, columns], 6, shrinkage=4.0)
    for i in range(6):
        for j in range(6):
            common = mask[i] & mask[j]
            n = common.sum()
            expected = 0.0
            if i != j and n >= 2:
                a, b = residual[i, common], residual[j, common]
                expected = a @ b / np.sqrt((a @ a) * (b @ b)) * (n - 1) / (n - 1 + 4.0)
            assert ours[i, j] == pytest.approx(expected, abs=1e-12), (i, j)


def test_item_knn_on_a_table_is_surprise_knn_baseline(table):
    """Without features, no shrinkage of the neighbour sum and uncentred residuals, item_knn is KNNBaseline
    (item-based pearson_baseline, k = 40, shrinkage 100, baselines by ALS with reg_u 15, reg_i 10, 10 epochs):
    the same predictions on identical data."""
    surprise = pytest.importorskip("surprise")
    ours = ItemKNN(shrinkage=0.0, centre_residuals=False).fit(table)
    test = table.ratings["test_seen"]
    peer = surprise.KNNBaseline(sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False)
    theirs = surprise_predictions(surprise, peer, table)
    np.testing.assert_allclose(ours.predict(test.user_idx, test.image_idx), theirs, atol=1e-5)


def test_embedding_similarity_without_features_is_a_clear_error(table):
    with pytest.raises(UserError, match="needs image features"):
        ItemKNN(similarity="embedding").fit(table)


@pytest.mark.parametrize("params", [{"k": 0}, {"shrinkage": -1.0}, {"k": 2.5}])
def test_bad_hyperparameters_raise_value_error(params):
    with pytest.raises(ValueError):
        ItemKNN(**params)
    with pytest.raises(ValueError):
        UserKNN(**params)
