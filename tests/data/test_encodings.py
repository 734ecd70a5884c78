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


def test_new_images_are_encoded_with_the_datasets_levels(small_sim):
    """A new image's inputs are what the dataset gives the same image when it holds it: its design row, one-hots
    and codes; a missing value is encoded as the dataset encodes one (code 0, no one-hot)."""
    images = np.array([3, 17, 250])
    columns = ["type", "group", "style"]
    new = small_sim.new_image_inputs(small_sim.image_features[images], small_sim.images.iloc[images][columns])
    held = small_sim.image_inputs_at(images)
    assert len(new) == 3 and new.metadata.names == small_sim.metadata().names
    np.testing.assert_array_equal(new.design(), small_sim.image_design()[images])
    np.testing.assert_array_equal(new.design(0.2), small_sim.image_design(0.2)[images])
    np.testing.assert_array_equal(new.inputs(), small_sim.image_inputs()[images])
    np.testing.assert_array_equal(new.metadata.codes, held.metadata.codes)
    np.testing.assert_array_equal(held.design(), small_sim.image_design()[images])
    # by hand: image 3's style is level k of the sorted styles: code k + 1 and one one-hot in the style block
    style = small_sim.images["style"].iloc[3]
    levels = sorted(small_sim.images["style"].dropna().astype(str).unique())
    assert new.metadata.codes[0, 2] == levels.index(style) + 1
    assert new.metadata.onehot[0, new.metadata.names.index(f"style={style}")] == 1.0
    assert new.metadata.onehot[0].sum() == 3

    # without metadata: every value missing, as the dataset encodes an image whose metadata is NaN
    blank = small_sim.images.copy()
    blank.loc[blank.index[images], columns] = None
    expected = encode_metadata(blank)
    assert expected.names == small_sim.metadata().names  # other images keep every level
    bare = small_sim.new_image_inputs(small_sim.image_features[images])
    np.testing.assert_array_equal(bare.metadata.codes, expected.codes[images])
    np.testing.assert_array_equal(bare.metadata.onehot, expected.onehot[images])
    assert not bare.metadata.codes.any() and not bare.metadata.onehot.any()
    kind = small_sim.images["type"].iloc[3]
    partial = small_sim.new_image_inputs(small_sim.image_features[:2], pd.DataFrame({"type": [kind, None]}))
    np.testing.assert_array_equal(partial.metadata.codes, [[new.metadata.codes[0, 0], 0, 0], [0, 0, 0]])


def test_new_images_that_the_data_cannot_encode_are_one_line_errors(small_sim):
    import pytest

    from recsys.errors import UserError

    features = small_sim.image_features[:2]
    cases = [
        (lambda: small_sim.new_image_inputs(features[:, :5]), "shape"),
        (lambda: small_sim.new_image_inputs(features * np.nan), "NaN"),
        (lambda: small_sim.new_image_inputs(None, pd.DataFrame({"type": ["a", "b"]})), "need features"),
        (
            lambda: small_sim.new_image_inputs(features, pd.DataFrame({"style": ["no-such-style", None]})),
            "not a level",
        ),
        (lambda: small_sim.new_image_inputs(features, pd.DataFrame({"colour": ["red", "blue"]})), "colour"),
        (lambda: small_sim.new_image_inputs(features, pd.DataFrame({"type": [None]})), "1 rows"),
    ]
    for make, words in cases:
        with pytest.raises(UserError, match=words) as err:
            make()
        assert "\n" not in str(err.value)
