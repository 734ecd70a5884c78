"""Shared pieces of the classical factor models: a feature-to-factor map for new images, a demographic prior
for new users, and a calibrated fold-in of new users from their reference ratings.

Every factor model here scores ``rating = a + b * (p_u . q_i + o_i + c_u)``: ``q_i`` item vectors, ``o_i`` item
offsets (biases), ``p_u`` user vectors, ``c_u`` a user offset, and a linear calibration ``(a, b)`` to the
rating scale (``a = global mean, b = 1`` for explicit MF). A new user's ``[p, c]`` is a ridge regression of
its reference ratings on the item vectors, shrunk toward a demographic prior (Gaussian prior and noise, so the
per-dimension penalty is ``noise variance / prior variance``, estimated from the fitted users).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from recsys.data.dataset import Dataset, Ratings, References
from recsys.data.encodings import ImageInputs
from recsys.errors import NewImagesNotSupported
from recsys.models.base import Model, append_rows
from recsys.models.linear import LinearMap, linear_map_spec, ridge
from recsys.models.persistence import state_record
from recsys.models.schema import Record

#: the smallest residual variance a fold-in assumes (in squared score units; far below any rating scale's noise)
MIN_NOISE = 1e-6


class ImageMap:
    """Ridge from image design rows to item parameters ([offset, vector...]), for images absent from the fit."""

    def __init__(self, design: np.ndarray | None, alpha: float):
        self.design = design
        self.alpha = alpha
        self.coef = self.intercept = None

    def fit(self, images: np.ndarray, targets: np.ndarray, weight: np.ndarray | None = None) -> ImageMap:
        if self.design is not None:
            self.coef, self.intercept = ridge(self.design[images], targets, self.alpha, weight)
        else:
            self.intercept = np.average(targets.reshape(len(targets), -1), axis=0, weights=weight)
        return self

    def predict(self, images: np.ndarray | None = None) -> np.ndarray:
        """Predicted targets of the given images (all images when None)."""
        if self.design is None:
            raise RuntimeError("no image design")
        design = self.design if images is None else self.design[images]
        return design @ self.coef + self.intercept

    def linear(self) -> LinearMap:
        """The fitted map as fitted state (a copy): it gives the targets of any image's design row."""
        return LinearMap(self.coef.copy(), np.asarray(self.intercept).copy())


def complete_items(
    design: np.ndarray | None,
    fitted: np.ndarray,
    params: np.ndarray,
    alpha: float,
    counts: np.ndarray | None = None,
    blend: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, LinearMap | None]:
    """Item parameters for every image: learned ones where ``fitted``, the feature map's prediction elsewhere.

    ``params`` (n_images, t) hold learned rows for fitted images; with ``blend`` > 0 a fitted row becomes
    ``w * learned + (1 - w) * mapped`` with ``w = counts / (counts + blend)`` (rarely rated images lean on
    their features). Without a design an image absent from the fit gets the mean of the fitted rows (the
    average image: what the map of an empty design predicts). Returns (params (n_images, t), mask (n_images,)
    of the images placed by their own ratings or their design row: fitted ones, or all of them with a design,
    and the feature map, None without a design).
    """
    params = params.copy()
    if design is None:
        return average_image(params, fitted), fitted.copy(), None
    images = np.flatnonzero(fitted)
    image_map = ImageMap(design, alpha).fit(images, params[images])
    missing = np.flatnonzero(~fitted)
    if len(missing):
        params[missing] = image_map.predict(missing)
    if blend > 0 and counts is not None:
        w = (counts[images] / (counts[images] + blend))[:, None]
        params[images] = w * params[images] + (1 - w) * image_map.predict(images)
    return params, np.ones(len(params), dtype=bool), image_map.linear()


