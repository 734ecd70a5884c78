"""Neighbourhood models: item kNN and user kNN.

With image features, similarity between images is the cosine of their embeddings (so unrated images have
neighbours). On a table without features they fall back to classical rating-based similarity: mean-centred
cosine over co-ratings, shrunk by ``n_common / (n_common + shrinkage)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import scipy.sparse as sp

from recsys.data.dataset import Dataset, Ratings, References
from recsys.models.base import Model, check_positive
from recsys.models.fold import groups, optional_image_design
from recsys.models.linear import consensus_scores


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _check_k(name: str, value) -> None:
    if not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def rating_similarity(rows: sp.csr_matrix, shrinkage: float) -> np.ndarray:
    """Shrunk cosine between the rows of a centred rating matrix: (n_rows, n_rows) dense."""
    gram = (rows @ rows.T).toarray()
    norms = np.sqrt(np.maximum(np.diag(gram), 1e-12))
    binary = rows.copy()
    binary.data = np.ones_like(binary.data)
    common = (binary @ binary.T).toarray()
    sim = gram / np.outer(norms, norms) * common / (common + shrinkage)
    np.fill_diagonal(sim, 0.0)
    return sim


def weighted_neighbours(sim: np.ndarray, values: np.ndarray, k: int, shrinkage: float) -> np.ndarray:
    """Per row of ``sim`` (n, m): the similarity-weighted mean of ``values`` (m,) over its k most similar
    columns with positive similarity, shrunk toward 0 by ``shrinkage`` in the denominator."""
    if sim.shape[1] == 0:
        return np.zeros(sim.shape[0])
    if sim.shape[1] > k:
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        sim = np.take_along_axis(sim, top, 1)
        values = values[top]
    else:
        values = np.broadcast_to(values, sim.shape)
    sim = np.maximum(sim, 0.0)
    return (sim * values).sum(1) / (sim.sum(1) + shrinkage)


class _KNNBase(Model):
    def _prepare(self, dataset: Dataset, split: str) -> Ratings:
        ratings = dataset.fit_ratings(split)
        score = ratings.score.astype(np.float64)
        self.global_ = float(score.mean())
        sums = np.bincount(ratings.user_idx, score, minlength=dataset.n_users)
        counts = np.bincount(ratings.user_idx, minlength=dataset.n_users)
        self.user_mean_ = (sums + self.mean_shrinkage * self.global_) / (counts + self.mean_shrinkage)
        self.known_ = counts > 0
        self.embedding_ = (
            None if dataset.image_features is None else _unit(dataset.image_features.astype(np.float32))
        )
        # non-personalised fallback for k = 0: a global ridge on the image design, else the image mean
        design = optional_image_design(dataset)
        if design is not None:
            self.item_score_ = consensus_scores(design, ratings, 3.0)
        else:
            isum = np.bincount(ratings.image_idx, score, minlength=dataset.n_images)
            icount = np.bincount(ratings.image_idx, minlength=dataset.n_images)
            self.item_score_ = (isum + 5.0 * self.global_) / (icount + 5.0)
        self.user_rated_ = {u: (ratings.image_idx[rows], score[rows]) for u, rows in groups(ratings.user_idx)}
        self.n_images_ = dataset.n_images
        return ratings

    def _user_mean(self, scores: np.ndarray) -> float:
        return float(
            (scores.sum() + self.mean_shrinkage * self.global_) / (len(scores) + self.mean_shrinkage)
        )


class ItemKNN(_KNNBase):
    """Item kNN with a baseline: the non-personalised image score (global ridge on the image design, or the
    shrunk image mean) + the user's shrunk mean residual + the similarity-weighted mean of the user's residuals
    on the candidate's k nearest rated images (embedding cosine; co-rating cosine without features). k = 0:
    the non-personalised image score."""

    name = "item_knn"

    def __init__(self, *, k: int = 30, shrinkage: float = 1.0, mean_shrinkage: float = 5.0,
                 similarity_shrinkage: float = 10.0) -> None:  # fmt: skip
        _check_k("k", k)
        check_positive("shrinkage", shrinkage, allow_zero=True)
        check_positive("mean_shrinkage", mean_shrinkage, allow_zero=True)
        check_positive("similarity_shrinkage", similarity_shrinkage, allow_zero=True)
        self.k = k
        self.shrinkage = shrinkage
        self.mean_shrinkage = mean_shrinkage
        self.similarity_shrinkage = similarity_shrinkage

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = self._prepare(dataset, split)
        self.item_sim_ = None
        if self.embedding_ is None:
            centred = ratings.score - self.user_mean_[ratings.user_idx]
            matrix = sp.csr_matrix((centred, (ratings.image_idx, ratings.user_idx)),
                                   shape=(dataset.n_images, dataset.n_users))  # fmt: skip
            self.item_sim_ = rating_similarity(matrix, self.similarity_shrinkage).astype(np.float32)
        self.fitted_ = True
        return self

    def _similarity(self, candidates: np.ndarray, rated: np.ndarray) -> np.ndarray:
        if self.embedding_ is not None:
            return self.embedding_[candidates] @ self.embedding_[rated].T
        return self.item_sim_[np.ix_(candidates, rated)]

    def _score(self, rated: np.ndarray, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Baseline (non-personalised image score + the user's shrunk mean residual) + neighbours' residuals."""
        if len(rated) == 0:
            return self.item_score_[candidates].copy()
        residual = scores - self.item_score_[rated]
        offset = residual.sum() / (len(rated) + self.mean_shrinkage)
        sim = self._similarity(candidates, rated).astype(np.float64)
        return (
            self.item_score_[candidates]
            + offset
            + weighted_neighbours(sim, residual - offset, self.k, self.shrinkage)
        )

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        self._check_known(user_idx, self.known_)
        out = np.empty(len(user_idx))
        for user, rows in groups(user_idx):
            rated, scores = self.user_rated_[user]
            out[rows] = self._score(rated, scores, image_idx[rows])
        return out

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        out = []
        for refs, images in zip(references, image_idx, strict=True):
            scores = np.asarray(refs.score, np.float64)
            rated = np.asarray(refs.image_idx, np.int64)
            out.append(self._score(rated, scores, np.asarray(images, np.int64)))
        return out


