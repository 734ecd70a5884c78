"""Baseline predictor: global mean plus regularised user and item biases, fitted by alternating least squares.

``score = mu + b_u + b_i`` (Koren's baseline estimates). Each ALS step is exact for one side, images first:
``b_i = (sum_u (r_ui - mu - b_u) + item_reg * prior_i) / (n_i + item_reg)``, then likewise ``b_u`` with
``user_reg``. The priors come from side information and are refitted every epoch: an image's is a ridge map
from its design row (features + metadata one-hots) to the fitted item biases, so images absent from the fit
get a bias from their features (and so do images the model was not fitted with: ``with_new_images``); a user's
is a ridge map from demographics, so a new user with no references
gets the bias of people like them. Without side information the priors are 0 (plain baseline estimates, and
an image absent from the fit scores ``mu + b_u``). New users: ``b_u`` from their references by the same
formula. Predictions are clipped to the dataset's score range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from recsys.data.dataset import Dataset, Ratings, References
from recsys.data.encodings import ImageInputs
from recsys.errors import NewImagesNotSupported
from recsys.models.base import Model, append_rows
from recsys.models.factor import ImageMap
from recsys.models.linear import LinearMap, linear_map_spec, ridge
from recsys.models.params import Hyperparameters, at_least_one, positive
from recsys.models.persistence import state_record
from recsys.models.schema import Record


def clip_scores(scores: np.ndarray, score_range: np.ndarray) -> np.ndarray:
    """Predictions clipped to the dataset's range of valid scores (``score_range``: [low, high]); a
    prediction outside it is never closer to a rating than the bound."""
    return np.clip(scores, score_range[0], score_range[1])


@state_record
@dataclass
class Baseline:
    """Fitted baseline estimates ``mu + b_u + b_i`` and the priors that new users and images fall back on.

    Attributes:
        mu: global mean.
        user_bias: (n_users,) ``b_u`` (0 for users absent from the fit).
        item_bias: (n_images,) ``b_i`` (the image prior for images absent from the fit).
        user_prior: (n_users + 1,) prior ``b_u`` of every dataset user; the last row is a person not in it.
        user_reg: shrinkage of a user's bias toward its prior, in pseudo-ratings.
        item_map: the image design -> image bias prior map (None without a design), which gave the biases of the
            images absent from the fit and gives those of new images.
    """

    mu: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_prior: np.ndarray
    user_reg: float
    item_map: LinearMap | None = None

    def with_images(self, name: str, inputs: ImageInputs) -> Baseline:
        """A copy whose ``item_bias`` also holds the biases of new images, from ``item_map``."""
        if self.item_map is None:
            raise NewImagesNotSupported(
                f"{name} was fitted on data without image features or metadata: its image biases are per image id"
            )
        return replace(self, item_bias=append_rows(self.item_bias, self.item_map.scores(inputs.design())))

    def fold(self, user_idx: int, images: np.ndarray, scores: np.ndarray) -> float:
        """``b_u`` of a user from its rated images, shrunk toward its prior (the prior if there are none)."""
        residual = np.asarray(scores, np.float64) - self.mu - self.item_bias[images]
        return float(
            (residual.sum() + self.user_reg * self.user_prior[user_idx]) / (len(images) + self.user_reg)
        )

    def pairs(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        """Baseline estimates of aligned pairs."""
        return self.mu + self.user_bias[user_idx] + self.item_bias[image_idx]


def fit_baseline(
    dataset: Dataset,
    ratings: Ratings,
    *,
    user_reg: float,
    item_reg: float,
    epochs: int,
    feature_alpha: float,
    demo_alpha: float,
) -> Baseline:
    """Baseline estimates by ALS, priors from the dataset's side information (see the module docstring)."""
    score = ratings.score.astype(np.float64)
    users, images = ratings.user_idx, ratings.image_idx
    mu = float(score.mean())
    n_u = np.bincount(users, minlength=dataset.n_users)
    n_i = np.bincount(images, minlength=dataset.n_images)
    fitted_users, fitted_images = np.flatnonzero(n_u), np.flatnonzero(n_i)
    design = dataset.image_design(required=False)
    image_map = ImageMap(design, feature_alpha)
    demo = dataset.user_design(fitted_users).astype(np.float64)
    use_demo = demo.shape[1] > 0 and len(fitted_users) > 2
    user_prior = np.zeros(dataset.n_users + 1)  # last row: a person not in the dataset
    item_prior = np.zeros(dataset.n_images)
    user_bias, item_bias = np.zeros(dataset.n_users), np.zeros(dataset.n_images)
    for _ in range(epochs):  # images first, as in Koren's baseline estimates
        residual = np.bincount(images, score - mu - user_bias[users], minlength=dataset.n_images)
        item_bias = (residual + item_reg * item_prior) / (n_i + item_reg)
        if design is not None:
            item_prior = image_map.fit(fitted_images, item_bias[fitted_images]).predict().ravel()
            item_bias[n_i == 0] = item_prior[n_i == 0]
        residual = np.bincount(users, score - mu - item_bias[images], minlength=dataset.n_users)
        user_bias = (residual + user_reg * user_prior[:-1]) / (n_u + user_reg)
        if use_demo:
            coef, intercept = ridge(demo[fitted_users], user_bias[fitted_users], demo_alpha)
            user_prior = (demo @ coef + intercept).ravel()
    item_map = image_map.linear() if design is not None else None
    return Baseline(mu, user_bias, item_bias, user_prior, float(user_reg), item_map)


