"""What is special to lightfm: cluster item features that reach unseen images, losses, demographic users."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.models.lightfm_model import (
    LightFMModel,
    cluster_onehots,
    item_feature_matrix,
    nearest_clusters,
    user_feature_matrix,
)


def test_item_features_hold_metadata_and_one_cluster_per_granularity(small_sim):
    features, centres = item_feature_matrix(small_sim, (4, 16), seed=0)
    features = features.toarray()
    assert features.shape[0] == small_sim.n_images
    assert centres.shape == (20, small_sim.image_features.shape[1])
    np.testing.assert_allclose(features.sum(1), 1.0, rtol=1e-5)
    clusters, _ = cluster_onehots(small_sim.image_features, (4, 16), seed=0)
    assert clusters.shape == (small_sim.n_images, 20)
    np.testing.assert_array_equal(clusters[:, :4].sum(1), 1)
    np.testing.assert_array_equal(clusters[:, 4:].sum(1), 1)
    # the nearest kept centre is the cluster k-means gave each image: new images are assigned alike
    np.testing.assert_array_equal(nearest_clusters(small_sim.image_features, centres, (4, 16)), clusters)
    # images never rated in train still have cluster features
    unseen = np.setdiff1d(small_sim.ratings["test_seen"].image_idx, small_sim.ratings["train"].image_idx)
    assert len(unseen) and (features[unseen][:, -20:] > 0).sum(1).min() == 2


def test_user_features_are_identity_plus_demographics(small_sim):
    users = user_feature_matrix(small_sim, small_sim.ratings["train"].user_idx).toarray()
    assert users.shape[0] == small_sim.n_users and users.shape[1] > small_sim.n_users
    np.testing.assert_allclose(users.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("loss", ["warp", "bpr", "logistic"])
def test_each_loss_fits_and_predicts_unseen_images(loss, small_sim):
    model = LightFMModel(loss=loss, epochs=3, factors=8, cluster_sizes=(8,), seed=0).fit(small_sim)
    r = small_sim.ratings["test_seen"]
    pred = model.predict(r.user_idx[:50], r.image_idx[:50])
    assert np.isfinite(pred).all() and np.ptp(pred) > 0


def test_logistic_interactions_mark_non_likes_negative(small_sim):
    matrix = LightFMModel(loss="logistic").interactions(small_sim, small_sim.ratings["train"])
    assert set(np.unique(matrix.data)) == {-1.0, 1.0}
    assert matrix.nnz == len(small_sim.ratings["train"])


@pytest.mark.parametrize(
    "params", [{"loss": "hinge"}, {"factors": 0}, {"cluster_sizes": (1,)}, {"epochs": 0}]
)
def test_bad_hyperparameters_raise_value_error(params):
    with pytest.raises(ValueError):
        LightFMModel(**params)
