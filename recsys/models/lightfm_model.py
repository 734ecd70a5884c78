"""LightFM hybrid on likes, with user features (identity + demographics) and item features (metadata one-hots +
k-means cluster ids of the image features at several granularities, no identity), so that every image, rated or
not, has a representation (on a table with neither, identities: an image absent from the fit then scores as the
average image, and ``placeable`` says so). LightFM is built inside ``fit``; user and item representations are copied out as
numpy. Scores are calibrated to the rating scale (train for rated images, val_seen for unrated ones) and new
users are folded in on the item representations toward a demographic prior, as for ``als``. A new image gets its
representation as an unrated image of the fit does: its metadata one-hots and its nearest k-means cluster of each
granularity (the centres are kept) times LightFM's item feature embeddings (``item_map_``), calibrated alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.data.dataset import Dataset, Ratings
from recsys.data.encodings import ImageInputs
from recsys.models.factor import FactorModel, average_image
from recsys.models.implicit_models import likes_matrix
from recsys.models.linear import LinearMap, linear_map_spec
from recsys.models.params import Hyperparameters, at_least_one, hyper, non_negative, positive


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def cluster_onehots(features: np.ndarray, sizes: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hots (n, sum of sizes) of k-means cluster ids of unit-normalised features, one block per size, and
    the cluster centres (sum of sizes, d), block after block."""
    from sklearn.cluster import KMeans

    unit = _unit(features)
    blocks, centres = [], []
    for size in sizes:
        size = min(int(size), len(unit))
        kmeans = KMeans(n_clusters=size, n_init=1, max_iter=50, random_state=seed).fit(unit)
        blocks.append(np.eye(size, dtype=np.float32)[kmeans.labels_])
        centres.append(kmeans.cluster_centers_.astype(np.float32))
    return np.hstack(blocks), np.vstack(centres)