class UserKNN(_KNNBase):
    """User kNN: user mean + similarity-weighted mean over the k most similar users of their centred ratings
    near the candidate (the mean of a neighbour's centred ratings on its ``image_k`` rated images nearest the
    candidate by embedding). Users are compared by cosine of taste vectors (mean-centred ratings projected on
    image features) with a FAISS inner-product index; without features, by co-rating cosine."""

    name = "user_knn"

    def __init__(self, *, k: int = 30, image_k: int = 5, shrinkage: float = 0.5, mean_shrinkage: float = 5.0,
                 similarity_shrinkage: float = 10.0) -> None:  # fmt: skip
        _check_k("k", k)
        _check_k("image_k", image_k)
        check_positive("shrinkage", shrinkage, allow_zero=True)
        check_positive("mean_shrinkage", mean_shrinkage, allow_zero=True)
        check_positive("similarity_shrinkage", similarity_shrinkage, allow_zero=True)
        self.k = k
        self.image_k = image_k
        self.shrinkage = shrinkage
        self.mean_shrinkage = mean_shrinkage
        self.similarity_shrinkage = similarity_shrinkage

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = self._prepare(dataset, split)
        self.train_users_ = np.flatnonzero(self.known_)
        centred = ratings.score - self.user_mean_[ratings.user_idx]
        self.centred_ = sp.csr_matrix((centred, (ratings.user_idx, ratings.image_idx)),
                                      shape=(dataset.n_users, dataset.n_images))  # fmt: skip
        if self.embedding_ is not None:
            self.taste_ = np.zeros((dataset.n_users, self.embedding_.shape[1]), np.float32)
            for user in self.train_users_:
                rated, scores = self.user_rated_[user]
                self.taste_[user] = self._taste(rated, scores - self.user_mean_[user])
        else:
            self.taste_ = None
        self.fitted_ = True
        return self

    def _taste(self, rated: np.ndarray, centred: np.ndarray) -> np.ndarray:
        vec = (centred[:, None] * self.embedding_[rated]).mean(0)
        return (vec / max(np.linalg.norm(vec), 1e-12)).astype(np.float32)

    def _neighbours(
        self, taste: np.ndarray | None, rated: np.ndarray, centred: np.ndarray, exclude: int | None
    ):
        """(neighbour user indices, similarities) of the k most similar training users."""
        if taste is not None:
            import faiss

            index = faiss.IndexFlatIP(taste.shape[0])
            index.add(self.taste_[self.train_users_])
            sims, found = index.search(taste[None, :], min(self.k + 1, len(self.train_users_)))
            users, sims = self.train_users_[found[0]], sims[0].astype(np.float64)
        else:
            row = sp.csr_matrix((centred, (np.zeros(len(rated), np.int64), rated)), shape=(1, self.n_images_))
            gram = (self.centred_ @ row.T).toarray().ravel()
            binary = self.centred_.copy()
            binary.data[:] = 1.0
            common = np.asarray(binary[:, rated].sum(1)).ravel()
            norms = np.sqrt(
                np.asarray(self.centred_.multiply(self.centred_).sum(1)).ravel()
            ) * np.linalg.norm(centred)
            sims_all = gram / np.maximum(norms, 1e-12) * common / (common + self.similarity_shrinkage)
            sims_all[~self.known_] = -np.inf
            users = np.argsort(-sims_all, kind="stable")[: self.k + 1]
            sims = sims_all[users]
        keep = users != exclude if exclude is not None else np.ones(len(users), bool)
        return users[keep][: self.k], sims[keep][: self.k]

    def _neighbour_estimates(self, neighbour: int, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(estimate, available) of a neighbour's centred rating of each candidate."""
        rated, scores = self.user_rated_[neighbour]
        centred = scores - self.user_mean_[neighbour]
        if self.embedding_ is not None:
            sim = (self.embedding_[candidates] @ self.embedding_[rated].T).astype(np.float64)
            k = min(self.image_k, len(rated))
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            return centred[top].mean(1), np.ones(len(candidates), bool)
        row = self.centred_[neighbour]
        values = np.asarray(row[:, candidates].todense()).ravel()
        has = np.isin(candidates, rated)
        return values, has

    def _score(self, neighbours, sims, mean: float, candidates: np.ndarray) -> np.ndarray:
        num = np.zeros(len(candidates))
        den = np.full(len(candidates), self.shrinkage)
        for neighbour, sim in zip(neighbours.tolist(), sims.tolist(), strict=True):
            if sim <= 0:
                continue
            estimate, has = self._neighbour_estimates(neighbour, candidates)
            num += sim * estimate * has
            den += sim * has
        return mean + num / den

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        self._check_known(user_idx, self.known_)
        out = np.empty(len(user_idx))
        for user, rows in groups(user_idx):
            rated, scores = self.user_rated_[user]
            mean = self.user_mean_[user]
            taste = None if self.taste_ is None else self.taste_[user]
            neighbours, sims = self._neighbours(taste, rated, scores - mean, exclude=user)
            out[rows] = self._score(neighbours, sims, mean, image_idx[rows])
        return out

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        out = []
        for refs, images in zip(references, image_idx, strict=True):
            images = np.asarray(images, np.int64)
            scores = np.asarray(refs.score, np.float64)
            rated = np.asarray(refs.image_idx, np.int64)
            if len(rated) == 0:
                out.append(self.item_score_[images].copy())
                continue
            mean = self._user_mean(scores)
            taste = None if self.taste_ is None else self._taste(rated, scores - mean)
            neighbours, sims = self._neighbours(taste, rated, scores - mean, exclude=None)
            out.append(self._score(neighbours, sims, mean, images))
        return out

    def user_vectors(self) -> np.ndarray:
        self._check_fitted()
        if self.taste_ is None:
            raise NotImplementedError("user_knn has taste vectors only on datasets with image features")
        return self.taste_.copy()

    def fold_in(self, references: Sequence[References]) -> np.ndarray:
        """Taste vectors (float32, n x d) of new users from their references (zeros without references)."""
        self._check_fitted()
        if self.taste_ is None:
            raise NotImplementedError("user_knn has taste vectors only on datasets with image features")
        out = np.zeros((len(references), self.taste_.shape[1]), np.float32)
        for row, refs in enumerate(references):
            if len(refs):
                scores = np.asarray(refs.score, np.float64)
                out[row] = self._taste(np.asarray(refs.image_idx, np.int64), scores - self._user_mean(scores))
        return out
