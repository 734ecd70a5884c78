"""Biased matrix factorisation for explicit scores, fitted by alternating least squares in numpy.

``score = mu + b_u + b_i + p_u . q_i``. Item parameters ``[b_i, q_i]`` are shrunk toward a ridge map from the
image design (features + metadata one-hots), refitted each epoch, so images absent from the fit (PAMELA's
``*_seen`` splits) get ``[b_i, q_i]`` from their features. Early stopping on ``val_seen`` RMSE when present.
New users: fold-in of ``[p, b_u]`` from their references, toward a demographic prior (k = 0: the prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from recsys.data.dataset import Dataset, References
from recsys.models.base import Model, check_positive
from recsys.models.fold import (
    FoldInTaste,
    ImageMap,
    build_fold_in,
    check_scorable,
    groups,
    optional_image_design,
)


def als_solve(x: np.ndarray, y: np.ndarray, penalty: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """argmin_v |y - x v|^2 + sum(penalty * (v - prior)^2): the ALS subproblem of one user or item."""
    gram = x.T @ x + np.diag(penalty)
    return np.linalg.solve(gram, x.T @ y + penalty * prior)


class MatrixFactorization(FoldInTaste, Model):
    """Biased MF by ALS with a feature prior on items (see the module docstring).

    Args:
        factors: latent dimensions.
        reg: L2 penalty on user and item factors.
        bias_reg: L2 penalty on user and item biases.
        feature_alpha: ridge penalty of the image-design -> [bias, factors] map.
        epochs: maximum ALS epochs.
        patience: epochs without val_seen improvement before stopping (when val_seen exists).
        demo_alpha: ridge penalty of the demographics -> user prior map.
        seed: seed of the factor initialisation.
    """

    name = "mf"

    def __init__(self, *, factors: int = 16, reg: float = 5.0, bias_reg: float = 5.0, feature_alpha: float = 10.0,
                 epochs: int = 20, patience: int = 3, demo_alpha: float = 10.0, seed: int = 0) -> None:  # fmt: skip
        if not isinstance(factors, int | np.integer) or factors < 1:
            raise ValueError(f"factors must be a positive integer, got {factors!r}")
        if not isinstance(epochs, int | np.integer) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if not isinstance(patience, int | np.integer) or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        for name, value in (
            ("reg", reg),
            ("bias_reg", bias_reg),
            ("feature_alpha", feature_alpha),
            ("demo_alpha", demo_alpha),
        ):
            check_positive(name, value)
        self.factors = factors
        self.reg = reg
        self.bias_reg = bias_reg
        self.feature_alpha = feature_alpha
        self.epochs = epochs
        self.patience = patience
        self.demo_alpha = demo_alpha
        self.seed = seed

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = dataset.fit_ratings(split)
        rng = np.random.default_rng(self.seed)
        k = self.factors
        design = optional_image_design(dataset)
        mu = float(ratings.score.mean())
        y = ratings.score.astype(np.float64) - mu
        users = np.zeros((dataset.n_users, k + 1))  # [p_u, b_u]
        items = np.zeros((dataset.n_images, k + 1))  # [q_i, b_i]
        items[:, :k] = rng.normal(0.0, 0.1, (dataset.n_images, k))
        user_groups, item_groups = groups(ratings.user_idx), groups(ratings.image_idx)
        fitted = np.zeros(dataset.n_images, dtype=bool)
        fitted[ratings.image_idx] = True
        item_prior = np.zeros_like(items)
        penalty = np.r_[np.full(k, self.reg), self.bias_reg]
        image_map = ImageMap(design, self.feature_alpha)
        val = dataset.ratings.get("val_seen") if "val_seen" not in split.split("+") else None
        known_users = np.zeros(dataset.n_users, dtype=bool)
        known_users[ratings.user_idx] = True
        if val is not None and not known_users[val.user_idx].all():
            val = None
        if val is not None and design is None and not fitted[val.image_idx].all():
            val = None
        best, best_rmse, since_best = None, np.inf, 0
        self.history_ = []
        for _ in range(self.epochs):
            # users: x = [q_i, 1], target r - mu - b_i
            for user, rows in user_groups:
                img = ratings.image_idx[rows]
                x = np.hstack([items[img, :k], np.ones((len(rows), 1))])
                users[user] = als_solve(x, y[rows] - items[img, k], penalty, np.zeros(k + 1))
            # items: x = [p_u, 1], target r - mu - b_u, shrunk toward the feature map's prediction
            for image, rows in item_groups:
                usr = ratings.user_idx[rows]
                x = np.hstack([users[usr, :k], np.ones((len(rows), 1))])
                solved = als_solve(x, y[rows] - users[usr, k], penalty, item_prior[image])
                items[image] = np.r_[solved[:k], solved[k]]
            if design is not None:
                train_images = np.flatnonzero(fitted)
                image_map.fit(train_images, items[train_images])
                item_prior = image_map.predict()
            completed = np.where(fitted[:, None], items, item_prior)
            if val is not None:
                pred = mu + self._raw(users, completed, val.user_idx, val.image_idx)
                rmse = float(np.sqrt(np.mean((pred - val.score) ** 2)))
                self.history_.append(rmse)
                if rmse < best_rmse - 1e-5:
                    best, best_rmse, since_best = (users.copy(), completed.copy()), rmse, 0
                else:
                    since_best += 1
                    if since_best >= self.patience:
                        break
            else:
                best = (users.copy(), completed.copy())
        users, items = best
        self.mu_ = mu
        self.item_factors_ = items[:, :k]
        self.item_bias_ = items[:, k]
        self.user_factors_ = users[:, :k]
        self.user_bias_ = users[:, k]
        self.scorable_ = np.ones(dataset.n_images, dtype=bool) if design is not None else fitted
        self.known_ = known_users
        self.fold_, _ = build_fold_in(
            dataset, ratings, self.item_factors_, self.item_bias_, self.user_factors_, mu, 1.0,
            user_offset_shrinkage=0.0, demo_alpha=self.demo_alpha, user_offset=self.user_bias_,
        )  # fmt: skip
        self.fitted_ = True
        return self

    @staticmethod
    def _raw(users: np.ndarray, items: np.ndarray, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        u, i = users[user_idx], items[image_idx]
        return np.einsum("ij,ij->i", u[:, :-1], i[:, :-1]) + u[:, -1] + i[:, -1]

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        self._check_known(user_idx, self.known_)
        check_scorable(self.name, self.scorable_, image_idx)
        dot = np.einsum("ij,ij->i", self.user_factors_[user_idx], self.item_factors_[image_idx])
        return self.mu_ + self.user_bias_[user_idx] + self.item_bias_[image_idx] + dot

    def fold_in_user(self, references: References) -> np.ndarray:
        """``[p, b_u]`` (factors + 1,) of a new user from its reference ratings (the demographic prior at k = 0)."""
        self._check_fitted()
        images = np.asarray(references.image_idx, np.int64)
        check_scorable(self.name, self.scorable_, images)
        return self.fold_.user(references.user_idx, images, np.asarray(references.score))

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        out = []
        for refs, images in zip(references, image_idx, strict=True):
            images = np.asarray(images, np.int64)
            check_scorable(self.name, self.scorable_, images)
            out.append(self.fold_.score(self.fold_in_user(refs), images))
        return out

    def user_vectors(self) -> np.ndarray:
        self._check_fitted()
        return self.user_factors_.astype(np.float32)