def nearest_clusters(features: np.ndarray, centres: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """One-hots (n, sum of sizes) of the nearest centre of each block (``cluster_onehots``'s) to each
    unit-normalised feature row: the clusters k-means would assign to new images."""
    unit = _unit(features).astype(np.float64)
    blocks, start = [], 0
    for size in sizes:
        block = centres[start : start + size].astype(np.float64)
        distance = (block**2).sum(1)[None, :] - 2 * unit @ block.T
        blocks.append(np.eye(size, dtype=np.float32)[np.argmin(distance, axis=1)])
        start += size
    return np.hstack(blocks)


def _normalised_rows(dense: np.ndarray) -> sp.csr_matrix:
    dense = dense / np.maximum(dense.sum(1, keepdims=True), 1e-12)
    return sp.csr_matrix(dense.astype(np.float32))


def item_feature_matrix(
    dataset: Dataset, cluster_sizes: Sequence[int], seed: int
) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """Row-normalised item features: metadata one-hots and feature clusters (identity when there is neither), and
    the cluster centres (None without clusters)."""
    parts, centres = [dataset.metadata().onehot.astype(np.float32)], None
    if dataset.image_features is not None and cluster_sizes:
        onehots, centres = cluster_onehots(dataset.image_features, cluster_sizes, seed)
        parts.append(onehots)
    dense = np.hstack(parts)
    if dense.shape[1] == 0:
        dense = np.eye(dataset.n_images, dtype=np.float32)
    return _normalised_rows(dense), centres


def user_feature_matrix(dataset: Dataset, fitted_users: np.ndarray) -> sp.csr_matrix:
    """Identity plus categorical demographic one-hots (numeric columns are left out: LightFM's features are
    non-negative weights), encoded on the fitted users; rows normalised."""
    demo = dataset.user_design(fitted_users, categorical_only=True)[:-1]  # LightFM scores known users only
    dense = np.hstack([np.eye(dataset.n_users), demo])
    return sp.csr_matrix((dense / dense.sum(1, keepdims=True)).astype(np.float32))


class LightFMModel(FactorModel):
    """LightFM hybrid (see the module docstring)."""

    state_schema: ClassVar[dict[str, Any]] = {
        "cluster_centres_": ["float[clusters, features]", "None"],
        "cluster_sizes_": "list[int]",
        # the item design here is the cluster memberships beside the metadata one-hots
        "item_map_": [linear_map_spec("item_design", "factors+1"), "None"],
    }

    name = "lightfm"

    class Params(Hyperparameters):
        factors: int = at_least_one(32, "embedding dimension (LightFM no_components)")
        loss: str = hyper(
            "warp", choices=("warp", "bpr", "logistic"), doc="warp, bpr (likes) or logistic (+1/-1)"
        )
        epochs: int = at_least_one(30, "training epochs")
        learning_rate: float = positive(0.05, "LightFM's (adagrad) learning rate")
        item_alpha: float = non_negative(1e-6, "L2 penalty on item feature embeddings")
        user_alpha: float = non_negative(1e-6, "L2 penalty on user feature embeddings")
        like_threshold: float = hyper(4.0, doc="scores at or above it are likes")
        cluster_sizes: tuple[int, ...] = hyper(
            (16, 64, 256), low=2, doc="k-means granularities of the features"
        )
        demo_alpha: float = positive(
            10.0, "ridge penalty of the demographics -> user prior map for new users"
        )
        offset_shrinkage: float = non_negative(5.0, "shrinkage of each user's calibration offset")
        seed: int = hyper(0, doc="seed of LightFM and k-means")

    def build(self):
        """The wrapped LightFM model with this model's hyperparameters."""
        from lightfm import LightFM

        same = {name: getattr(self, name) for name in ("loss", "learning_rate", "item_alpha", "user_alpha")}
        return LightFM(no_components=self.factors, random_state=self.seed, **same)

    def interactions(self, dataset: Dataset, ratings: Ratings) -> sp.coo_matrix:
        """The training matrix LightFM sees: likes (1), and for logistic loss other ratings as -1."""
        likes = likes_matrix(
            ratings, dataset.n_users, dataset.n_images, self.like_threshold, confidence=False
        )
        if self.loss == "logistic":
            values = np.where(ratings.score >= self.like_threshold, 1.0, -1.0).astype(np.float32)
            likes = sp.csr_matrix((values, (ratings.user_idx, ratings.image_idx)), shape=likes.shape)
            likes.sum_duplicates()
            likes.data = np.sign(likes.data)
        return likes.tocoo()

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        interactions = self.interactions(dataset, ratings)
        if interactions.nnz == 0 or (interactions.data > 0).sum() == 0:
            raise ValueError(f"lightfm: no training score reaches like_threshold={self.like_threshold}")
        item_features, self.cluster_centres_ = item_feature_matrix(dataset, self.cluster_sizes, self.seed)
        self.cluster_sizes_ = [min(int(size), dataset.n_images) for size in self.cluster_sizes]
        user_features = user_feature_matrix(dataset, ratings.user_idx)
        model = self.build()
        model.fit(
            interactions,
            user_features=user_features,
            item_features=item_features,
            epochs=self.epochs,
            num_threads=1,
        )
        _, user_vecs = model.get_user_representations(user_features)
        item_bias, item_vecs = model.get_item_representations(item_features)
        # what gave every image its representation gives new images theirs; identity features are per image id
        identity = self.cluster_centres_ is None and dataset.metadata().onehot.shape[1] == 0
        self.item_map_ = None
        if not identity:
            coef = np.hstack([model.item_embeddings, model.item_biases[:, None]])
            self.item_map_ = LinearMap(coef.astype(np.float32), np.zeros(coef.shape[1], np.float32))
        fitted = np.zeros(dataset.n_images, dtype=bool)
        fitted[ratings.image_idx] = True
        # item features give every image a representation; identity features only the fitted ones (the others
        # keep LightFM's random initialisation and get the average image's instead)
        described = dataset.metadata().onehot.shape[1] > 0 or (
            dataset.image_features is not None and len(self.cluster_sizes) > 0
        )
        self.scorable_ = np.ones(dataset.n_images, dtype=bool) if described else fitted
        item_bias, item_vecs = (
            average_image(item_bias, self.scorable_),
            average_image(item_vecs, self.scorable_),
        )
        # user biases shift a user's scores uniformly: they only matter for calibration, folded into offsets
        self._calibrate_and_fold(
            dataset,
            ratings,
            split,
            user_vecs.astype(np.float64),
            item_vecs.astype(np.float64),
            item_bias.astype(np.float64),
            fitted,
        )

    def _item_inputs(self, inputs: ImageInputs) -> sp.csr_matrix:
        """New images' item feature rows, as ``item_feature_matrix`` makes them: metadata one-hots and the nearest
        cluster of each granularity."""
        parts = [inputs.metadata.onehot.astype(np.float32)]
        if self.cluster_centres_ is not None:
            parts.append(nearest_clusters(inputs.features, self.cluster_centres_, self.cluster_sizes_))
        return _normalised_rows(np.hstack(parts))