def placed_images(dataset: Dataset, ratings: Ratings) -> np.ndarray:
    """(n_images,) bool: the images a model of baseline estimates places, those with a training rating, or every
    image when the dataset has an image design (an image absent from the fit then gets its bias from it). The
    others score with the prior bias 0, as the average image (``Model.placeable``)."""
    if dataset.image_design(required=False) is not None:
        return np.ones(dataset.n_images, dtype=bool)
    placed = np.zeros(dataset.n_images, dtype=bool)
    placed[ratings.image_idx] = True
    return placed


def fit_model_baseline(dataset: Dataset, ratings: Ratings, params: BiasParams) -> Baseline:
    """``fit_baseline`` with the hyperparameters of ``params`` (a ``BiasParams``, or a model that has them)."""
    return fit_baseline(
        dataset,
        ratings,
        user_reg=params.user_reg,
        item_reg=params.item_reg,
        epochs=params.epochs,
        feature_alpha=params.feature_alpha,
        demo_alpha=params.demo_alpha,
    )


#: the state schema of a fitted ``Baseline``
BASELINE_SPEC = Record(
    "Baseline",
    mu="float",
    user_bias="float[users]",
    item_bias="float[images]",
    user_prior="float[users+1]",
    user_reg="float",
    item_map=[linear_map_spec("design", "1"), "None"],
)


class BiasParams(Hyperparameters):
    """The baseline estimates' hyperparameters (user_reg, item_reg and epochs default to Surprise's
    BaselineOnly's)."""

    user_reg: float = positive(15.0, "shrinkage of a user's bias toward its prior, in pseudo-ratings")
    item_reg: float = positive(10.0, "shrinkage of an image's bias toward its prior, in pseudo-ratings")
    epochs: int = at_least_one(10, "ALS epochs")
    feature_alpha: float = positive(3.0, "ridge penalty of the image-design -> image bias prior map")
    demo_alpha: float = positive(10.0, "ridge penalty of the demographics -> user bias prior map")


class Biases(Model):
    """``mu + b_u + b_i`` by alternating least squares (see the module docstring)."""

    state_schema: ClassVar[dict[str, Any]] = {
        "score_range_": "float~[2]",
        "baseline_": BASELINE_SPEC,
        "placed_": "bool[images]",
    }

    name = "biases"
    Params = BiasParams

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        self.score_range_ = np.asarray(dataset.score_range, np.float64)
        self.baseline_ = fit_model_baseline(dataset, ratings, self)
        self.placed_ = placed_images(dataset, ratings)

    def _placeable(self, image_idx: np.ndarray) -> np.ndarray:
        return self.placed_[image_idx]

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return clip_scores(self.baseline_.pairs(user_idx, image_idx), self.score_range_)

    def _fold(self, references: list[References]) -> np.ndarray:
        """``b_u`` (n,) of new users from their references."""
        return np.array(
            [self.baseline_.fold(r.user_idx, np.asarray(r.image_idx, np.int64), r.score) for r in references]
        )

    def _score_folded(self, states: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray]:
        base = self.baseline_
        return [
            clip_scores(base.mu + bias + base.item_bias[i], self.score_range_)
            for bias, i in zip(states, images, strict=True)
        ]

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        return {
            "baseline_": self.baseline_.with_images(self.name, inputs),
            "placed_": append_rows(self.placed_, np.ones(len(inputs), bool)),
        }
