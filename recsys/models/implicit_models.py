"""Thin adapters around implicit's ALS and BPR, trained on "likes" (score >= like_threshold).

The implicit model is built inside ``fit`` and its factors are copied out as numpy (LensKit style); nothing of
implicit is kept. Images absent from the fit get factors from a ridge map of the image design; the raw dot
product is calibrated to the rating scale by a linear map fitted on ``val_seen`` (train if absent), plus a
shrunk per-user offset. New users: calibrated fold-in on the item factors toward a demographic prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.data.dataset import Dataset, Ratings, References
from recsys.models.base import Model, check_positive
from recsys.models.fold import (
    FoldIn,
    FoldInTaste,
    build_fold_in,
    calibrate,
    check_scorable,
    complete_items,
    optional_image_design,
)


def likes_matrix(ratings: Ratings, n_users: int, n_images: int, like_threshold: float, *,
                 confidence: bool) -> sp.csr_matrix:  # fmt: skip
    """users x images CSR of likes: 1 (or the score, when ``confidence``) where score >= like_threshold."""
    liked = ratings.score >= like_threshold
    values = ratings.score[liked].astype(np.float32) if confidence else np.ones(int(liked.sum()), np.float32)
    matrix = sp.csr_matrix(
        (values, (ratings.user_idx[liked], ratings.image_idx[liked])), shape=(n_users, n_images)
    )
    matrix.sum_duplicates()
    return matrix


class _LikesFactorModel(FoldInTaste, Model):
    """Shared fit/predict of the likes-based factor models; subclasses build and run the wrapped model."""

    def _check_common(self, factors, iterations, like_threshold, feature_alpha, demo_alpha, offset_shrinkage,
                      blend) -> None:  # fmt: skip
        if not isinstance(factors, int | np.integer) or factors < 1:
            raise ValueError(f"factors must be a positive integer, got {factors!r}")
        if not isinstance(iterations, int | np.integer) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        if not np.isfinite(like_threshold):
            raise ValueError(f"like_threshold must be finite, got {like_threshold!r}")
        check_positive("feature_alpha", feature_alpha)
        check_positive("demo_alpha", demo_alpha)
        check_positive("offset_shrinkage", offset_shrinkage, allow_zero=True)
        check_positive("blend", blend, allow_zero=True)

    def _train(self, matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user vectors (n_users, f), item vectors (n_images, f), item offsets (n_images,))."""
        raise NotImplementedError

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = dataset.fit_ratings(split)
        matrix = likes_matrix(ratings, dataset.n_users, dataset.n_images, self.like_threshold,
                              confidence=self.confidence_weighted)  # fmt: skip
        if matrix.nnz == 0:
            raise ValueError(f"{self.name}: no training score reaches like_threshold={self.like_threshold}")
        user_vecs, item_vecs, item_offset = self._train(matrix)
        fitted = np.zeros(dataset.n_images, dtype=bool)
        fitted[ratings.image_idx] = True
        params, self.scorable_ = complete_items(
            optional_image_design(dataset), fitted, np.hstack([item_offset[:, None], item_vecs]), self.feature_alpha,
            np.bincount(ratings.image_idx, minlength=dataset.n_images), self.blend,
        )  # fmt: skip
        item_offset, item_vecs = params[:, 0].copy(), params[:, 1:].copy()
        self.known_ = np.zeros(dataset.n_users, dtype=bool)
        self.known_[ratings.user_idx] = True
        # images with learned factors and images given factors by the feature map score on different scales
        # (fitted vs shrunk): calibrate the first on train, the second on val_seen, and rescale the mapped ones
        raw = np.einsum("ij,ij->i", user_vecs[ratings.user_idx], item_vecs[ratings.image_idx])
        a, b = calibrate(raw + item_offset[ratings.image_idx], ratings.score)
        val = dataset.ratings.get("val_seen") if "val_seen" not in split.split("+") else None
        mapped = self.scorable_ & ~fitted
        if (
            val is not None
            and len(val) > 10
            and self.known_[val.user_idx].all()
            and mapped[val.image_idx].all()
        ):
            raw = np.einsum("ij,ij->i", user_vecs[val.user_idx], item_vecs[val.image_idx])
            a_map, b_map = calibrate(raw + item_offset[val.image_idx], val.score)
            item_vecs[mapped] *= b_map / b
            item_offset[mapped] = item_offset[mapped] * b_map / b + (a_map - a) / b
        self.fold_, self.user_vecs_ = build_fold_in(
            dataset, ratings, item_vecs, item_offset, user_vecs, a, b,
            user_offset_shrinkage=self.offset_shrinkage, demo_alpha=self.demo_alpha,
        )  # fmt: skip
        self.fitted_ = True
        return self

    @property
    def calibration(self) -> tuple[float, float]:
        """(a, b): rating = a + b * (raw score + user offset)."""
        return self.fold_.a, self.fold_.b

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        self._check_known(user_idx, self.known_)
        check_scorable(self.name, self.scorable_, image_idx)
        return self.fold_.score_pairs(self.user_vecs_, user_idx, image_idx)

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        for refs, images in zip(references, image_idx, strict=True):
            check_scorable(self.name, self.scorable_, np.asarray(refs.image_idx, np.int64))
            check_scorable(self.name, self.scorable_, np.asarray(images, np.int64))
        return self.fold_.predict_new(references, image_idx)

    def user_vectors(self) -> np.ndarray:
        self._check_fitted()
        return self.user_vecs_[:, :-1].astype(np.float32)

    fold_: FoldIn


