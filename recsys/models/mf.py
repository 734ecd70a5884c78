"""Biased matrix factorisation for explicit scores, fitted by alternating least squares in numpy.

``score = mu + b_u + b_i + p_u . q_i``. Each half-epoch solves every user's (then every image's) ridge
subproblem in one batch. The factor penalty of a user or image is ``reg + reg_per_rating * n_ratings``
(weighted-lambda regularisation, which carries over between rating tables of different noise levels better
than either term alone); biases get ``bias_reg``. Item parameters ``[b_i, q_i]`` are shrunk toward a ridge
map from the image design (features + metadata one-hots), refitted each epoch, so images absent from the fit
(PAMELA's ``*_seen`` splits) get ``[b_i, q_i]`` from their features. Early stopping on ``val_seen`` RMSE
when present. New users: fold-in of ``[p, b_u]`` from their references, toward a demographic prior (k = 0:
the prior). Predictions are clipped to the dataset's score range.
"""

from __future__ import annotations

import numpy as np

from recsys.data.dataset import Dataset, Ratings
from recsys.models.biases import clip_scores
from recsys.models.factor import FactorModel, ImageMap, build_fold_in
from recsys.models.params import Hyperparameters, at_least_one, hyper, non_negative, positive


class Groups:
    """The ratings of each user (or image), contiguous: ``order`` sorts the ratings by group and group ``g``
    (id ``ids[g]``) holds ``order[bounds[g]:bounds[g + 1]]``."""

    def __init__(self, index: np.ndarray):
        self.order = np.argsort(index, kind="stable")
        self.ids, starts = np.unique(index[self.order], return_index=True)
        self.bounds = np.r_[starts, len(index)]
        self.counts = np.diff(self.bounds)


def als_solve(
    groups: Groups, x: np.ndarray, y: np.ndarray, penalty: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    """The ALS subproblems of every group at once: row g is ``argmin_v |y_g - x_g v|^2 + sum(penalty *
    (v - prior_g)^2)`` over the ratings of group g. ``x`` (n, d) and ``y`` (n,) are aligned to the ratings,
    ``penalty`` and ``prior`` (n_groups, d) or (d,). Returns (n_groups, d)."""
    d = x.shape[1]
    xs, ys = x[groups.order], y[groups.order]
    gram = np.empty((len(groups.ids), d, d))
    rhs = np.empty((len(groups.ids), d))
    for g, (lo, hi) in enumerate(zip(groups.bounds[:-1].tolist(), groups.bounds[1:].tolist(), strict=True)):
        gram[g] = xs[lo:hi].T @ xs[lo:hi]
        rhs[g] = ys[lo:hi] @ xs[lo:hi]
    diagonal = np.arange(d)
    gram[:, diagonal, diagonal] += penalty
    return np.linalg.solve(gram, (rhs + penalty * prior)[..., None])[..., 0]


class MatrixFactorization(FactorModel):
    """Biased MF by ALS with a feature prior on items (see the module docstring)."""

    name = "mf"

    class Params(Hyperparameters):
        factors: int = at_least_one(16, "latent dimensions")
        reg: float = positive(3.0, "L2 penalty on user and item factors")
        reg_per_rating: float = non_negative(
            0.07, "added to reg for each rating of the user or image (weighted-lambda regularisation)"
        )
        bias_reg: float = positive(5.0, "L2 penalty on user and item biases")
        feature_alpha: float = positive(10.0, "ridge penalty of the image-design -> [bias, factors] map")
        epochs: int = at_least_one(20, "maximum ALS epochs")
        patience: int = at_least_one(3, "epochs without val_seen improvement before stopping")
        demo_alpha: float = positive(10.0, "ridge penalty of the demographics -> user prior map")
        seed: int = hyper(0, doc="seed of the factor initialisation")

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        rng = np.random.default_rng(self.seed)
        self.score_range_ = np.asarray(dataset.score_range, np.float64)
        k = self.factors
        design = dataset.image_design(required=False)
        mu = float(ratings.score.mean())
        y = ratings.score.astype(np.float64) - mu
        users = np.zeros((dataset.n_users, k + 1))  # [p_u, b_u]
        items = np.zeros((dataset.n_images, k + 1))  # [q_i, b_i]
        items[:, :k] = rng.normal(0.0, 0.1, (dataset.n_images, k))
        by_user, by_item = Groups(ratings.user_idx), Groups(ratings.image_idx)
        ones = np.ones((len(ratings), 1))
        fitted = np.zeros(dataset.n_images, dtype=bool)
        fitted[ratings.image_idx] = True
        item_prior = np.zeros_like(items)
        user_penalty, item_penalty = self._penalty(by_user.counts), self._penalty(by_item.counts)
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
            x = np.hstack([items[ratings.image_idx, :k], ones])
            users[by_user.ids] = als_solve(by_user, x, y - items[ratings.image_idx, k], user_penalty, 0.0)
            # items: x = [p_u, 1], target r - mu - b_u, shrunk toward the feature map's prediction
            x = np.hstack([users[ratings.user_idx, :k], ones])
            target = y - users[ratings.user_idx, k]
            items[by_item.ids] = als_solve(by_item, x, target, item_penalty, item_prior[by_item.ids])
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

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return clip_scores(super()._predict(user_idx, image_idx), self.score_range_)

    def _score_folded(self, states: list[np.ndarray], images: list[np.ndarray]) -> list[np.ndarray]:
        return [clip_scores(s, self.score_range_) for s in super()._score_folded(states, images)]

    def _penalty(self, counts: np.ndarray) -> np.ndarray:
        """Ridge penalties (n_groups, factors + 1) of users or images with ``counts`` ratings: ``reg +
        reg_per_rating * count`` on the factors (weighted-lambda), ``bias_reg`` on the bias."""
        factors = np.repeat((self.reg + self.reg_per_rating * counts)[:, None], self.factors, axis=1)
        return np.hstack([factors, np.full((len(counts), 1), self.bias_reg)])

    @staticmethod
    def _raw(users: np.ndarray, items: np.ndarray, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        u, i = users[user_idx], items[image_idx]
        return np.einsum("ij,ij->i", u[:, :-1], i[:, :-1]) + u[:, -1] + i[:, -1]
