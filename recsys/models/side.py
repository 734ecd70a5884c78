"""Side information as float arrays for models: image design matrices from features and metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset
from recsys.errors import UserError

#: columns that describe an image but are not categories (free text, file locations)
NON_CATEGORICAL = {"path", "prompt", "image_path", "category"}
PAMELA_HIERARCHY = ("type", "group", "style")
MAX_LEVELS = 200


def metadata_columns(images: pd.DataFrame) -> list[str]:
    """Categorical metadata columns, coarse to fine: PAMELA's type, group, style, else the table's own."""
    if all(c in images.columns for c in PAMELA_HIERARCHY):
        return list(PAMELA_HIERARCHY)
    columns = []
    for column in images.columns:
        if column in NON_CATEGORICAL or pd.api.types.is_numeric_dtype(images[column]):
            continue
        levels = images[column].nunique(dropna=True)
        if 1 < levels <= MAX_LEVELS:
            columns.append((levels, column))
    return [c for _, c in sorted(columns)]


def metadata_onehot(images: pd.DataFrame) -> np.ndarray:
    """One-hot (float32, n_images x levels) of the categorical metadata columns; missing values get none."""
    columns = metadata_columns(images)
    if not columns:
        return np.zeros((len(images), 0), np.float32)
    return pd.get_dummies(images[columns].astype("string"), dummy_na=False).to_numpy(np.float32)


def image_design(dataset: Dataset, *, metadata_weight: float = 0.5) -> np.ndarray:
    """Image features (unit rows) beside metadata one-hots scaled by ``metadata_weight`` (float64).

    Raises a clear error when the dataset has neither features nor categorical metadata.
    """
    parts = []
    if dataset.image_features is not None:
        parts.append(dataset.image_features.astype(np.float64))
    onehot = metadata_onehot(dataset.images)
    if onehot.shape[1]:
        parts.append(metadata_weight * onehot.astype(np.float64))
    if not parts:
        raise UserError(
            f"{dataset.name} has no image features and no categorical metadata; pass --image-features FILE.npz "
            "or --encoder NAME"
        )
    return np.hstack(parts)


def user_design(users: pd.DataFrame, fitted_users: np.ndarray) -> np.ndarray:
    """Demographics of every user (float32, (n_users + 1) x d), encoded by ``features.demographics`` fitted on
    the rows ``fitted_users`` only (the users of the fit) and reapplied to every row, new users included.

    The extra last row is a person with no recorded demographics (every value unknown), so that index -1,
    which ``References`` use for someone absent from the dataset, reads it. Numbers are standardised with a
    missing indicator; categories are one-hot with "other" and "unknown" columns.
    """
    from features.demographics import user_feature_encoder_for

    if users.shape[1] == 0:
        return np.zeros((len(users) + 1, 0), np.float32)
    encoder = user_feature_encoder_for(users).fit(users.iloc[np.unique(fitted_users)].reset_index(drop=True))
    with_unknown = users.reindex(range(len(users) + 1))  # the new last row: every value missing
    return encoder.transform(with_unknown)


def with_intercept(design: np.ndarray) -> np.ndarray:
    """``design`` with a constant column of ones appended (so an empty design still carries a bias)."""
    return np.hstack([design, np.ones((len(design), 1), design.dtype)])
