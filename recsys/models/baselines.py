"""Baselines: the global mean, shrunk metadata means, a global ridge, a per-user ridge, and the oracle."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from recsys.data.dataset import Dataset, Ratings, References
from recsys.data.encodings import ImageInputs
from recsys.errors import NewImagesNotSupported, UserError
from recsys.models.base import Model, append_rows
from recsys.models.linear import consensus_map, linear_map_spec
from recsys.models.params import Hyperparameters, non_negative, positive


class _ImageScoreModel(Model):
    """A non-personalised model: one fitted score per image (``image_score_``), the same for every user. A new
    image's score comes from ``_score_images``."""

    state_schema: ClassVar[dict[str, Any]] = {"image_score_": "float[images]"}

    needs_known_users = False

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return self.image_score_[image_idx]

    def _predict_new(self, references: list[References], images: list[np.ndarray]) -> list[np.ndarray]:
        return [self.image_score_[candidates] for candidates in images]

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        return {"image_score_": append_rows(self.image_score_, self._score_images(inputs))}

    def _score_images(self, inputs: ImageInputs) -> np.ndarray:
        """Scores (m,) of images from their inputs, as ``image_score_`` holds them for the fitted images."""
        raise NotImplementedError


class GlobalMean(_ImageScoreModel):
    """The mean training score for every pair: the floor every model must clear."""

    state_schema: ClassVar[dict[str, Any]] = {"mean_": "float"}

    name = "global_mean"

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        self.mean_ = float(ratings.score.mean())
        self.image_score_ = np.full(dataset.n_images, self.mean_)

    def _score_images(self, inputs: ImageInputs) -> np.ndarray:
        return np.full(len(inputs), self.mean_)


class MetadataMean(_ImageScoreModel):
    """Hierarchically shrunk mean score per metadata cell (PAMELA: type, then group, then style).

    Each level's cell mean is shrunk toward its parent cell: ``(sum + shrinkage * parent) / (n + shrinkage)``;
    a cell unseen in training takes its parent's value. Not personalised. The cells seen in training are kept
    (``cells_``: their codes, -1 below their depth; ``cell_score_``), so a new image takes the value of its
    deepest seen cell, the global mean without one.
    """

    state_schema: ClassVar[dict[str, Any]] = {
        "mean_": "float",
        "cells_": "int[cells, columns]",
        "cell_score_": "float[cells]",
    }

    name = "metadata_mean"

    class Params(Hyperparameters):
        shrinkage: float = non_negative(10.0, "pseudo-ratings at the parent cell's mean")

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        codes = dataset.metadata().codes  # (n_images, depth): a cell is a prefix of an image's codes
        if not codes.shape[1]:  # it would be global_mean under another name
            raise UserError(
                f"metadata_mean needs categorical image metadata (items.csv beside a table) and {dataset.name} "
                "has none"
            )
        score = ratings.score.astype(float)
        self.mean_ = float(score.mean())
        cell_mean = np.full(dataset.n_images, self.mean_)  # each image's deepest estimate so far
        cells, cell_scores = [np.zeros((0, codes.shape[1]), np.int64)], [np.zeros(0)]
        for depth in range(1, codes.shape[1] + 1):
            prefixes, cell = np.unique(codes[:, :depth], axis=0, return_inverse=True)
            cell = cell.ravel()
            sums = np.bincount(cell[ratings.image_idx], score, minlength=cell.max() + 1)
            counts = np.bincount(cell[ratings.image_idx], minlength=cell.max() + 1)
            parent = np.zeros(cell.max() + 1)
            parent[cell] = cell_mean  # the parent estimate is shared by every image of a cell
            fitted = counts > 0
            value = (sums + self.shrinkage * parent) / np.maximum(counts + self.shrinkage, 1e-300)
            cell_mean = np.where(fitted[cell], value[cell], cell_mean)
            below = np.full((int(fitted.sum()), codes.shape[1] - depth), -1, np.int64)
            cells.append(np.hstack([prefixes[fitted], below]))
            cell_scores.append(value[fitted])
        self.image_score_ = cell_mean
        self.cells_, self.cell_score_ = np.vstack(cells), np.concatenate(cell_scores)

    def _score_images(self, inputs: ImageInputs) -> np.ndarray:
        seen = dict(zip(map(tuple, self.cells_.tolist()), self.cell_score_.tolist(), strict=True))
        codes = inputs.metadata.codes.tolist()
        out = np.full(len(codes), self.mean_)
        for row, image in enumerate(codes):
            for depth in range(len(image), 0, -1):  # the deepest cell seen in training
                key = (*image[:depth], *[-1] * (len(image) - depth))
                if key in seen:
                    out[row] = seen[key]
                    break
        return out


