"""Predict-then-assess: an interpretable preference profile first, then a score from per-dimension contributions.

score(u, i) = consensus(i) + bias(u) + sum_d affinity(u, d) * x(i, d)

* consensus(i): the global ridge on image features and metadata.
* dimensions x(i, d), shared by every user: membership of the image's type, group and style (one-hots) and
  ``n_directions`` learned visual directions: the top principal directions of the training users' personal
  ridge weights in feature space, each projection standardised over images.
* profile (bias, affinities): a regularised least squares fit to the user's residuals (closed form), shrunk
  toward a prior predicted from demographics with per-dimension prior variances measured on the training users
  (empirical Bayes). A new user's profile comes from its k references (k = 0: the demographic prior).

``explain`` returns the profile and the contributions, which sum exactly to the score.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset, References
from recsys.models.base import Model, check_positive
from recsys.models.linear import consensus_scores
from recsys.models.side import image_design, metadata_columns, user_design, with_intercept


class PreferenceProfile(Model):
    """Interpretable preference profiles (type / group / style / visual-direction affinities) scored additively.

    Args:
        n_directions: learned visual directions (principal directions of personal ridge weights).
        alpha: ridge penalty of the consensus base score.
        direction_alpha: ridge penalty of the personal ridge fits the directions are learned from.
        profile_alpha: penalty of the first-pass profile fits (before the priors are measured).
        demographic_alpha: ridge penalty of the map from demographics to the prior profile.
    """

    name = "profile"

    def __init__(
        self,
        *,
        n_directions: int = 6,
        alpha: float = 3.0,
        direction_alpha: float = 1.0,
        profile_alpha: float = 3.0,
        demographic_alpha: float = 10.0,
    ) -> None:
        check_positive("n_directions", n_directions, allow_zero=True)
        for key, value in {"alpha": alpha, "direction_alpha": direction_alpha, "profile_alpha": profile_alpha,
                           "demographic_alpha": demographic_alpha}.items():  # fmt: skip
            check_positive(key, value)
        self.n_directions = n_directions
        self.alpha = alpha
        self.direction_alpha = direction_alpha
        self.profile_alpha = profile_alpha
        self.demographic_alpha = demographic_alpha

    # ------------------------------------------------------------------ fitting
    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        ratings = dataset.fit_ratings(split)
        design = image_design(dataset)
        self.consensus_ = consensus_scores(design, ratings, self.alpha)
        residual = ratings.score.astype(float) - self.consensus_[ratings.image_idx]
        order = np.argsort(ratings.user_idx, kind="stable")
        users, starts = np.unique(ratings.user_idx[order], return_index=True)
        chunks = np.split(order, starts[1:])

        # metadata dimensions
        columns = metadata_columns(dataset.images)
        names, blocks = [], []
        for column in columns:
            onehot = pd.get_dummies(dataset.images[column].astype("string"))
            names += [f"{column}={level}" for level in onehot.columns]
            blocks.append(onehot.to_numpy(np.float64))
        # visual directions: principal directions of the users' personal ridge weights in feature space
        if self.n_directions and dataset.image_features is not None:
            features = dataset.image_features.astype(np.float64)
            personal = []
            for chunk in chunks:
                x, r = features[ratings.image_idx[chunk]], residual[chunk] - residual[chunk].mean()
                personal.append(x.T @ np.linalg.solve(x @ x.T + self.direction_alpha * np.eye(len(chunk)), r))
            personal = np.array(personal)
            _, _, vt = np.linalg.svd(personal - personal.mean(axis=0), full_matrices=False)
            directions = vt[: self.n_directions].T
            projection = features @ directions
            projection = (projection - projection.mean(axis=0)) / (projection.std(axis=0) + 1e-12)
            names += [f"visual_{j + 1}" for j in range(projection.shape[1])]
            blocks.append(projection)
        if not blocks:
            blocks.append(np.zeros((dataset.n_images, 0)))
        self.dimensions_ = np.hstack(blocks)
        self.dimension_names_ = names

        # first pass: shrunk fits with a flat prior; then the empirical-Bayes priors; then refit everyone
        n_dim = self.dimensions_.shape[1]
        flat_precision = np.full(n_dim + 1, self.profile_alpha)
        flat_precision[0] = 1.0
        first = np.array([self._solve(ratings.image_idx[c], residual[c], np.zeros(n_dim + 1), flat_precision, 1.0)
                          for c in chunks])  # fmt: skip
        self.demo_ = with_intercept(user_design(dataset.users, dataset.fit_ratings(split).user_idx)).astype(
            np.float64
        )
        demo = self.demo_[users]
        gram = demo.T @ demo + self.demographic_alpha * np.eye(demo.shape[1])
        self.demo_map_ = np.linalg.solve(gram, demo.T @ first)
        fitted_resid = np.concatenate(
            [residual[c] - self._design(ratings.image_idx[c]) @ p for c, p in zip(chunks, first, strict=True)]
        )
        self.noise_ = float(np.mean(fitted_resid**2))
        spread = first - demo @ self.demo_map_
        self.prior_precision_ = self.noise_ / np.maximum(np.mean(spread**2, axis=0), 1e-4)
        self.profiles_ = np.tile(self.demo_ @ self.demo_map_, 1)
        self.known_ = np.zeros(dataset.n_users, dtype=bool)
        for user, chunk in zip(users, chunks, strict=True):
            self.profiles_[user] = self._fold(int(user), ratings.image_idx[chunk], ratings.score[chunk])
            self.known_[user] = True
        self.fitted_ = True
        return self

    def _design(self, images: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((len(images), 1)), self.dimensions_[images]])

    def _solve(self, images, residual, prior_mean, precision, noise) -> np.ndarray:
        x = self._design(images)
        lhs = x.T @ x / noise + np.diag(precision)
        return np.linalg.solve(lhs, x.T @ residual / noise + precision * prior_mean)

    def _fold(self, user_idx: int, images: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Profile (bias, affinities) of a user from rated images; the demographic prior when there are none."""
        prior = self.demo_[user_idx] @ self.demo_map_
        images = np.asarray(images, np.int64)
        if len(images) == 0:
            return prior
        residual = np.asarray(scores, np.float64) - self.consensus_[images]
        return self._solve(images, residual, prior, self.prior_precision_ * 1.0, self.noise_) * 1.0

    # ------------------------------------------------------------------ prediction
    def _score(self, profile: np.ndarray, images: np.ndarray) -> np.ndarray:
        return self.consensus_[images] + self._design(images) @ profile

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        self._check_known(user_idx, self.known_)
        return self.consensus_[image_idx] + np.einsum(
            "ij,ij->i", self._design(image_idx), self.profiles_[user_idx]
        )

    def profile_of(self, references: References) -> np.ndarray:
        """The predicted profile (bias, then one affinity per dimension) of a new user from its references."""
        self._check_fitted()
        return self._fold(int(references.user_idx), references.image_idx, references.score)

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        return [
            self._score(self.profile_of(refs), np.asarray(images, np.int64))
            for refs, images in zip(references, image_idx, strict=True)
        ]

    def user_vectors(self) -> np.ndarray:
        """Profiles (float32, n_users x (1 + dimensions)): bias then affinities; demographic prior for others."""
        self._check_fitted()
        return self.profiles_[: len(self.known_)].astype(np.float32)

    def fold_in(self, references: Sequence[References]) -> np.ndarray:
        """Profiles (float32, n x (1 + dimensions)) of new users from their references."""
        self._check_fitted()
        return np.array([self.profile_of(r) for r in references], np.float32).reshape(len(references), -1)

    def explain(self, user: int | References, image_idx: int) -> dict:
        """The profile of ``user`` (a fitted user index or a new user's References) and how it scores one image.

        Returns ``{"score", "consensus", "bias", "profile": {dimension: affinity},
        "contributions": {dimension: affinity * value}}``; consensus + bias + sum(contributions) == score.
        """
        self._check_fitted()
        if isinstance(user, References):
            profile = self.profile_of(user)
        else:
            self._check_known(np.array([int(user)]), self.known_)
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


