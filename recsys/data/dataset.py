"""The one object that owns users, images, ratings, side information and splits.

Models and the evaluator see contiguous integer indices only: ``user_idx`` indexes ``Dataset.user_ids`` and
``Dataset.users``; ``image_idx`` indexes ``Dataset.image_ids`` and ``Dataset.images``. Loaders build a
``Dataset``; nothing outside ``recsys.data`` knows a file layout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import encodings
from recsys.errors import UnknownId, UserError

#: Split names, in the order they are reported.
SPLITS = ("train", "val_seen", "val_unseen", "test_seen", "test_unseen")


def is_unseen_split(split: str) -> bool:
    """Unseen splits hold users absent from train; they are evaluated with k reference ratings."""
    return split.endswith("_unseen")


def group_by(index: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(value, positions) for each distinct value of an integer array, values ascending, positions in order."""
    index = np.asarray(index)
    order = np.argsort(index, kind="stable")
    values, starts = np.unique(index[order], return_index=True)
    return list(zip(values.tolist(), np.split(order, starts[1:]), strict=True))


@dataclass(frozen=True)
class Ratings:
    """Aligned arrays of one split: ``user_idx[i]`` gave ``score[i]`` to ``image_idx[i]``."""

    user_idx: np.ndarray  # int64, (n,)
    image_idx: np.ndarray  # int64, (n,)
    score: np.ndarray  # float32, (n,)

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        if len(self.image_idx) != n or len(self.score) != n:
            raise ValueError("Ratings arrays must have the same length")

    def __len__(self) -> int:
        return len(self.user_idx)

    def by_user(self) -> list[tuple[int, np.ndarray]]:
        """(user_idx, positions of that user's ratings) per user, users ascending."""
        return group_by(self.user_idx)

    def subset(self, mask: np.ndarray) -> Ratings:
        """The ratings selected by a boolean mask or an index array."""
        return Ratings(self.user_idx[mask], self.image_idx[mask], self.score[mask])

    @staticmethod
    def concat(parts: list[Ratings]) -> Ratings:
        """All ratings of ``parts``, in order."""
        if not parts:
            return Ratings(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
        return Ratings(
            np.concatenate([p.user_idx for p in parts]),
            np.concatenate([p.image_idx for p in parts]),
            np.concatenate([p.score for p in parts]),
        )


@dataclass(frozen=True)
class References:
    """A new user's reference ratings: what a model may learn from before scoring the user's queries."""

    user_idx: int  # the user's index in the dataset (demographics live there), or -1 for someone not in it
    image_idx: np.ndarray  # int64, (k,)
    score: np.ndarray  # float32, (k,)

    def __len__(self) -> int:
        return len(self.image_idx)


@dataclass
class Dataset:
    """Users, images, ratings per split, and side information.

    Attributes:
        name: human-readable name; simulated datasets say so in it.
        simulated: True when the data come from the simulator (not real people).
        pamela_semantics: True for PAMELA-layout data, whose ``*_seen`` splits hold images absent from train.
        user_ids: external user ids (str), index = user_idx.
        image_ids: external image ids (int64 for PAMELA, else str), index = image_idx.
        users: one row per user: demographic columns (any names; PAMELA: age, age_binned, gender, nationality).
        images: one row per image: metadata columns (PAMELA: type, group, style, prompt, path).
        ratings: split name -> Ratings. Always has ``train``.
        score_range: (low, high) of valid scores.
        image_features: float32 (n_images, d) or None; rows aligned to image_idx.
        feature_source: what made ``image_features`` (file path or encoder name).
        ground_truth: split name -> float32 noise-free expected score per rating (simulated data only).
        root: the directory the data were loaded from, if any.
    """

    name: str
    simulated: bool
    pamela_semantics: bool
    user_ids: np.ndarray
    image_ids: np.ndarray
    users: pd.DataFrame
    images: pd.DataFrame
    ratings: dict[str, Ratings]
    score_range: tuple[float, float]
    image_features: np.ndarray | None = None
    feature_source: str | None = None
    ground_truth: dict[str, np.ndarray] | None = None
    root: Path | None = None
    _user_index: dict = field(default_factory=dict, repr=False)
    _image_index: dict = field(default_factory=dict, repr=False)
    #: encodings built once per dataset (a copy made with ``replace`` starts empty)
    _encodings: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._user_index = {uid: i for i, uid in enumerate(self.user_ids.tolist())}
        self._image_index = {iid: i for i, iid in enumerate(self.image_ids.tolist())}
        if "train" not in self.ratings:
            raise UserError(f"{self.name}: no training ratings; a dataset needs a 'train' split")

    # ----------------------------------------------------------------- sizes and lookups
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def splits(self) -> list[str]:
        """The splits present, in reporting order."""
        return [s for s in SPLITS if s in self.ratings]

    def user_index(self, user_id) -> int:
        """The index of an external user id; a clear error for an unknown one."""
        key = _coerce_id(user_id, self.user_ids)
        if key not in self._user_index:
            raise UnknownId(f"unknown user id {user_id!r} in {self.name}")
        return self._user_index[key]

    def image_index(self, image_id) -> int:
        """The index of an external image id; a clear error for an unknown one."""
        key = _coerce_id(image_id, self.image_ids)
        if key not in self._image_index:
            raise UnknownId(f"unknown image id {image_id!r} in {self.name}")
        return self._image_index[key]

    def train_users(self) -> np.ndarray:
        """Sorted indices of the users with at least one training rating."""
        return np.unique(self.ratings["train"].user_idx)

    def train_images(self) -> np.ndarray:
        """Sorted indices of the images with at least one training rating."""
        return np.unique(self.ratings["train"].image_idx)

    def fit_ratings(self, split: str = "train") -> Ratings:
        """The ratings a model fits on: ``train``, or several splits joined with '+' (e.g. ``train+val_seen``)."""
        parts = split.split("+")
        for part in parts:
            if part not in self.ratings:
                raise UserError(f"{self.name} has no split {part!r}; it has {', '.join(self.splits)}")
        return Ratings.concat([self.ratings[p] for p in parts])

    # ----------------------------------------------------------------- encodings (built once)
    def _cached(self, key, build):
        if key not in self._encodings:
            value = build()
            if isinstance(value, np.ndarray):
                value.setflags(write=False)  # shared by every model: nobody may change it in place
            self._encodings[key] = value
        return self._encodings[key]

    def metadata(self) -> encodings.Metadata:
        """The categorical image metadata as one-hots and codes (see ``recsys.data.encodings.Metadata``)."""
        return self._cached("metadata", lambda: encodings.encode_metadata(self.images))

    def image_design(self, metadata_weight: float = 0.5, *, required: bool = True) -> np.ndarray | None:
        """Image features (rows as given) beside metadata one-hots scaled by ``metadata_weight`` (float64,
        n_images x d). Without features and metadata: a clear error, or None when not ``required``."""
        design = self._cached(
            ("image_design", metadata_weight),
            lambda: encodings.image_design(self.image_features, self.metadata(), metadata_weight),
        )
        if design is None and required:
            raise UserError(
                f"{self.name} has no image features and no categorical metadata; pass --image-features FILE.npz "
                "or --encoder NAME"
            )
        return design

    def image_inputs(self) -> np.ndarray:
        """Image features (float32, n_images x d); the image design stands in when there are no features."""
        if self.image_features is not None:
            return self.image_features.astype(np.float32)
        return self.image_design().astype(np.float32)

    def user_design(self, fitted_users: np.ndarray, *, categorical_only: bool = False) -> np.ndarray:
        """Demographics of every user, encoded on ``fitted_users`` only (float32, (n_users + 1) x d; the last
        row is a person with no recorded demographics, read by user_idx -1). See ``encodings.user_design``."""
        fitted = np.unique(np.asarray(fitted_users, np.int64))
        key = ("user_design", categorical_only, hashlib.sha1(fitted.tobytes()).hexdigest())
        users = self.users
        if categorical_only:
            users = users[[c for c in users.columns if not pd.api.types.is_numeric_dtype(users[c])]]
        return self._cached(key, lambda: encodings.user_design(users, fitted))

    # ----------------------------------------------------------------- derived datasets
    def with_image_features(self, features: np.ndarray, source: str) -> Dataset:
        """A copy whose ``image_features`` are ``features`` (float32, aligned to image_idx)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != self.n_images:
            raise UserError(
                f"image features from {source} have shape {features.shape}; expected ({self.n_images}, d)"
            )
        if not np.isfinite(features).all():
            raise UserError(f"image features from {source} contain NaN or infinite values")
        return replace(self, image_features=features, feature_source=source)

    def drop_images(self, image_idx: np.ndarray) -> tuple[Dataset, int]:
        """A copy without the ratings of the given images (e.g. undecodable files); returns it and the count.

        Images keep their indices (features stay aligned); only their ratings go.
        """
        drop = np.zeros(self.n_images, dtype=bool)
        drop[np.asarray(image_idx, dtype=np.int64)] = True
        ratings, truth, dropped = {}, {}, 0
        for split, r in self.ratings.items():
            keep = ~drop[r.image_idx]
            dropped += int((~keep).sum())
            ratings[split] = r.subset(keep)
            if self.ground_truth is not None and split in self.ground_truth:
                truth[split] = self.ground_truth[split][keep]
        return replace(self, ratings=ratings, ground_truth=truth if self.ground_truth else None), dropped

    # ----------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """A short hash of the ratings, ids and features: two runs on equal fingerprints saw equal data."""
        digest = hashlib.sha256()
        digest.update(self.name.encode())
        for split in self.splits:
            r = self.ratings[split]
            digest.update(split.encode())
            digest.update(np.ascontiguousarray(r.user_idx).tobytes())
            digest.update(np.ascontiguousarray(r.image_idx).tobytes())
            digest.update(np.ascontiguousarray(r.score).tobytes())
        digest.update("\x00".join(map(str, self.user_ids.tolist())).encode())
        digest.update("\x00".join(map(str, self.image_ids.tolist())).encode())
        if self.image_features is not None:
            digest.update(self.image_features.tobytes())
        return digest.hexdigest()[:16]

    def summary(self) -> dict:
        """Counts per split, users, images and the score distribution (for ``recsys data validate``)."""
        train = self.ratings["train"]
        out = {
            "name": self.name,
            "simulated": self.simulated,
            "users": self.n_users,
            "images": self.n_images,
            "train_users": int(len(self.train_users())),
            "train_images": int(len(self.train_images())),
            "score_range": list(self.score_range),
            "splits": {},
            "image_features": None
            if self.image_features is None
            else {"dim": int(self.image_features.shape[1]), "source": self.feature_source},
        }
        for split in self.splits:
            r = self.ratings[split]
            q = np.quantile(r.score, [0.0, 0.25, 0.5, 0.75, 1.0]) if len(r) else [np.nan] * 5
            out["splits"][split] = {
                "ratings": int(len(r)),
                "users": int(len(np.unique(r.user_idx))),
                "images": int(len(np.unique(r.image_idx))),
                "score_mean": float(r.score.mean()) if len(r) else None,
                "score_std": float(r.score.std()) if len(r) else None,
                "score_quantiles": [round(float(v), 3) for v in q],
            }
        out["train_ratings_per_user"] = float(len(train) / max(1, len(self.train_users())))
        return out


def _coerce_id(value, ids: np.ndarray):
    """Ids typed on a command line arrive as strings; match the dataset's id type."""
    if ids.dtype.kind in "iu" and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value
