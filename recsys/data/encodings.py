"""Side information as float arrays: the one image design (features + metadata) and the one user design
(demographics). ``Dataset`` builds each once and caches it (``Dataset.image_design``, ``Dataset.user_design``,
``Dataset.metadata``); models read them from there.

``ImageInputs`` is what a model may read of some images, the dataset's or new ones: their features and their
metadata encoded with the dataset's own levels, so that a new image's design row is the row the dataset would
give it if it held the image (``Dataset.image_inputs_at``, ``Dataset.new_image_inputs``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from recsys.data.demographics import user_feature_encoder_for
from recsys.errors import UserError

#: columns that describe an image but are not categories (free text, file locations)
NON_CATEGORICAL = {"path", "prompt", "image_path", "category"}
PAMELA_HIERARCHY = ("type", "group", "style")
#: a text column with more distinct values than this is free text, not a category
MAX_CATEGORY_LEVELS = 200


@dataclass(frozen=True)
class Metadata:
    """Categorical image metadata, encoded once.

    Attributes:
        columns: the categorical columns, coarse to fine (PAMELA: type, group, style).
        onehot: (n_images, levels) float64 one-hots, columns in order, levels sorted; a missing value has none.
        names: ``column=level`` of each one-hot column.
        codes: (n_images, len(columns)) int64 level codes, 0 for missing, 1.. for the sorted levels.
        sizes: levels per column, plus one (the missing code).
    """

    columns: list[str]
    onehot: np.ndarray
    names: list[str]
    codes: np.ndarray
    sizes: list[int]

    def levels(self, column: str) -> list[str]:
        """The sorted levels of one of ``columns`` (code ``j + 1`` is level ``j``)."""
        start = sum(size - 1 for size in self.sizes[: self.columns.index(column)])
        size = self.sizes[self.columns.index(column)] - 1
        return [name[len(column) + 1 :] for name in self.names[start : start + size]]

    def rows(self, image_idx: np.ndarray) -> Metadata:
        """The metadata of some images only (same columns and levels)."""
        return replace(self, onehot=self.onehot[image_idx], codes=self.codes[image_idx])

    def encode(self, frame: pd.DataFrame) -> Metadata:
        """The metadata of other images (rows of ``frame``, named by its index in errors), encoded with these levels:
        a missing value (no column, None, NaN) has code 0 and no one-hot, as in ``encode_metadata``.

        Raises:
            UserError: a value that is not one of the column's levels (a one-hot column the fit never saw).
        """
        onehot = np.zeros((len(frame), self.onehot.shape[1]))
        codes = np.zeros((len(frame), len(self.columns)), np.int64)
        start = 0
        for j, column in enumerate(self.columns):
            levels = self.levels(column)
            if column in frame.columns:
                position = {level: k for k, level in enumerate(levels)}
                values = frame[column].astype("string").tolist()
                for row, (label, value) in enumerate(zip(frame.index, values, strict=True)):
                    if value is pd.NA or (value == "" and "" not in position):
                        continue
                    if value not in position:
                        shown = ", ".join(levels[:5]) + (", ..." if len(levels) > 5 else "")
                        raise UserError(
                            f"new image {label!r}: {column}={value!r} is not a level of the data's {column} "
                            f"({shown}); use one of them or leave it empty"
                        )
                    codes[row, j] = position[value] + 1
                    onehot[row, start + position[value]] = 1.0
            start += len(levels)
        return replace(self, onehot=onehot, codes=codes)


@dataclass(frozen=True)
class ImageInputs:
    """What a model may read of ``len(self)`` images: features and metadata, encoded as the dataset encodes its own.

    Attributes:
        features: float32 (m, d) image features, or None when the dataset has none.
        metadata: these images' metadata with the dataset's columns, levels and sizes (``Metadata.rows`` of the
            dataset's images, ``Metadata.encode`` of new ones).
        prompts: float32 (m, d) embeddings of the prompts the images were made from, or None when not known.
    """

    features: np.ndarray | None
    metadata: Metadata
    prompts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.metadata.codes)

    def design(self, metadata_weight: float = 0.5) -> np.ndarray | None:
        """These images' rows of ``Dataset.image_design(metadata_weight)``; None without features and metadata."""
        return image_design(self.features, self.metadata, metadata_weight)

    def inputs(self) -> np.ndarray:
        """These images' rows of ``Dataset.image_inputs()``: the features, else the image design (float32)."""
        if self.features is not None:
            return self.features.astype(np.float32)
        design = self.design()
        if design is None:
            raise UserError("these images have no features and no categorical metadata")
        return design.astype(np.float32)


def metadata_columns(images: pd.DataFrame) -> list[str]:
    """Categorical metadata columns, coarse to fine: PAMELA's type, group, style, else the table's own."""
    if all(c in images.columns for c in PAMELA_HIERARCHY):
        return list(PAMELA_HIERARCHY)
    columns = []
    for column in images.columns:
        if column in NON_CATEGORICAL or pd.api.types.is_numeric_dtype(images[column]):
            continue
        levels = images[column].nunique(dropna=True)
        if 1 < levels <= MAX_CATEGORY_LEVELS:
            columns.append((levels, column))
    return [c for _, c in sorted(columns)]


def encode_metadata(images: pd.DataFrame) -> Metadata:
    """One-hots and integer codes of the categorical metadata columns."""
    columns = metadata_columns(images)
    blocks, names, codes, sizes = [], [], [], []
    for column in columns:
        category = pd.Categorical(images[column].astype("string"))
        levels = [str(level) for level in category.categories]
        code = category.codes.astype(np.int64)
        onehot = np.zeros((len(images), len(levels)))
        present = code >= 0
        onehot[np.flatnonzero(present), code[present]] = 1.0
        blocks.append(onehot)
        names += [f"{column}={level}" for level in levels]
        codes.append(code + 1)
        sizes.append(len(levels) + 1)
    return Metadata(
        columns=columns,
        onehot=np.hstack(blocks) if blocks else np.zeros((len(images), 0)),
        names=names,
        codes=np.stack(codes, axis=1) if codes else np.zeros((len(images), 0), np.int64),
        sizes=sizes,
    )


def image_design(
    features: np.ndarray | None, metadata: Metadata, metadata_weight: float, dtype=np.float64
) -> np.ndarray | None:
    """Image features beside metadata one-hots scaled by ``metadata_weight`` (float64, or ``dtype``: float32 holds
    the same values when the features are float32 or float16, at half the memory); None without either."""
    parts = []
    if features is not None:
        parts.append(features.astype(dtype))
    if metadata.onehot.shape[1]:
        parts.append((metadata_weight * metadata.onehot).astype(dtype))
    return np.hstack(parts) if parts else None


def user_design(users: pd.DataFrame, fitted_users: np.ndarray) -> np.ndarray:
    """Demographics of every user (float32, (n_users + 1) x d), encoded by ``recsys.data.demographics`` fitted on
    the rows ``fitted_users`` only (the users of the fit) and reapplied to every row, new users included.

    The extra last row is a person with no recorded demographics (every value unknown), so that index -1,
    which ``References`` use for someone absent from the dataset, reads it. Numbers are standardised with a
    missing indicator; categories are one-hot with "other" and "unknown" columns.
    """
    if users.shape[1] == 0:
        return np.zeros((len(users) + 1, 0), np.float32)
    encoder = user_feature_encoder_for(users).fit(users.iloc[np.unique(fitted_users)].reset_index(drop=True))
    with_unknown = users.reindex(range(len(users) + 1))  # the new last row: every value missing
    return encoder.transform(with_unknown)


def with_intercept(design: np.ndarray) -> np.ndarray:
    """``design`` with a constant column of ones appended (so an empty design still carries a bias)."""
    return np.hstack([design, np.ones((len(design), 1), design.dtype)])
