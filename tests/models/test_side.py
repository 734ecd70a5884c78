"""Side information shared by the models."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.models.side import user_design, with_intercept


def test_user_design_is_fitted_on_the_fitted_users_only():
    users = pd.DataFrame({"age": [20.0, 40.0, 99.0], "gender": ["male", "female", "female"],
                          "nationality": ["Italy", "Italy", "Chile"]})  # fmt: skip
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
