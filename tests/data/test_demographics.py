"""Demographic and metadata encoders on hand-made tables, with standardisation computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.data.demographics import (
    PamelaUserEncoder,
    TabularEncoder,
    age_bin,
    user_feature_encoder_for,
)


def _column(encoder, matrix: np.ndarray, name: str) -> np.ndarray:
    return matrix[:, encoder.feature_names.index(name)]


@pytest.fixture
def train_users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4", "u5"],
            "age": [20, 30, 40, None, 30],
            "gender": ["male", "female", "male", "prefer not to say", "female"],
            "nationality": ["Belgium", "Belgium", "Germany", "Belgium", None],
        }
    )


def test_generic_numeric_is_standardised_with_train_statistics(train_users):
    encoder = TabularEncoder(min_count=2).fit(train_users)
    assert "user_id" not in " ".join(encoder.feature_names)
    # by hand: train ages 20, 30, 40, 30 -> mean 30, population std sqrt((100 + 0 + 100 + 0) / 4)
    std = math.sqrt(50.0)
    new = pd.DataFrame(
        {"age": [45, None], "gender": ["female", "male"], "nationality": ["Belgium", "Belgium"]}
    )
    features = encoder.transform(new)
    np.testing.assert_allclose(_column(encoder, features, "age"), [15 / std, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(_column(encoder, features, "age:missing"), [0.0, 1.0])
    train_features = encoder.transform(train_users)
    np.testing.assert_allclose(
        _column(encoder, train_features, "age"), [-10 / std, 0, 10 / std, 0, 0], rtol=1e-6
    )
    assert features.dtype == np.float32 and not np.isnan(features).any()


def test_generic_categories_keep_frequent_values_and_bucket_the_rest(train_users):
    encoder = TabularEncoder(min_count=2).fit(train_users)
    assert [n for n in encoder.feature_names if n.startswith("gender")] == [
        "gender=female",
        "gender=male",
        "gender=other",
        "gender=unknown",
    ]
    assert [n for n in encoder.feature_names if n.startswith("nationality")] == [
        "nationality=Belgium",
        "nationality=other",
        "nationality=unknown",
    ]
    new = pd.DataFrame({"age": [25, 25, 25], "gender": ["male", "nonbinary", None],
                        "nationality": ["Germany", "Japan", "unknown"]})  # fmt: skip
    features = encoder.transform(new)
    gender = features[
        :, [encoder.feature_names.index(f"gender={v}") for v in ("female", "male", "other", "unknown")]
    ]
    np.testing.assert_array_equal(gender, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    # Germany was seen once (< min_count 2), Japan never: both are "other"; the token "unknown" is missing
    nationality = features[:, -3:]
    np.testing.assert_array_equal(nationality, [[0, 1, 0], [0, 1, 0], [0, 0, 1]])


def test_fitted_on_train_only(train_users):
    encoder = TabularEncoder(min_count=1).fit(train_users)
    names = list(encoder.feature_names)
    new_users = pd.DataFrame({"age": [90, 91], "gender": ["x", "x"], "nationality": ["Peru", "Peru"]})
    before = encoder.transform(train_users)
    encoder.transform(new_users)
    assert encoder.feature_names == names  # transforming new users learns nothing
    np.testing.assert_array_equal(encoder.transform(train_users), before)
    refit = TabularEncoder(min_count=1).fit(pd.concat([train_users, new_users]))
    assert "gender=x" in refit.feature_names and "gender=x" not in names


def test_max_categories_keeps_the_most_frequent():
    df = pd.DataFrame({"colour": ["red"] * 3 + ["blue"] * 2 + ["green"] * 2 + ["pink"]})
    encoder = TabularEncoder(min_count=1, max_categories=2).fit(df)
    # blue and green tie on count; ties go by name so the columns do not depend on row order
    assert encoder.feature_names == ["colour=red", "colour=blue", "colour=other", "colour=unknown"]


def test_constant_numeric_column_does_not_divide_by_zero():
    encoder = TabularEncoder().fit(pd.DataFrame({"score": [3.0, 3.0]}))
    np.testing.assert_array_equal(encoder.transform(pd.DataFrame({"score": [5.0]})), [[2.0, 0.0]])


def test_bad_values_raise_value_errors(train_users):
    with pytest.raises(ValueError, match="min_count must be an integer >= 1"):
        TabularEncoder(min_count=0).fit(train_users)
    with pytest.raises(ValueError, match="not fitted"):
        TabularEncoder().transform(train_users)
    encoder = TabularEncoder().fit(train_users)
    with pytest.raises(ValueError, match="lacks column\\(s\\) \\['nationality'\\]"):
        encoder.transform(train_users.drop(columns="nationality"))
    with pytest.raises(ValueError, match="column 'age': row 1 holds 'old'"):
        encoder.transform(train_users.astype({"age": object}).assign(age=[20, "old", 30, 40, 50]))
    with pytest.raises(ValueError, match="empty table"):
        TabularEncoder().fit(train_users.iloc[:0])
    with pytest.raises(ValueError, match="both numeric and categorical"):
        TabularEncoder(numeric=["age"], categorical=["age"]).fit(train_users)


def test_explicit_column_kinds(train_users):
    encoder = TabularEncoder(min_count=1, categorical=["age"]).fit(train_users)
    assert "age=30" in encoder.feature_names and "age" not in encoder.feature_names
    # a float-typed 30.0 and the int 30 are the same category
    features = encoder.transform(
        pd.DataFrame({"age": [30.0], "gender": ["male"], "nationality": ["Belgium"]})
    )
    assert _column(encoder, features, "age=30")[0] == 1.0


@pytest.fixture
def pamela_users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [28, 35, 19, None, 60, 41],
            "age_binned": ["twenties", "thirties", "teens", "thirties", "sixties", "forties"],
            "gender": ["male", "female", "female", "prefer not to say", "male", "female"],
            "nationality": ["United States"] * 3 + ["Italy", "United States", "Italy"],
        }
    )


def test_pamela_users_get_decade_bins_and_standardised_age(pamela_users):
    encoder = user_feature_encoder_for(pamela_users, min_count=2)
    assert isinstance(encoder, PamelaUserEncoder)
    features = encoder.fit_transform(pamela_users)
    ages = np.array([28, 35, 19, 60, 41], dtype=float)
    expected = (ages - ages.mean()) / ages.std()
    np.testing.assert_allclose(_column(encoder, features, "age")[[0, 1, 2, 4, 5]], expected, rtol=1e-6)
    assert _column(encoder, features, "age:missing").tolist() == [0, 0, 0, 1, 0, 0]
    # the bin comes from age; the given age_binned fills in only where age is missing (row 3)
    assert _column(encoder, features, "age_bin=thirties").tolist() == [0, 1, 0, 1, 0, 0]
    assert _column(encoder, features, "age_bin=teens").tolist() == [0, 0, 1, 0, 0, 0]
    # every gender value keeps its column even below min_count; rare nationalities do not
    assert "gender=prefer not to say" in encoder.feature_names
    assert "nationality=Italy" in encoder.feature_names and "age_binned" not in " ".join(
        encoder.feature_names
    )

    new = pd.DataFrame({"age": [72, None], "age_binned": [None, None], "gender": ["male", None],
                        "nationality": ["Japan", "Italy"]})  # fmt: skip
    new_features = encoder.transform(new)
    assert _column(encoder, new_features, "age_bin=other").tolist() == [1, 0]  # seventies unseen in train
    assert _column(encoder, new_features, "age_bin=unknown").tolist() == [0, 1]
    assert _column(encoder, new_features, "gender=unknown").tolist() == [0, 1]
    assert _column(encoder, new_features, "nationality=other").tolist() == [1, 0]
    assert not np.isnan(new_features).any()


def test_age_bins_by_decade():
    assert [age_bin(a) for a in (9, 19, 20, 28, 39.9, 60)] == [
        "under ten", "teens", "twenties", "twenties", "thirties", "sixties",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="outside 0-120"):
        age_bin(-1)
    with pytest.raises(ValueError, match="outside 0-120"):
        PamelaUserEncoder().fit(
            pd.DataFrame({"age": [30, 150], "gender": ["m", "f"], "nationality": ["a", "b"]})
        )


def test_generic_tables_get_the_generic_encoder():
    items = pd.DataFrame({"item_id": ["a", "b"], "genre": ["x", "y"], "year": [1990, 2000]})
    assert type(user_feature_encoder_for(pd.DataFrame({"age": [1], "gender": ["f"]}))) is TabularEncoder
    encoder = TabularEncoder(min_count=1).fit(items)
    assert encoder.feature_names == [
        "genre=x",
        "genre=y",
        "genre=other",
        "genre=unknown",
        "year",
        "year:missing",
    ]