class ALS(_LikesFactorModel):
    """implicit's ``AlternatingLeastSquares`` on likes, confidence ``1 + alpha * score`` (see module docstring)."""

    name = "als"

    def __init__(self, *, factors: int = 32, regularization: float = 0.05, alpha: float = 2.0, iterations: int = 15,
                 like_threshold: float = 4.0, confidence_weighted: bool = True, feature_alpha: float = 10.0,
                 demo_alpha: float = 10.0, offset_shrinkage: float = 5.0, blend: float = 100.0, seed: int = 0) -> None:  # fmt: skip
        self._check_common(
            factors, iterations, like_threshold, feature_alpha, demo_alpha, offset_shrinkage, blend
        )
        check_positive("regularization", regularization)
        check_positive("alpha", alpha)
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.like_threshold = like_threshold
        self.confidence_weighted = confidence_weighted
        self.feature_alpha = feature_alpha
        self.demo_alpha = demo_alpha
        self.offset_shrinkage = offset_shrinkage
        self.blend = blend
        self.seed = seed

    def build(self):
        """The wrapped implicit model with this model's hyperparameters (CPU, one thread, seeded)."""
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=self.alpha, iterations=self.iterations,
            num_threads=1, random_state=self.seed,
        )  # fmt: skip

    def _train(self, matrix):
        with threadpool_limits(1, "blas"):  # implicit's own threads; a BLAS pool inside them oversubscribes
            model = self.build()
            model.fit(matrix, show_progress=False)
        items = np.asarray(model.item_factors, np.float64)
        return np.asarray(model.user_factors, np.float64), items, np.zeros(len(items))


class BPR(_LikesFactorModel):
    """implicit's ``BayesianPersonalizedRanking`` on likes; its item-bias column becomes the item offset."""

    name = "bpr"

    def __init__(self, *, factors: int = 32, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, like_threshold: float = 4.0, feature_alpha: float = 10.0,
                 demo_alpha: float = 10.0, offset_shrinkage: float = 5.0, blend: float = 100.0, seed: int = 0) -> None:  # fmt: skip
        self._check_common(
            factors, iterations, like_threshold, feature_alpha, demo_alpha, offset_shrinkage, blend
        )
        check_positive("learning_rate", learning_rate)
        check_positive("regularization", regularization, allow_zero=True)
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.like_threshold = like_threshold
        self.feature_alpha = feature_alpha
        self.demo_alpha = demo_alpha
        self.offset_shrinkage = offset_shrinkage
        self.blend = blend
        self.seed = seed

    confidence_weighted = False

    def build(self):
        """The wrapped implicit model with this model's hyperparameters (CPU, one thread, seeded)."""
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors, learning_rate=self.learning_rate, regularization=self.regularization,
            iterations=self.iterations, num_threads=1, random_state=self.seed,
        )  # fmt: skip

    def _train(self, matrix):
        with threadpool_limits(1, "blas"):  # implicit's own threads; a BLAS pool inside them oversubscribes
            model = self.build()
            model.fit(matrix, show_progress=False)
        users = np.asarray(model.user_factors, np.float64)
        items = np.asarray(model.item_factors, np.float64)
        # implicit appends a bias column to item factors and a column of ones to user factors
        return users[:, :-1], items[:, :-1], items[:, -1]