class Ridge(_ImageScoreModel):
    """One ridge regression of the score on image features and metadata one-hots. Not personalised."""

    state_schema: ClassVar[dict[str, Any]] = {"consensus_": linear_map_spec("design", "1")}

    name = "ridge"

    class Params(Hyperparameters):
        alpha: float = positive(3.0, "ridge penalty")

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        self.consensus_ = consensus_map(dataset.image_design(), ratings, self.alpha)
        self.image_score_ = self.consensus_.scores(dataset.image_design())

    def _score_images(self, inputs: ImageInputs) -> np.ndarray:
        return self.consensus_.scores(inputs.design())


def weight_prior_ratio(design: np.ndarray, ratings: Ratings, residual: np.ndarray) -> float:
    """The empirical-Bayes ridge penalty of per-user weights: noise variance / prior variance of the weights.

    Model: a user's residuals ``r = b + X w + e`` with ``b ~ (0, s_b)``, ``w ~ (0, t I)``, ``e ~ (0, s)``. Two
    ratings i != j of one user then have ``E[r_i r_j] = s_b + t x_i.x_j`` and one rating ``E[r_i^2] = s_b + t
    |x_i|^2 + s``: least squares of the products of residual pairs within users on ``[1, x_i.x_j]`` gives
    ``s_b`` and ``t``, the squares then ``s``. Returns ``s / t``, within [1e-2, 1e4] (1e4 when the weights show
    no spread: the data hold no personal taste along the design).
    """
    normal, target, squares = np.zeros((2, 2)), np.zeros(2), []
    for _, rows in ratings.by_user():
        x, r = design[ratings.image_idx[rows]], residual[rows]
        gram, products = x @ x.T, np.outer(r, r)
        off = ~np.eye(len(rows), dtype=bool)
        g, p = gram[off], products[off]
        normal += [[len(g), g.sum()], [g.sum(), g @ g]]
        target += [p.sum(), g @ p]
        squares.append((r**2, np.diag(gram)))
    if np.linalg.det(normal) <= 1e-12:
        return 1e4
    bias_var, weight_var = np.linalg.solve(normal, target)
    r2, g2 = (np.concatenate(parts) for parts in zip(*squares, strict=True))
    noise = float(np.mean(r2 - bias_var - weight_var * g2))
    if weight_var <= 0 or noise <= 0:
        return 1e4
    return float(np.clip(noise / weight_var, 1e-2, 1e4))


