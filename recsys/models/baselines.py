"""Baselines: the global mean, shrunk metadata means, a global ridge, a per-user ridge, and the oracle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from recsys.data.dataset import Dataset, References
from recsys.errors import UserError
from recsys.models.base import Model, check_positive
from recsys.models.linear import consensus_scores
from recsys.models.side import image_design, metadata_columns


class GlobalMean(Model):
    """The mean training score for every pair: the floor every model must clear."""

    name = "global_mean"
    uses_references = False
    personalised = False

    def __init__(self) -> None:
        pass

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        self.mean_ = float(dataset.fit_ratings(split).score.mean())
        self.fitted_ = True
        return self

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        return np.full(len(user_idx), self.mean_)

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        return [np.full(len(images), self.mean_) for images in image_idx]


class MetadataMean(Model):
    """Hierarchically shrunk mean score per metadata cell (PAMELA: type, then group, then style).

    Each level's cell mean is shrunk toward its parent cell: ``(sum + shrinkage * parent) / (n + shrinkage)``;
    a cell unseen in training takes its parent's value. Not personalised.
    """

    name = "metadata_mean"
    uses_references = False
    personalised = False

    def __init__(self, *, shrinkage: float = 10.0) -> None:
        check_positive("shrinkage", shrinkage, allow_zero=True)
        self.shrinkage = shrinkage

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = dataset.fit_ratings(split)
        self.columns_ = metadata_columns(dataset.images)
        keys = [tuple(row) for row in dataset.images[self.columns_].astype(str).itertuples(index=False)]
        self.image_keys_ = keys
        score = ratings.score.astype(float)
        self.global_ = float(score.mean())
        self.levels_: list[dict] = []
        parent_of = lambda key, depth: self._value(key[:depth])  # noqa: E731
        for depth in range(1, len(self.columns_) + 1):
            sums: dict[tuple, float] = {}
            counts: dict[tuple, int] = {}
            for image, value in zip(ratings.image_idx.tolist(), score.tolist(), strict=True):
                key = keys[image][:depth]
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            level = {
                key: (sums[key] + self.shrinkage * parent_of(key, depth - 1)) / (counts[key] + self.shrinkage)
                for key in sums
            }
            self.levels_.append(level)
        self.image_mean_ = np.array([self._value(k) for k in keys])
        self.fitted_ = True
        return self

    def _value(self, key: tuple) -> float:
        """The deepest fitted estimate for a key prefix."""
        for depth in range(len(key), 0, -1):
            value = self.levels_[depth - 1].get(key[:depth]) if depth <= len(self.levels_) else None
            if value is not None:
                return value
        return self.global_

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        return self.image_mean_[image_idx]

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        return [self.image_mean_[np.asarray(images, np.int64)] for images in image_idx]


class Ridge(Model):
    """One ridge regression of the score on image features and metadata one-hots. Not personalised."""

    name = "ridge"
    uses_references = False
    personalised = False

    def __init__(self, *, alpha: float = 3.0) -> None:
        check_positive("alpha", alpha)
        self.alpha = alpha

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = dataset.fit_ratings(split)
        design = image_design(dataset)
        self.image_score_ = consensus_scores(design, ratings, self.alpha)
        self.fitted_ = True
        return self

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        return self.image_score_[image_idx]

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        return [self.image_score_[np.asarray(images, np.int64)] for images in image_idx]


class UserRidge(Model):
    """Per-user ridge on image features, shrunk toward the global ridge.

    For user u with residuals ``r = y - global(x)``: a bias ``b = sum(r) / (n + bias_shrinkage)``, then weights
    ``w = argmin |r - b - X w|^2 + user_alpha |w|^2``, solved in the dual (``X^T (X X^T + user_alpha I)^-1``)
    since a user rates fewer images than there are feature dimensions. A new user gets the same fit on its
    k references; at k = 0 it is the global ridge.
    """

    name = "user_ridge"

    def __init__(self, *, alpha: float = 3.0, user_alpha: float = 1.0, bias_shrinkage: float = 3.0) -> None:
        check_positive("alpha", alpha)
        check_positive("user_alpha", user_alpha)
        check_positive("bias_shrinkage", bias_shrinkage, allow_zero=True)
        self.alpha = alpha
        self.user_alpha = user_alpha
        self.bias_shrinkage = bias_shrinkage

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = dataset.fit_ratings(split)
        self.design_ = image_design(dataset)
        self.global_score_ = consensus_scores(self.design_, ratings, self.alpha)
        self.bias_ = np.zeros(dataset.n_users)
        self.weights_ = np.zeros((dataset.n_users, self.design_.shape[1]))
        self.known_ = np.zeros(dataset.n_users, dtype=bool)
        order = np.argsort(ratings.user_idx, kind="stable")
        users, starts = np.unique(ratings.user_idx[order], return_index=True)
        for user, chunk in zip(users, np.split(order, starts[1:]), strict=True):
            self.bias_[user], self.weights_[user] = self._fit_user(
                ratings.image_idx[chunk], ratings.score[chunk]
            )
            self.known_[user] = True
        self.fitted_ = True
        return self

    def _fit_user(self, images: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
        if len(images) == 0:
            return 0.0, np.zeros(self.design_.shape[1])
        residual = scores.astype(float) - self.global_score_[images]
        bias = residual.sum() / (len(images) + self.bias_shrinkage)
        x = self.design_[images]
        dual = np.linalg.solve(x @ x.T + self.user_alpha * np.eye(len(images)), residual - bias)
        return float(bias), x.T @ dual

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        self._check_known(user_idx, self.known_)
        personal = np.einsum("ij,ij->i", self.design_[image_idx], self.weights_[user_idx])
        return self.global_score_[image_idx] + self.bias_[user_idx] + personal

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        out = []
        for refs, images in zip(references, image_idx, strict=True):
            bias, weights = self._fit_user(np.asarray(refs.image_idx, np.int64), np.asarray(refs.score))
            images = np.asarray(images, np.int64)
            out.append(self.global_score_[images] + bias + self.design_[images] @ weights)
        return out

    def user_vectors(self) -> np.ndarray:
        self._check_fitted()
        return self.weights_.astype(np.float32)

    def fold_in(self, references: Sequence[References]) -> np.ndarray:
        self._check_fitted()
        return np.array(
            [self._fit_user(np.asarray(r.image_idx, np.int64), np.asarray(r.score))[1] for r in references],
            dtype=np.float32,
        ).reshape(len(references), self.design_.shape[1])


class Oracle(Model):
    """The simulator's noise-free expected score of each rating: the ceiling (simulated data only)."""

    name = "oracle"
    uses_references = False

    def __init__(self) -> None:
        pass

    @staticmethod
    def available(dataset: Dataset) -> bool:
        return dataset.ground_truth is not None

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        if dataset.ground_truth is None:
            raise UserError("oracle needs the ground truth of simulated data; this dataset has none")
        self.truth_ = {}
        for name, truth in dataset.ground_truth.items():
            r = dataset.ratings[name]
            self.truth_.update(
                zip(zip(r.user_idx.tolist(), r.image_idx.tolist(), strict=True), truth.tolist(), strict=True)
            )
        self.fitted_ = True
        return self

    def _lookup(self, users, images) -> np.ndarray:
        try:
            return np.array([self.truth_[(u, i)] for u, i in zip(users, images, strict=True)], dtype=float)
        except KeyError as err:
            raise UserError(
                f"oracle: no ground truth for (user, image) {err.args[0]}; only rated pairs have one"
            ) from None

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        return self._lookup(user_idx.tolist(), image_idx.tolist())

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        return [
            self._lookup([refs.user_idx] * len(images), np.asarray(images).tolist())
            for refs, images in zip(references, image_idx, strict=True)
        ]
