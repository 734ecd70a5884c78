"""Biased matrix factorisation for explicit scores, fitted by alternating least squares in numpy.

``score = mu + b_u + b_i + p_u . q_i``. Item parameters ``[b_i, q_i]`` are shrunk toward a ridge map from the
image design (features + metadata one-hots), refitted each epoch, so images absent from the fit (PAMELA's
``*_seen`` splits) get ``[b_i, q_i]`` from their features. Early stopping on ``val_seen`` RMSE when present.
New users: fold-in of ``[p, b_u]`` from their references, toward a demographic prior (k = 0: the prior).
"""

from __future__ import annotations

import numpy as np

from recsys.data.dataset import Dataset, Ratings, group_by
from recsys.models.factor import FactorModel, ImageMap, build_fold_in
from recsys.models.params import Hyperparameters, at_least_one, hyper, positive


def als_solve(x: np.ndarray, y: np.ndarray, penalty: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """argmin_v |y - x v|^2 + sum(penalty * (v - prior)^2): the ALS subproblem of one user or item."""
    gram = x.T @ x + np.diag(penalty)
    return np.linalg.solve(gram, x.T @ y + penalty * prior)


class MatrixFactorization(FactorModel):
    """Biased MF by ALS with a feature prior on items (see the module docstring)."""

    name = "mf"

    class Params(Hyperparameters):
        factors: int = at_least_one(16, "latent dimensions")
        reg: float = positive(5.0, "L2 penalty on user and item factors")
        bias_reg: float = positive(5.0, "L2 penalty on user and item biases")
        feature_alpha: float = positive(10.0, "ridge penalty of the image-design -> [bias, factors] map")
        epochs: int = at_least_one(20, "maximum ALS epochs")
        patience: int = at_least_one(3, "epochs without val_seen improvement before stopping")
        demo_alpha: float = positive(10.0, "ridge penalty of the demographics -> user prior map")
        seed: int = hyper(0, doc="seed of the factor initialisation")

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        rng = np.random.default_rng(self.seed)
        k = self.factors
        design = dataset.image_design(required=False)
        mu = float(ratings.score.mean())
        y = ratings.score.astype(np.float64) - mu
        users = np.zeros((dataset.n_users, k + 1))  # [p_u, b_u]
        items = np.zeros((dataset.n_images, k + 1))  # [q_i, b_i]
        items[:, :k] = rng.normal(0.0, 0.1, (dataset.n_images, k))
        user_groups, item_groups = ratings.by_user(), group_by(ratings.image_idx)
        fitted = np.zeros(dataset.n_images, dtype=bool)
        fitted[ratings.image_idx] = True
        item_prior = np.zeros_like(items)
        penalty = np.r_[np.full(k, self.reg), self.bias_reg]
        image_map = ImageMap(design, self.feature_alpha)
        val = self._validation(dataset, split, "val_seen")
        if val is not None and not self.known_[val.user_idx].all():
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
        self.scorable_ = np.ones(dataset.n_images, dtype=bool) if design is not None else fitted
        self.fold_, self.user_vecs_ = build_fold_in(
            dataset,
            ratings,
            items[:, :k],
            items[:, k],
            users[:, :k],
            mu,
            1.0,
            user_offset_shrinkage=0.0,
            demo_alpha=self.demo_alpha,
            user_offset=users[:, k],
        )

    @staticmethod
    def _raw(users: np.ndarray, items: np.ndarray, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        u, i = users[user_idx], items[image_idx]
        return np.einsum("ij,ij->i", u[:, :-1], i[:, :-1]) + u[:, -1] + i[:, -1]