# ---------------------------------------------------------------------------------------------- CLI
def add_explain_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``recsys explain --user ID --image IMAGE_ID`` to a CLI's subparsers (data flags as elsewhere)."""
    from recsys.cli import add_data_arguments

    parser = subparsers.add_parser("explain", help="a user's preference profile and why it scores an image")
    add_data_arguments(parser)
    parser.add_argument(
        "--user", required=True, help="user id (a training user; others use --shots references)"
    )
    parser.add_argument("--image", required=True, help="image id")
    parser.add_argument(
        "--shots", type=int, default=10, help="references drawn for a user absent from training"
    )
    parser.add_argument("--top", type=int, default=8, help="contributions to print")
    parser.set_defaults(func=cmd_explain)
    return parser


def cmd_explain(args: argparse.Namespace) -> int:
    """Fit the profile model and print a user's profile and the top contributions to one image's score."""
    from recsys.cli import dataset_from_args

    dataset = dataset_from_args(args)
    user, image = dataset.user_index(args.user), dataset.image_index(args.image)
    model = PreferenceProfile().fit(dataset)
    if model.known_[user]:
        target, how = user, "training history"
    else:
        rated = [r for r in dataset.ratings.values() if (r.user_idx == user).any()]
        chosen = np.concatenate([np.flatnonzero(r.user_idx == user) for r in rated[:1]])
        rng = np.random.default_rng(args.seed)
        chosen = rng.permutation(chosen)[: args.shots]
        target = References(user, rated[0].image_idx[chosen], rated[0].score[chosen]) if rated else References(
            user, np.zeros(0, np.int64), np.zeros(0, np.float32))  # fmt: skip
        how = f"{len(target)} reference ratings"
    out = model.explain(target, image)
    print(f"user {args.user} ({how}), image {args.image}: predicted score {out['score']:.3f}")
    print(f"  consensus {out['consensus']:+.3f}   user bias {out['bias']:+.3f}")
    print("  profile (largest affinities):")
    for name, value in sorted(out["profile"].items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        print(f"    {name:32s} {value:+.3f}")
    print("  top contributions to this image:")
    for name, value in sorted(out["contributions"].items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        print(f"    {name:32s} {value:+.3f}")
    return 0