class UserRidge(Model):
    """Per-user ridge on image features, shrunk toward the global ridge.

    For user u with residuals ``r = y - global(x)``: a bias ``b = sum(r) / (n + bias_shrinkage)``, then weights
    ``w = argmin |r - b - X w|^2 + user_alpha_ |w|^2``, solved in the dual (``X^T (X X^T + user_alpha_ I)^-1``)
    since a user rates fewer images than there are feature dimensions. A new user gets the same fit on its
    k references; at k = 0 it is the global ridge. The penalty ``user_alpha_`` is ``user_alpha`` times the
    empirical-Bayes ratio of the rating noise to the spread of users' weights, estimated from the fitted users'
    residuals (``weight_prior_ratio``): a fixed penalty fits one data set's noise level (1.2 on the simulated
    default, 17 on MovieLens-100k with genre and decade metadata, whose weights from a few references then
    overfit and ranked a new user's queries worse with 10 references than with none).
    """

    state_schema: ClassVar[dict[str, Any]] = {
        "design_": "float[images, design]",
        "consensus_": linear_map_spec("design", "1"),
        "global_score_": "float[images]",
        "user_alpha_": "float",
        "bias_": "float[users]",
        "weights_": "float[users, design]",
    }

    name = "user_ridge"

    class Params(Hyperparameters):
        alpha: float = positive(3.0, "ridge penalty of the global (consensus) ridge")
        user_alpha: float = positive(
            1.0, "multiplier of the empirical-Bayes ridge penalty of each user's weights (1: the estimate)"
        )
        bias_shrinkage: float = non_negative(3.0, "pseudo-ratings at zero residual in each user's bias")

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        self.design_ = dataset.image_design()
        self.consensus_ = consensus_map(self.design_, ratings, self.alpha)
        self.global_score_ = self.consensus_.scores(self.design_)
        residual = ratings.score.astype(np.float64) - self.global_score_[ratings.image_idx]
        self.user_alpha_ = self.user_alpha * weight_prior_ratio(self.design_, ratings, residual)
        states = self._fold(
            [
                References(user, ratings.image_idx[rows], ratings.score[rows])
                for user, rows in ratings.by_user()
            ]
        )
        self.bias_ = np.zeros(dataset.n_users)
        self.weights_ = np.zeros((dataset.n_users, self.design_.shape[1]))
        users = np.flatnonzero(self.known_)
        self.bias_[users], self.weights_[users] = states

    def _fold(self, references: list[References]) -> tuple[np.ndarray, np.ndarray]:
        """(biases (n,), weights (n, d)) of users from their rated images."""
        bias, weights = np.zeros(len(references)), np.zeros((len(references), self.design_.shape[1]))
        for row, refs in enumerate(references):
            images = np.asarray(refs.image_idx, np.int64)
            if len(images) == 0:
                continue
            residual = np.asarray(refs.score).astype(float) - self.global_score_[images]
            bias[row] = residual.sum() / (len(images) + self.bias_shrinkage)
            x = self.design_[images]
            dual = np.linalg.solve(x @ x.T + self.user_alpha_ * np.eye(len(images)), residual - bias[row])
            weights[row] = x.T @ dual
        return bias, weights

    def _score_folded(self, states, images: list[np.ndarray]) -> list[np.ndarray]:
        bias, weights = states
        return [
            self.global_score_[candidates] + bias[row] + self.design_[candidates] @ weights[row]
            for row, candidates in enumerate(images)
        ]

    def _taste(self, states) -> np.ndarray:
        return states[1]

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        personal = np.einsum("ij,ij->i", self.design_[image_idx], self.weights_[user_idx])
        return self.global_score_[image_idx] + self.bias_[user_idx] + personal

    def _user_vectors(self) -> np.ndarray:
        return self.weights_

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        design = inputs.design()
        return {
            "design_": append_rows(self.design_, design),
            "global_score_": append_rows(self.global_score_, self.consensus_.scores(design)),
        }


class Oracle(Model):
    """The simulator's noise-free expected score of each rating: the ceiling (simulated data only)."""

    state_schema: ClassVar[dict[str, Any]] = {"truth_key_": "int[pairs]", "truth_value_": "float[pairs]"}

    name = "oracle"
    needs_known_users = False
    needs_ground_truth = True  # the one model whose fit view holds the ground truth

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        truth = dataset.expected_scores()
        if truth is None:
            raise UserError("oracle needs the ground truth of simulated data; this dataset has none")
        keys = truth.user_idx * dataset.n_images + truth.image_idx
        values = truth.score.astype(np.float64)
        # the last value of a repeated (user, image) wins, as in a dict built split by split
        last = len(keys) - 1 - np.unique(keys[::-1], return_index=True)[1]
        order = np.argsort(keys[last], kind="stable")
        self.truth_key_, self.truth_value_ = keys[last][order], values[last][order]

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        raise NewImagesNotSupported(
            "oracle knows the simulator's expected scores of rated pairs only; it cannot score new images"
        )

    def _lookup(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        keys = user_idx * self.n_images_ + image_idx
        at = np.minimum(np.searchsorted(self.truth_key_, keys), len(self.truth_key_) - 1)
        missing = self.truth_key_[at] != keys
        if missing.any():
            pair = (int(user_idx[np.argmax(missing)]), int(image_idx[np.argmax(missing)]))
            raise UserError(f"oracle: no ground truth for (user, image) {pair}; only rated pairs have one")
        return self.truth_value_[at]

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return self._lookup(user_idx, image_idx)

    def _predict_new(self, references: list[References], images: list[np.ndarray]) -> list[np.ndarray]:
        return [
            self._lookup(np.full(len(candidates), refs.user_idx, np.int64), candidates)
            for refs, candidates in zip(references, images, strict=True)
        ]
