"""Predict-then-assess: an interpretable preference profile first, then a score from per-dimension contributions.

score(u, i) = consensus(i) + bias(u) + sum_d affinity(u, d) * x(i, d)

* consensus(i): the global ridge on image features and metadata.
* dimensions x(i, d), shared by every user: membership of the image's type, group and style (one-hots) and
  ``n_directions`` learned visual directions: the top principal directions of the training users' personal
  ridge weights in feature space, each projection standardised over images.
* profile (bias, affinities): a regularised least squares fit to the user's residuals (closed form), shrunk
  toward a prior predicted from demographics with per-dimension prior variances measured on the training users
  (empirical Bayes). A new user's profile comes from its k references (k = 0: the demographic prior).

``explain`` returns the profile and the contributions, which sum exactly to the score. A new image gets its
consensus and its dimensions from the same maps (the consensus ridge, its metadata one-hots and its features'
standardised projections: ``with_new_images``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from recsys.data.dataset import Dataset, Ratings, References
from recsys.data.encodings import ImageInputs, with_intercept
from recsys.models.base import Model, append_rows
from recsys.models.factor import MIN_NOISE
from recsys.models.linear import consensus_map, linear_map_spec
from recsys.models.params import Hyperparameters, non_negative, positive


class PreferenceProfile(Model):
    """Interpretable preference profiles (type / group / style / visual-direction affinities) scored additively."""

    state_schema: ClassVar[dict[str, Any]] = {
        "consensus_map_": linear_map_spec("design", "1"),
        "consensus_": "float[images]",
        "directions_": ["float[features, directions]", "None"],
        "projection_mean_": ["float[directions]", "None"],
        "projection_std_": ["float[directions]", "None"],
        "dimensions_": "float[images, dimensions]",
        "dimension_names_": "list[str]",
        "demo_": "float[users+1, demo]",
        "demo_map_": "float[demo, dimensions+1]",
        "noise_": "float",
        "prior_precision_": "float[dimensions+1]",
        "profiles_": "float[users+1, dimensions+1]",
    }

    name = "profile"

    class Params(Hyperparameters):
        n_directions: int = non_negative(
            6, "learned visual directions (principal directions of personal ridges)"
        )
        alpha: float = positive(3.0, "ridge penalty of the consensus base score")
        direction_alpha: float = positive(1.0, "ridge penalty of the personal fits the directions come from")
        profile_alpha: float = positive(
            3.0, "penalty of the first-pass profile fits (before priors are measured)"
        )
        demographic_alpha: float = positive(10.0, "ridge penalty of the demographics -> prior profile map")

    # ------------------------------------------------------------------ fitting
    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        self.consensus_map_ = consensus_map(dataset.image_design(), ratings, self.alpha)
        self.consensus_ = self.consensus_map_.scores(dataset.image_design())
        residual = ratings.score.astype(float) - self.consensus_[ratings.image_idx]
        grouped = ratings.by_user()
        users = np.array([user for user, _ in grouped], np.int64)
        chunks = [rows for _, rows in grouped]

        # metadata dimensions
        metadata = dataset.metadata()
        names, blocks = list(metadata.names), [metadata.onehot]
        self.directions_ = self.projection_mean_ = self.projection_std_ = None
        # visual directions: principal directions of the users' personal ridge weights in feature space
        if self.n_directions and dataset.image_features is not None:
            features = dataset.image_features.astype(np.float64)
            personal = []
            for chunk in chunks:
                x, r = features[ratings.image_idx[chunk]], residual[chunk] - residual[chunk].mean()
                personal.append(x.T @ np.linalg.solve(x @ x.T + self.direction_alpha * np.eye(len(chunk)), r))
            personal = np.array(personal)
            _, _, vt = np.linalg.svd(personal - personal.mean(axis=0), full_matrices=False)
            self.directions_ = vt[: self.n_directions].T
            projection = features @ self.directions_
            self.projection_mean_ = projection.mean(axis=0)
            self.projection_std_ = projection.std(axis=0) + 1e-12
            names += [f"visual_{j + 1}" for j in range(projection.shape[1])]
            blocks.append(self._visual(features))
        self.dimensions_ = np.hstack(blocks)
        self.dimension_names_ = names

        # first pass: shrunk fits with a flat prior; then the empirical-Bayes priors; then refit everyone
        n_dim = self.dimensions_.shape[1]
        flat_precision = np.full(n_dim + 1, self.profile_alpha)
        flat_precision[0] = 1.0
        prior = np.zeros(n_dim + 1)
        first = np.array(
            [self._solve(ratings.image_idx[c], residual[c], prior, flat_precision, 1.0) for c in chunks]
        )
        self.demo_ = with_intercept(dataset.user_design(ratings.user_idx)).astype(np.float64)
        demo = self.demo_[users]
        gram = demo.T @ demo + self.demographic_alpha * np.eye(demo.shape[1])
        self.demo_map_ = np.linalg.solve(gram, demo.T @ first)
        fitted_resid = np.concatenate(
            [residual[c] - self._design(ratings.image_idx[c]) @ p for c, p in zip(chunks, first, strict=True)]
        )
        # scores that are all equal leave no residual: a floor keeps the profile fits ridge regressions
        self.noise_ = max(float(np.mean(fitted_resid**2)), MIN_NOISE)
        spread = first - demo @ self.demo_map_
        self.prior_precision_ = self.noise_ / np.maximum(np.mean(spread**2, axis=0), 1e-4)
        self.profiles_ = self.demo_ @ self.demo_map_
        for user, chunk in zip(users, chunks, strict=True):
            self.profiles_[user] = self._profile(int(user), ratings.image_idx[chunk], ratings.score[chunk])

    def _visual(self, features: np.ndarray) -> np.ndarray:
        """The visual dimensions of images: their features' projections on the directions, standardised as the
        fitted images' are."""
        return (features.astype(np.float64) @ self.directions_ - self.projection_mean_) / self.projection_std_

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        blocks = [inputs.metadata.onehot]
        if self.directions_ is not None:
            blocks.append(self._visual(inputs.features))
        return {
            "consensus_": append_rows(self.consensus_, self.consensus_map_.scores(inputs.design())),
            "dimensions_": append_rows(self.dimensions_, np.hstack(blocks)),
        }

    def _design(self, images: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((len(images), 1)), self.dimensions_[images]])

    def _solve(self, images, residual, prior_mean, precision, noise) -> np.ndarray:
        x = self._design(images)
        lhs = x.T @ x / noise + np.diag(precision)
        return np.linalg.solve(lhs, x.T @ residual / noise + precision * prior_mean)

    def _profile(self, user_idx: int, images: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Profile (bias, affinities) of a user from rated images; the demographic prior when there are none."""
        prior = self.demo_[user_idx] @ self.demo_map_
        images = np.asarray(images, np.int64)
        if len(images) == 0:
            return prior
        residual = np.asarray(scores, np.float64) - self.consensus_[images]
        return self._solve(images, residual, prior, self.prior_precision_, self.noise_)

    # ------------------------------------------------------------------ prediction
    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return self.consensus_[image_idx] + np.einsum(
            "ij,ij->i", self._design(image_idx), self.profiles_[user_idx]
        )

    def profile_of(self, references: References) -> np.ndarray:
        """The predicted profile (bias, then one affinity per dimension) of a new user from its references."""
        self._check_fitted()
        return self._profile(int(references.user_idx), references.image_idx, references.score)

    def _fold(self, references: list[References]) -> np.ndarray:
        """Profiles (n x (1 + dimensions)) of new users from their references."""
        return np.array([self.profile_of(r) for r in references]).reshape(len(references), -1)

    def _score_folded(self, states: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray]:
        return [
            self.consensus_[candidates] + self._design(candidates) @ profile
            for profile, candidates in zip(states, images, strict=True)
        ]

    def _user_vectors(self) -> np.ndarray:
        """Profiles (n_users x (1 + dimensions)): bias then affinities; demographic prior for others."""
        return self.profiles_[: len(self.known_)]

    def explain(self, user: int | References, image_idx: int) -> dict:
        """The profile of ``user`` (a fitted user index or a new user's References) and how it scores one image.

        Returns ``{"score", "consensus", "bias", "profile": {dimension: affinity},
        "contributions": {dimension: affinity * value}}``; consensus + bias + sum(contributions) == score.
        """
        self._check_fitted()
        if isinstance(user, References):
            profile = self.profile_of(user)
        else:
            self._check_known(np.array([int(user)]))
            profile = self.profiles_[int(user)]
        image_idx = int(image_idx)
        values = self.dimensions_[image_idx]
        contributions = {
            name: float(a * v) for name, a, v in zip(self.dimension_names_, profile[1:], values, strict=True)
        }
        consensus, bias = float(self.consensus_[image_idx]), float(profile[0])
        return {
            "score": consensus + bias + float(np.sum(profile[1:] * values)),
            "consensus": consensus,
            "bias": bias,
            "profile": {name: float(a) for name, a in zip(self.dimension_names_, profile[1:], strict=True)},
            "contributions": contributions,
        }
