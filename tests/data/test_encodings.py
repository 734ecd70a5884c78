"""Side information encoded once per dataset: the user design and the metadata encodings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.encodings import encode_metadata, user_design, with_intercept


def test_user_design_is_fitted_on_the_fitted_users_only():
    users = pd.DataFrame(
        {
            "age": [20.0, 40.0, 99.0],
            "gender": ["male", "female", "female"],
            "nationality": ["Italy", "Italy", "Chile"],
        }
    )
    design = user_design(users, np.array([0, 1, 1]))
    assert design.dtype == np.float32 and design.shape[0] == 4 and np.isfinite(design).all()
    assert design[-1, 0] == 0.0  # the last row, a person with unknown demographics: age at the mean
    # age standardised with the fitted users' mean 30 and std 10: the new user's 99 is (99 - 30) / 10
    age_column = np.flatnonzero(np.isclose(design[:2, :], [[-1.0], [1.0]]).all(axis=0))
    assert len(age_column) >= 1
    assert design[2, age_column[0]] == np.float32(6.9)
    # fitted on everyone instead, the standardisation would change: the new user does not shape the encoding
    assert user_design(users, np.arange(3))[2, 0] < 2.0


def test_empty_user_table_gives_an_empty_design_and_intercept_keeps_a_bias():
    design = user_design(pd.DataFrame(index=range(4)), np.arange(2))
    assert design.shape == (5, 0)
    np.testing.assert_array_equal(with_intercept(design), np.ones((5, 1), np.float32))


def test_metadata_onehots_codes_and_names_agree():
    images = pd.DataFrame(
        {"type": ["Art", "Photo", "Art"], "group": ["sea", "sea", "city"], "style": ["Baroque", None, "Pop"]}
    )
    meta = encode_metadata(images)
    assert meta.columns == ["type", "group", "style"]
    assert meta.names == ["type=Art", "type=Photo", "group=city", "group=sea", "style=Baroque", "style=Pop"]
    np.testing.assert_array_equal(
        meta.onehot, [[1, 0, 0, 1, 1, 0], [0, 1, 0, 1, 0, 0], [1, 0, 1, 0, 0, 1]]
    )  # a missing style has no one-hot and code 0
    np.testing.assert_array_equal(meta.codes, [[1, 2, 1], [2, 2, 0], [1, 1, 2]])
    assert meta.sizes == [3, 3, 3]


def test_dataset_encodings_are_built_once_and_read_only(small_sim):
    design = small_sim.image_design()
    assert design is small_sim.image_design() and not design.flags.writeable
    users = small_sim.train_users()
    assert small_sim.user_design(users) is small_sim.user_design(users[::-1])
    assert small_sim.user_design(users).shape[0] == small_sim.n_users + 1