def average_image(params: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """``params`` (n_images, ...) with every row outside ``placed`` set to the mean of the placed rows: the
    fallback of an image that has neither training ratings nor a design row (it scores as the average image)."""
    params = params.copy()
    if placed.any() and not placed.all():
        params[~placed] = params[placed].mean(0)
    return params


@state_record
@dataclass
class FoldIn:
    """Calibrated factor scoring and the fold-in of new users (see the module docstring).

    Attributes:
        item_vecs: (n_images, f) item vectors ``q``.
        item_offset: (n_images,) item offsets ``o``.
        a, b: calibration of the raw score to the rating scale.
        prior: (n_users, f + 1) prior ``[p, c]`` of every dataset user (from demographics).
        penalty: (f + 1,) ridge penalty per dimension of ``[p, c]``.
    """

    item_vecs: np.ndarray
    item_offset: np.ndarray
    a: float
    b: float
    prior: np.ndarray
    penalty: np.ndarray

    def user(self, user_idx: int, images: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``[p, c]`` (f + 1,) of a user from its rated images: ridge toward the user's demographic prior."""
        prior = self.prior[user_idx]
        if len(images) == 0:
            return prior.copy()
        x = np.hstack([self.item_vecs[images], np.ones((len(images), 1))])
        y = (np.asarray(scores, np.float64) - self.a) / self.b - self.item_offset[images]
        gram = x.T @ x + np.diag(self.penalty)
        return np.linalg.solve(gram, x.T @ y + self.penalty * prior)

    def score(self, vec: np.ndarray, images: np.ndarray) -> np.ndarray:
        """Ratings of one user ``[p, c]`` on images."""
        return self.a + self.b * (self.item_vecs[images] @ vec[:-1] + vec[-1] + self.item_offset[images])

    def score_pairs(self, vecs: np.ndarray, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        """Ratings of aligned pairs, user rows ``[p, c]`` in ``vecs`` indexed by user_idx."""
        u = vecs[user_idx]
        dot = np.einsum("ij,ij->i", self.item_vecs[image_idx], u[:, :-1])
        return self.a + self.b * (dot + u[:, -1] + self.item_offset[image_idx])


def build_fold_in(
    dataset: Dataset,
    ratings: Ratings,
    item_vecs: np.ndarray,
    item_offset: np.ndarray,
    user_vecs: np.ndarray,
    a: float,
    b: float,
    *,
    user_offset_shrinkage: float,
    demo_alpha: float,
    user_offset: np.ndarray | None = None,
) -> tuple[FoldIn, np.ndarray]:
    """Fitted users' offsets, the demographic prior and the fold-in penalty, from the training ratings.

    ``user_vecs`` (n_users, f) are the fitted user vectors (rows of users absent from ``ratings`` unused);
    ``user_offset`` (n_users,) learned offsets, else the shrunk mean residual of each user.
    Returns the FoldIn and the fitted users' ``[p, c]`` rows (n_users, f + 1).
    """
    raw = (
        np.einsum("ij,ij->i", item_vecs[ratings.image_idx], user_vecs[ratings.user_idx])
        + item_offset[ratings.image_idx]
    )
    resid = (ratings.score.astype(np.float64) - a) / b - raw
    n_users = dataset.n_users
    sums = np.bincount(ratings.user_idx, resid, minlength=n_users)
    counts = np.bincount(ratings.user_idx, minlength=n_users)
    offset = sums / (counts + user_offset_shrinkage) if user_offset is None else user_offset
    vecs = np.hstack([user_vecs, offset[:, None]]).astype(np.float64)
    train_users = np.flatnonzero(counts > 0)
    demo = dataset.user_design(train_users).astype(np.float64)
    prior = np.tile(vecs[train_users].mean(0), (n_users + 1, 1))  # last row: a person not in the dataset
    if demo.shape[1] and len(train_users) > 2:
        coef, intercept = ridge(demo[train_users], vecs[train_users], demo_alpha)
        prior = demo @ coef + intercept
    # Gaussian prior / noise: penalty = noise variance / prior variance per dimension
    noise = float(np.var(resid - offset[ratings.user_idx])) if len(resid) else 1.0
    noise = max(noise, MIN_NOISE)  # scores that are all equal leave no noise: keep the fold-in a ridge
    spread = (
        np.var(vecs[train_users] - prior[train_users], axis=0)
        if len(train_users) > 1
        else np.ones(vecs.shape[1])
    )
    penalty = noise / np.maximum(spread, 1e-6)
    fold = FoldIn(
        item_vecs.astype(np.float64), item_offset.astype(np.float64), float(a), float(b), prior, penalty
    )
    return fold, vecs


def calibrate(raw: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Least-squares ``scores ~ a + b * raw``; the slope is kept positive so the map stays monotonic."""
    raw = np.asarray(raw, np.float64)
    scores = np.asarray(scores, np.float64)
    var = raw.var()
    b = float(np.cov(raw, scores, bias=True)[0, 1] / var) if var > 0 else 1.0
    b = max(b, 1e-3)
    return float(scores.mean() - b * raw.mean()), b


#: the state schema of a fitted ``FoldIn``
FOLD_IN_SPEC = Record(
    "FoldIn",
    item_vecs="float[images, factors]",
    item_offset="float[images]",
    a="float",
    b="float",
    prior="float[users+1, factors+1]",
    penalty="float[factors+1]",
)


class FactorModel(Model):
    """Base of the factor models (mf, als, bpr, lightfm): calibrated factor scoring, factors for images absent
    from the fit through the image design, and the fold-in of new users (see the module docstring).

    A subclass's ``_fit`` sets ``fold_`` (a ``FoldIn``), ``user_vecs_`` (n_users, f + 1: ``[p_u, c_u]``),
    ``scorable_`` (n_images, bool: images placed by their own ratings or their design row) and ``item_map_``,
    the map from an image's item inputs (``_item_inputs``: its design row by default) to its ``[q_i, o_i]``, as
    it gave them to the images absent from the fit (None when there is none: the item side is then per image
    id), usually through ``_calibrate_and_fold``. Every image not placed has the mean item parameters of the
    placed ones (``average_image``): it scores as the user's score of the average image. New images get their
    item parameters from ``item_map_``.
    """

    state_schema: ClassVar[dict[str, Any]] = {
        "scorable_": "bool[images]",
        "item_map_": [linear_map_spec("design", "factors+1"), "None"],
        "fold_": FOLD_IN_SPEC,
        "user_vecs_": "float[users, factors+1]",
    }

    fold_: FoldIn
    item_map_: LinearMap | None

    def _item_inputs(self, inputs: ImageInputs) -> np.ndarray:
        """What ``item_map_`` maps, for some images: their rows of the image design."""
        return inputs.design()

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        if self.item_map_ is None:
            raise NewImagesNotSupported(
                f"{self.name} was fitted on data without image features or metadata: its item factors are per "
                "image id, with no map to carry them to new images"
            )
        params = self.item_map_(self._item_inputs(inputs))
        fold = replace(
            self.fold_,
            item_vecs=append_rows(self.fold_.item_vecs, params[:, :-1]),
            item_offset=append_rows(self.fold_.item_offset, params[:, -1]),
        )
        return {"fold_": fold, "scorable_": append_rows(self.scorable_, np.ones(len(inputs), bool))}

    def _placeable(self, image_idx: np.ndarray) -> np.ndarray:
        return self.scorable_[image_idx]

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return self.fold_.score_pairs(self.user_vecs_, user_idx, image_idx)

    def _fold(self, references: list[References]) -> list[np.ndarray]:
        return [
            self.fold_.user(refs.user_idx, np.asarray(refs.image_idx, np.int64), np.asarray(refs.score))
            for refs in references
        ]

    def _score_folded(self, states: list[np.ndarray], images: list[np.ndarray]) -> list[np.ndarray]:
        return [self.fold_.score(vec, candidates) for vec, candidates in zip(states, images, strict=True)]

    def _taste(self, states: list[np.ndarray]) -> np.ndarray:
        return np.array([vec[:-1] for vec in states]).reshape(len(states), -1)

    def _user_vectors(self) -> np.ndarray:
        return self.user_vecs_[:, :-1]

    @property
    def calibration(self) -> tuple[float, float]:
        """(a, b): rating = a + b * (raw score + user offset)."""
        return self.fold_.a, self.fold_.b

    def _calibrate_and_fold(
        self,
        dataset: Dataset,
        ratings: Ratings,
        split: str,
        user_vecs: np.ndarray,
        item_vecs: np.ndarray,
        item_offset: np.ndarray,
        fitted: np.ndarray,
    ) -> None:
        """Calibrate raw scores to the rating scale and build the fold-in, for models trained on likes.

        Images with learned factors and images given factors by the feature map score on different scales
        (fitted vs shrunk): the first are calibrated on the fit ratings, the second on ``val_seen`` (when it
        holds known users rating only such images), and the mapped ones are rescaled onto the first; so is the
        map itself (``item_map_``, which the caller sets), for new images.
        """
        raw = np.einsum("ij,ij->i", user_vecs[ratings.user_idx], item_vecs[ratings.image_idx])
        a, b = calibrate(raw + item_offset[ratings.image_idx], ratings.score)
        val = self._validation(dataset, split)
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
            if self.item_map_ is not None:
                shift = np.zeros(item_vecs.shape[1] + 1)
                shift[-1] = (a_map - a) / b
                self.item_map_ = LinearMap(
                    self.item_map_.coef * (b_map / b), self.item_map_.intercept * (b_map / b) + shift
                )
        self.fold_, self.user_vecs_ = build_fold_in(
            dataset,
            ratings,
            item_vecs,
            item_offset,
            user_vecs,
            a,
            b,
            user_offset_shrinkage=self.offset_shrinkage,
            demo_alpha=self.demo_alpha,
        )
