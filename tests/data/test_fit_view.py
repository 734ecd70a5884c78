"""The fit view: what a model may see while it fits, and nothing more."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.dataset import FitView
from recsys.errors import UserError


def test_a_fit_view_holds_the_fit_and_validation_splits_and_no_test_data(small_sim):
    view = small_sim.fit_view("train", "val_seen")
    assert isinstance(view, FitView)
    assert set(view.ratings) == {"train", "val_seen"}
    assert view.fit_split == "train" and view.validation_split == "val_seen"
    assert view.ground_truth is None and view.expected_scores() is None and view.root is None
    assert view.ratings["train"] is small_sim.ratings["train"]
    # side information is all there, and the encodings are built once for both
    assert view.n_users == small_sim.n_users and view.n_images == small_sim.n_images
    assert view.metadata() is small_sim.metadata()
    np.testing.assert_array_equal(view.image_features, small_sim.image_features)


def test_a_refit_view_folds_validation_into_the_fit(small_sim):
    view = small_sim.fit_view("train+val_seen", "val_seen")
    assert set(view.ratings) == {"train", "val_seen"} and view.validation_split is None
    assert len(view.fit_ratings("train+val_seen")) == len(small_sim.ratings["train"]) + len(
        small_sim.ratings["val_seen"]
    )


def test_only_the_oracle_view_holds_the_ground_truth_and_still_no_test_score(small_sim):
    view = small_sim.fit_view("train", "val_seen", ground_truth=True)
    truth = view.expected_scores()
    assert set(view.ratings) == {"train", "val_seen"}
    assert len(truth) == sum(len(small_sim.ratings[s]) for s in small_sim.ground_truth)
    start = sum(len(small_sim.ratings[s]) for s in list(small_sim.ground_truth)[:3])
    split = list(small_sim.ground_truth)[3]
    r = small_sim.ratings[split]
    np.testing.assert_array_equal(truth.user_idx[start : start + len(r)], r.user_idx)
    np.testing.assert_array_equal(truth.score[start : start + len(r)], small_sim.ground_truth[split])


def test_a_view_of_a_missing_split_is_a_clear_error(small_sim):
    with pytest.raises(UserError, match="no split 'val_sen'"):
        small_sim.fit_view("train+val_sen")
