"""LightFM hybrid on likes, with user features (identity + demographics) and item features (metadata one-hots +
k-means cluster ids of the image features at several granularities, no identity), so that every image, rated or
not, has a representation. LightFM is built inside ``fit``; user and item representations are copied out as
numpy. Scores are calibrated to the rating scale (train for rated images, val_seen for unrated ones) and new
users are folded in on the item representations toward a demographic prior, as for ``als``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.dataset import Dataset, References
from recsys.models.base import Model, check_positive
from recsys.models.fold import FoldInTaste, build_fold_in, calibrate
from recsys.models.implicit_models import likes_matrix
from recsys.models.side import metadata_onehot, user_design

LOSSES = ("warp", "bpr", "logistic")


def cluster_onehots(features: np.ndarray, sizes: Sequence[int], seed: int) -> np.ndarray:
    """One-hots (n, sum of sizes) of k-means cluster ids of unit-normalised features, one block per size."""
    from sklearn.cluster import KMeans

    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    blocks = []
    for size in sizes:
        size = min(int(size), len(unit))
        labels = KMeans(n_clusters=size, n_init=1, max_iter=50, random_state=seed).fit_predict(unit)
        blocks.append(np.eye(size, dtype=np.float32)[labels])
    return np.hstack(blocks)


def item_feature_matrix(dataset: Dataset, cluster_sizes: Sequence[int], seed: int) -> sp.csr_matrix:
    """Row-normalised item features: metadata one-hots and feature clusters (identity when there is neither)."""
    parts = [metadata_onehot(dataset.images)]
    if dataset.image_features is not None and cluster_sizes:
        parts.append(cluster_onehots(dataset.image_features, cluster_sizes, seed))
    dense = np.hstack(parts)
    if dense.shape[1] == 0:
        dense = np.eye(dataset.n_images, dtype=np.float32)
    dense = dense / np.maximum(dense.sum(1, keepdims=True), 1e-12)
    return sp.csr_matrix(dense.astype(np.float32))


def user_feature_matrix(users: pd.DataFrame, fitted_users: np.ndarray) -> sp.csr_matrix:
    """Identity plus categorical demographic one-hots (numeric columns are left out: LightFM's features are
    non-negative weights), encoded on the fitted users; rows normalised."""
    categorical = users[[c for c in users.columns if not pd.api.types.is_numeric_dtype(users[c])]]
    demo = user_design(categorical, fitted_users)[:-1]  # LightFM scores known users only
    dense = np.hstack([np.eye(len(users)), demo])
    return sp.csr_matrix((dense / dense.sum(1, keepdims=True)).astype(np.float32))


class LightFMModel(FoldInTaste, Model):
    """LightFM hybrid (see the module docstring).

    Args:
        factors: embedding dimension (LightFM ``no_components``).
        loss: ``warp``, ``bpr`` (trained on likes) or ``logistic`` (likes +1, other ratings -1).
        epochs: training epochs.
        learning_rate: LightFM's (adagrad) learning rate.
        item_alpha, user_alpha: L2 penalties on feature embeddings.
        like_threshold: scores at or above it are likes.
        cluster_sizes: k-means granularities of the image features used as item features.
        demo_alpha: ridge penalty of the demographics -> user prior map for new users.
        offset_shrinkage: shrinkage of each user's calibration offset.
        seed: seed of LightFM and k-means.
    """

    name = "lightfm"

    def __init__(self, *, factors: int = 32, loss: str = "warp", epochs: int = 30, learning_rate: float = 0.05,
                 item_alpha: float = 1e-6, user_alpha: float = 1e-6, like_threshold: float = 4.0,
                 cluster_sizes: tuple[int, ...] = (16, 64, 256), demo_alpha: float = 10.0,
                 offset_shrinkage: float = 5.0, seed: int = 0) -> None:  # fmt: skip
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not isinstance(factors, int | np.integer) or factors < 1:
            raise ValueError(f"factors must be a positive integer, got {factors!r}")
        if not isinstance(epochs, int | np.integer) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if any(not isinstance(s, int | np.integer) or s < 2 for s in cluster_sizes):
            raise ValueError(f"cluster_sizes must be integers >= 2, got {cluster_sizes!r}")
        if not np.isfinite(like_threshold):
            raise ValueError(f"like_threshold must be finite, got {like_threshold!r}")
        check_positive("learning_rate", learning_rate)
        check_positive("item_alpha", item_alpha, allow_zero=True)
        check_positive("user_alpha", user_alpha, allow_zero=True)
        check_positive("demo_alpha", demo_alpha)
        check_positive("offset_shrinkage", offset_shrinkage, allow_zero=True)
        self.factors = factors
        self.loss = loss
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.item_alpha = item_alpha
        self.user_alpha = user_alpha
        self.like_threshold = like_threshold
        self.cluster_sizes = cluster_sizes
        self.demo_alpha = demo_alpha
        self.offset_shrinkage = offset_shrinkage
        self.seed = seed

    def build(self):
        """The wrapped LightFM model with this model's hyperparameters."""
        from lightfm import LightFM

        return LightFM(
            no_components=self.factors, loss=self.loss, learning_rate=self.learning_rate,
            item_alpha=self.item_alpha, user_alpha=self.user_alpha, random_state=self.seed,
        )  # fmt: skip

    def interactions(self, dataset: Dataset, split: str = "train") -> sp.coo_matrix:
        """The training matrix LightFM sees: likes (1), and for logistic loss other ratings as -1."""
        ratings = dataset.fit_ratings(split)
        likes = likes_matrix(
            ratings, dataset.n_users, dataset.n_images, self.like_threshold, confidence=False
        )
        if self.loss == "logistic":
            values = np.where(ratings.score >= self.like_threshold, 1.0, -1.0).astype(np.float32)
            likes = sp.csr_matrix((values, (ratings.user_idx, ratings.image_idx)), shape=likes.shape)
            likes.sum_duplicates()
            likes.data = np.sign(likes.data)
        return likes.tocoo()

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = dataset.fit_ratings(split)
        interactions = self.interactions(dataset, split)
        if interactions.nnz == 0 or (interactions.data > 0).sum() == 0:
            raise ValueError(f"lightfm: no training score reaches like_threshold={self.like_threshold}")
        item_features = item_feature_matrix(dataset, self.cluster_sizes, self.seed)
        user_features = user_feature_matrix(dataset.users, ratings.user_idx)
        model = self.build()
        model.fit(interactions, user_features=user_features, item_features=item_features, epochs=self.epochs,
                  num_threads=1)  # fmt: skip
        user_bias, user_vecs = model.get_user_representations(user_features)
        item_bias, item_vecs = model.get_item_representations(item_features)
        item_vecs, item_offset = item_vecs.astype(np.float64), item_bias.astype(np.float64)
        user_vecs = user_vecs.astype(np.float64)
        self.known_ = np.zeros(dataset.n_users, dtype=bool)
        self.known_[ratings.user_idx] = True
        fitted = np.zeros(dataset.n_images, dtype=bool)
        fitted[ratings.image_idx] = True
        # user biases shift a user's scores uniformly: they only matter for calibration, folded into offsets
        raw = np.einsum("ij,ij->i", user_vecs[ratings.user_idx], item_vecs[ratings.image_idx])
        a, b = calibrate(raw + item_offset[ratings.image_idx], ratings.score)
        val = dataset.ratings.get("val_seen") if "val_seen" not in split.split("+") else None
        if (
            val is not None
            and len(val) > 10
            and self.known_[val.user_idx].all()
            and (~fitted[val.image_idx]).all()
        ):
            raw = np.einsum("ij,ij->i", user_vecs[val.user_idx], item_vecs[val.image_idx])
            a_map, b_map = calibrate(raw + item_offset[val.image_idx], val.score)
            item_vecs[~fitted] *= b_map / b
            item_offset[~fitted] = item_offset[~fitted] * b_map / b + (a_map - a) / b
        self.fold_, self.user_vecs_ = build_fold_in(
            dataset, ratings, item_vecs, item_offset, user_vecs, a, b,
            user_offset_shrinkage=self.offset_shrinkage, demo_alpha=self.demo_alpha,
        )  # fmt: skip
        self.fitted_ = True
        return self

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        self._check_known(user_idx, self.known_)
        return self.fold_.score_pairs(self.user_vecs_, user_idx, image_idx)

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        return self.fold_.predict_new(references, image_idx)

    def user_vectors(self) -> np.ndarray:
        self._check_fitted()
        return self.user_vecs_[:, :-1].astype(np.float32)
