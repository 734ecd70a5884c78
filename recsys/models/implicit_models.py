"""Thin adapters around implicit's ALS and BPR, trained on "likes" (score >= like_threshold).

The implicit model is built inside ``fit`` and its factors are copied out as numpy (LensKit style); nothing of
implicit is kept. Images absent from the fit get factors from a ridge map of the image design; the raw dot
product is calibrated to the rating scale by a linear map fitted on ``val_seen`` (train if absent), plus a
shrunk per-user offset. New users: calibrated fold-in on the item factors toward a demographic prior.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.data.dataset import Dataset, Ratings
from recsys.errors import UserError
from recsys.models.factor import FactorModel, complete_items
from recsys.models.linear import LinearMap
from recsys.models.params import Hyperparameters, at_least_one, hyper, non_negative, positive
from recsys.threads import single_threaded_blas


def likes_matrix(
    ratings: Ratings, n_users: int, n_images: int, like_threshold: float, *, confidence: bool
) -> sp.csr_matrix:
    """users x images CSR of likes: 1 (or the score, when ``confidence``) where score >= like_threshold."""
    liked = ratings.score >= like_threshold
    values = ratings.score[liked].astype(np.float32) if confidence else np.ones(int(liked.sum()), np.float32)
    matrix = sp.csr_matrix(
        (values, (ratings.user_idx[liked], ratings.image_idx[liked])), shape=(n_users, n_images)
    )
    matrix.sum_duplicates()
    return matrix


class LikesParams(Hyperparameters):
    """Hyperparameters every likes-based factor model shares."""

    factors: int = at_least_one(32, "latent dimensions")
    iterations: int = at_least_one(15, "training iterations")
    like_threshold: float = hyper(4.0, doc="scores at or above it are likes")
    feature_alpha: float = positive(10.0, "ridge penalty of the image-design -> factors map")
    demo_alpha: float = positive(10.0, "ridge penalty of the demographics -> user prior map")
    offset_shrinkage: float = non_negative(5.0, "shrinkage of each user's calibration offset")
    blend: float = non_negative(
        100.0, "ratings at which a fitted image's own factors and its mapped ones weigh equally"
    )
    seed: int = hyper(0, doc="seed of the wrapped model")


class _LikesFactorModel(FactorModel):
    """Shared fit of the implicit models: train on likes, complete items from features, calibrate, fold in."""

    def build(self):
        """The wrapped implicit model with this model's hyperparameters (CPU, one thread, seeded)."""
        cls, specific = self._implicit_model()
        return cls(
            factors=self.factors,
            iterations=self.iterations,
            num_threads=1,
            random_state=self.seed,
            **specific,
        )

    def _implicit_model(self) -> tuple[type, dict]:
        """The implicit class and the hyperparameters it takes beyond factors, iterations, threads and seed."""
        raise NotImplementedError

    def _train(self, matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user vectors (n_users, f), item vectors (n_images, f), item offsets (n_images,))."""
        from implicit.recommender_base import ModelFitError

        model = self.build()
        try:
            model.fit(matrix, show_progress=False)
        except ModelFitError as err:  # NaN or infinite factors: float32 arithmetic overflowed
            largest = float(np.abs(matrix.data).max(initial=0.0))
            raise UserError(
                f"{self.name}: the fit diverged ({err}) on training weights up to {largest:g}; rescale the scores"
            ) from None
        return self._factors(
            np.asarray(model.user_factors, np.float64), np.asarray(model.item_factors, np.float64)
        )

    def _factors(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The wrapped model's factors as (user vectors, item vectors, item offsets)."""
        return users, items, np.zeros(len(items))

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        matrix = likes_matrix(
            ratings,
            dataset.n_users,
            dataset.n_images,
            self.like_threshold,
            # ALS may weigh likes by their score; BPR ranks, so it takes plain likes
            confidence=getattr(self.params, "confidence_weighted", False),
        )
        if matrix.nnz == 0:
            raise ValueError(f"{self.name}: no training score reaches like_threshold={self.like_threshold}")
        with single_threaded_blas():  # implicit's own threads; a BLAS pool inside them oversubscribes
            user_vecs, item_vecs, item_offset = self._train(matrix)
        fitted = np.zeros(dataset.n_images, dtype=bool)
        fitted[ratings.image_idx] = True
        params, self.scorable_, image_map = complete_items(
            dataset.image_design(required=False),
            fitted,
            np.hstack([item_offset[:, None], item_vecs]),
            self.feature_alpha,
            np.bincount(ratings.image_idx, minlength=dataset.n_images),
            self.blend,
        )
        item_offset, item_vecs = params[:, 0].copy(), params[:, 1:].copy()
        self.item_map_ = None
        if image_map is not None:  # [offset, vecs] -> [vecs, offset], as FoldIn holds them
            order = np.r_[1 : params.shape[1], 0]
            self.item_map_ = LinearMap(image_map.coef[:, order], image_map.intercept[order])
        self._calibrate_and_fold(dataset, ratings, split, user_vecs, item_vecs, item_offset, fitted)


class ALS(_LikesFactorModel):
    """implicit's ``AlternatingLeastSquares`` on likes, confidence ``1 + alpha * score`` (see module docstring)."""

    name = "als"

    class Params(LikesParams):
        regularization: float = positive(0.05, "L2 penalty of the factors")
        alpha: float = positive(2.0, "confidence scale")
        confidence_weighted: bool = hyper(True, doc="confidence from the score (else every like counts 1)")

    def _implicit_model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares, {"regularization": self.regularization, "alpha": self.alpha}


class BPR(_LikesFactorModel):
    """implicit's ``BayesianPersonalizedRanking`` on likes; its item-bias column becomes the item offset."""

    name = "bpr"

    class Params(LikesParams):
        iterations: int = at_least_one(100, "training epochs")
        learning_rate: float = positive(0.05, "SGD learning rate")
        regularization: float = non_negative(0.01, "L2 penalty of the factors")

    def _implicit_model(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking, {
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
        }

    def _factors(self, users, items):
        # implicit appends a bias column to item factors and a column of ones to user factors
        return users[:, :-1], items[:, :-1], items[:, -1]
